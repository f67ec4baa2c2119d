"""Stand-ins shared by the integration tests."""

import pytest
from aiohttp import web


@pytest.fixture
async def pushgateway():
    """A stand-in Prometheus Pushgateway: the text each push sent, by its path."""
    pushed: dict[str, str] = {}

    async def push(request: web.Request) -> web.Response:
        pushed[request.path] = await request.text()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/metrics/{tail:.*}", push)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield pushed, f"127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()
