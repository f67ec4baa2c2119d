"""What one connection may hold at the public port: a slow request head is cut off, an idle keep-alive is
closed, and past the cap new connections are refused, while genuine webhooks are answered promptly."""

from __future__ import annotations

import asyncio
import time

import pytest
from gateway.web.app import create_app
from gateway.web.server import ConnectionLimits

from tests.integration.test_gateway_fuzz import raw_post
from tests.integration.test_gateway_http import FakeBilling, served, settings, stripe_delivery

HEAD_TIMEOUT, KEEPALIVE = 1.0, 2.0


@pytest.fixture
async def gateway():
    billing = FakeBilling()
    client = served(create_app(settings(), billing=billing),
                    ConnectionLimits(header_timeout_seconds=HEAD_TIMEOUT, keepalive_timeout_seconds=KEEPALIVE,
                                     max_connections=400))
    await client.start_server()
    yield client, billing
    await client.close()


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sent until it closed the connection; fails if it is still open after `within`."""
    async with asyncio.timeout(within):
        return await reader.read()


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer on a kept-alive connection: its head (returned) and its body."""
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
    return head


async def _genuine_webhook(port: int) -> float:
    delivery = stripe_delivery()
    started = time.monotonic()
    headers = [(k.encode(), v.encode()) for k, v in delivery.headers.items()]
    status, _ = await raw_post(port, "/webhooks/stripe", headers, delivery.body)
    assert status == 200
    return time.monotonic() - started


async def test_slow_heads_and_idle_keepalives_are_closed_while_webhooks_are_answered(gateway):
    client, billing = gateway
    port = client.port
    slow, idle = [], []
    for _ in range(200):  # slowloris: a request head that never completes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n")
        slow.append((reader, writer))
    for _ in range(100):  # one request answered, then the connection kept open and silent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        await _read_answer(reader)
        idle.append((reader, writer))

    async def trickle():  # the slow clients keep sending a header byte now and then
        for _ in range(6):
            await asyncio.sleep(0.25)
            for _, writer in slow:
                if not writer.is_closing():
                    writer.write(b"X")

    trickling = asyncio.create_task(trickle())
    # Genuine deliveries, with 300 hogs open, are answered as promptly as ever.
    latencies = await asyncio.gather(*(_genuine_webhook(port) for _ in range(20)))
    assert len(billing.received) == 20
    assert max(latencies) < HEAD_TIMEOUT  # answered before any hog was even cut off

    # Every slow head is answered 408 and closed, trickling or not; every idle connection is closed.
    slow_answers = await asyncio.gather(*(_closed_by_server(r, HEAD_TIMEOUT + 5) for r, _ in slow))
    assert all(a.startswith(b"HTTP/1.1 408 ") and b'"header_timeout"' in a for a in slow_answers)
    idle_answers = await asyncio.gather(*(_closed_by_server(r, KEEPALIVE + 5) for r, _ in idle))
    assert idle_answers == [b""] * len(idle)  # closed, with nothing more to say
    await trickling
    for _, writer in slow + idle:
        writer.close()


async def test_a_keepalive_connection_gets_a_fresh_head_timeout_for_each_request(gateway):
    client, _ = gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        for _ in range(3):  # each request well within the head timeout, the whole longer than it
            await asyncio.sleep(HEAD_TIMEOUT / 2)
            writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await _read_answer(reader)
            assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def test_past_the_connection_cap_new_connections_are_refused_and_admitted_ones_still_served():
    billing = FakeBilling()
    client = served(create_app(settings(), billing=billing),
                    ConnectionLimits(header_timeout_seconds=30, keepalive_timeout_seconds=30, max_connections=50))
    await client.start_server()
    held = []
    try:
        for _ in range(49):
            held.append(await asyncio.open_connection("127.0.0.1", client.port))
        # The 50th connection is admitted: it sends a webhook on a connection opened now.
        delivery = stripe_delivery()
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        refused = [await asyncio.open_connection("127.0.0.1", client.port) for _ in range(20)]
        answers = await asyncio.gather(*(_closed_by_server(r, 5) for r, _ in refused))
        assert all(a.startswith(b"HTTP/1.1 503 ") and b'"over_capacity"' in a for a in answers)
        request = [b"POST /webhooks/stripe HTTP/1.1", b"Host: x",
                   b"Content-Length: " + str(len(delivery.body)).encode(),
                   *(k.encode() + b": " + v.encode() for k, v in delivery.headers.items())]
        writer.write(b"\r\n".join(request) + b"\r\n\r\n" + delivery.body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert [e.event_id for e in billing.received] == [delivery.event_id]
        writer.close()
        for _, w in refused:
            w.close()
    finally:
        for _, w in held:
            w.close()
        await client.close()
