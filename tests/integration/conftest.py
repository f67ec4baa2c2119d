"""Stand-ins shared by the integration tests."""

import pytest
from aiohttp import web


@pytest.fixture
async def serve():
    """Serves an aiohttp app on a free local port for the test (a stand-in for a provider's API);
    `await serve(app)` gives its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def pushgateway(serve):
    """A stand-in Prometheus Pushgateway: the text each push sent, by its path."""
    pushed: dict[str, str] = {}

    async def push(request: web.Request) -> web.Response:
        pushed[request.path] = await request.text()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/metrics/{tail:.*}", push)
    base = await serve(app)
    return pushed, base.removeprefix("http://")
