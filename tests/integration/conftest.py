"""Stand-ins and servers shared by the integration tests."""

import grpc
import pytest
from aiohttp import web
from billing.adapters.postgres import PostgresEventStore, create_pool
from billing.adapters.reader import PostgresBillingReader
from billing.api.metrics import record_ingest
from billing.api.servicer import BillingServicer
from billing.domain.ingest import IngestEvents
from billing.domain.internal_api import InternalApi
from boxcost.billing.v1 import billing_pb2_grpc
from servicekit.grpcserve import new_server


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


@pytest.fixture
async def billing_server(database_url):
    """Billing's API served on a local port: its address, and its ingest use case."""
    pool = await create_pool(database_url, min_size=1, max_size=5)
    ingest = IngestEvents(PostgresEventStore(pool), on_applied=record_ingest)  # as billing's main wires it
    server = new_server(None)  # with the interceptors of production (plaintext: no policy)
    billing_pb2_grpc.add_BillingServiceServicer_to_server(
        BillingServicer(ingest, InternalApi.wired(PostgresBillingReader(pool), ingest)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", ingest
    await server.stop(0)
    await pool.close()


@pytest.fixture
async def billing_channel(billing_server):
    """A channel to billing, and its ingest use case."""
    addr, ingest = billing_server
    channel = grpc.aio.insecure_channel(addr)
    yield channel, ingest
    await channel.close()


@pytest.fixture
def billing(billing_channel):
    channel, ingest = billing_channel
    return billing_pb2_grpc.BillingServiceStub(channel), ingest
