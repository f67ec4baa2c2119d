"""Random requests at both webhook endpoints: never a 5xx, never anything handed to billing unless
genuinely signed and well-formed."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from gateway.adapters.billing_client import _to_pb
from gateway.web.app import create_app
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from servicekit.grpcserve import nul_field
from trigger.delivery import razorpay_header, sign, stripe_header
from trigger.events import RazorpayScenario, StripeScenario

from tests.integration.test_gateway_http import RAZORPAY_SECRET, STRIPE_SECRET, FakeBilling, served
from tests.integration.test_gateway_http import settings as gateway_settings

header_names = st.sampled_from(["Stripe-Signature", "X-Razorpay-Signature", "X-Razorpay-Event-Id",
                                "Content-Type", "Content-Length", "X-Forwarded-For", "X-Request-Id"])
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(st.binary(max_size=2000), json_values.map(lambda v: json.dumps(v).encode()),
                   st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 5000)))


@pytest.fixture
async def client_and_billing():
    billing = FakeBilling()
    client = served(create_app(gateway_settings(), billing=billing))
    await client.start_server()
    yield client, billing
    await client.close()


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(provider=st.sampled_from(["stripe", "razorpay"]), body=bodies,
       headers=st.dictionaries(header_names, header_values, max_size=5))
async def test_random_unsigned_requests_get_a_4xx_and_reach_nothing(client_and_billing, provider, body, headers):
    client, billing = client_and_billing
    headers.pop("Content-Length", None)
    response = await client.post(f"/webhooks/{provider}", data=body, headers=headers)
    assert 400 <= response.status < 500
    assert "error" in await response.json()
    assert billing.received == []


@FUZZ
@given(provider=st.sampled_from(["stripe", "razorpay"]), body=bodies, event_id=header_values)
async def test_random_signed_bodies_never_cause_a_5xx(client_and_billing, provider, body, event_id):
    client, billing = client_and_billing
    if provider == "stripe":
        headers = {"Stripe-Signature": stripe_header(body, STRIPE_SECRET)}
    else:
        headers = {"X-Razorpay-Signature": razorpay_header(body, RAZORPAY_SECRET), "X-Razorpay-Event-Id": event_id}
    before = len(billing.received)
    response = await client.post(f"/webhooks/{provider}", data=body, headers=headers)
    assert response.status in (200, 400)
    assert len(billing.received) == before + (response.status == 200)


# Every header the gateway reads, with values across the whole byte range, sent on a raw socket as an
# attacker would (an HTTP client library refuses most of these bytes before they leave).
READ_HEADERS = [b"Stripe-Signature", b"X-Razorpay-Signature", b"X-Razorpay-Event-Id", b"X-Forwarded-For",
                b"Content-Type", b"Content-Length", b"Host", b"X-Request-Id", b"Content-Encoding", b"User-Agent"]
any_bytes = st.binary(max_size=80)


async def raw_post(port: int, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    """One request on a new connection; the status and body of the first answer."""
    names = {name.lower() for name, _ in headers}
    head = [b"POST " + path.encode() + b" HTTP/1.1"]
    if b"host" not in names:
        head.append(b"Host: 127.0.0.1")
    if b"content-length" not in names:
        head.append(b"Content-Length: " + str(len(body)).encode())
    head += [name + b": " + value for name, value in headers]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            answer_head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", answer_head)[1])
            answer = await reader.readexactly(length)
    finally:
        writer.close()
    return int(status_line.split()[1]), answer


def _with(delivery_headers: dict[str, str], name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    kept = [(k.encode(), v.encode()) for k, v in delivery_headers.items() if k.lower() != name.decode().lower()]
    return [*kept, (name, value)]


@FUZZ
@given(provider=st.sampled_from(["stripe", "razorpay"]), name=st.sampled_from(READ_HEADERS), value=any_bytes)
@example(provider="stripe", name=b"Stripe-Signature", value="t=²,v1=ab".encode())
@example(provider="stripe", name=b"Stripe-Signature", value="t=1700000000,v1=é".encode())
@example(provider="razorpay", name=b"X-Razorpay-Signature", value="ñ".encode())
@example(provider="razorpay", name=b"X-Razorpay-Event-Id", value=b"\xff\xfe")
@example(provider="stripe", name=b"Host", value=b"\x00\x80[")
@example(provider="razorpay", name=b"User-Agent", value=b"Razorpay-Webhook/v1 \xff\xfe")
@example(provider="stripe", name=b"Content-Type", value=b"application/json; x=\x80")
async def test_any_bytes_in_a_header_the_gateway_reads_get_a_4xx_or_2xx_and_nothing_unauthenticated_stored(
        client_and_billing, provider, name, value):
    client, billing = client_and_billing
    delivery = sign(provider, (StripeScenario() if provider == "stripe" else RazorpayScenario()).event(
        "payment_intent.succeeded" if provider == "stripe" else "payment.captured"),
        STRIPE_SECRET if provider == "stripe" else RAZORPAY_SECRET)
    before = len(billing.received)
    status, answer = await raw_post(client.port, f"/webhooks/{provider}", _with(delivery.headers, name, value),
                                    delivery.body)
    assert 200 <= status < 300 or 400 <= status < 500, (status, answer)
    if status >= 400:
        assert "error" in json.loads(answer)
        assert len(billing.received) == before
    else:  # only a genuinely signed delivery, with what it was signed over intact
        assert len(billing.received) == before + 1
        assert billing.received[-1].payload == delivery.body
        # and billing can take it: it crosses gRPC and has nothing PostgreSQL cannot store
        wire = _to_pb(billing.received[-1])
        assert wire.SerializeToString() and nul_field(wire) is None


@pytest.mark.parametrize("header", [("Stripe-Signature", "t=²,v1=00".encode()),
                                    ("Stripe-Signature", "t=1,v1=é".encode())])
async def test_an_unreadable_signature_header_counts_as_a_failed_authentication(header):
    billing = FakeBilling()
    client = served(create_app(gateway_settings(auth_failures_per_minute=2), billing=billing))
    await client.start_server()
    try:
        delivery = sign("stripe", StripeScenario().event("payment_intent.succeeded"), STRIPE_SECRET)
        name, value = header
        statuses = [(await raw_post(client.port, "/webhooks/stripe", _with(delivery.headers, name.encode(), value),
                                    delivery.body))[0] for _ in range(3)]
        assert statuses == [400, 400, 429]
        assert billing.received == []
    finally:
        await client.close()


HOSTILE = {
    "content-length and chunked at once": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                                          b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /livez HTTP/1.1\r\n\r\n",
    "two content-lengths": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "negative content-length": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "bad chunk size": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunked body over the limit": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   + (b"10000\r\n" + b"a" * 65536 + b"\r\n") * 2 + b"0\r\n\r\n",
    "200 header lines": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n"
                        + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"Content-Length: 0\r\n\r\n",
    "a 20 KB header": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "a 20 KB path": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "a TLS hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 50 + b"\r\n\r\n",
    "NUL in the path": b"GET /live\x00z HTTP/1.1\r\nHost: x\r\n\r\n",
    "an absolute URI": b"POST http://evil.example/webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "CONNECT": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    "a bad method token": b"P@ST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n\r\n",
    "an unknown expectation": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nExpect: bananas\r\nContent-Length: 2\r\n\r\n{}",
    "the HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "a folded header": b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=1,\r\n v1=00\r\n"
                      b"Content-Length: 2\r\n\r\n{}",
    "bare line feeds": b"POST /webhooks/stripe HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}",
}


async def raw_exchange(port: int, raw: bytes) -> bytes:
    """Send `raw` on a new connection; what came back until the server closed it or fell silent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    received = b""
    try:
        async with asyncio.timeout(1):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        pass  # kept open for more: what came is the answer
    finally:
        writer.close()
    return received


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_requests_get_a_short_json_4xx_and_reach_nothing(client_and_billing, name):
    client, billing = client_and_billing
    answer = await raw_exchange(client.port, HOSTILE[name])
    status_line, _, rest = answer.partition(b"\r\n")
    status = int(status_line.split()[1])
    assert 400 <= status < 500, answer[:200]
    body = rest.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.")[0]
    assert "error" in json.loads(body)
    assert billing.received == []


async def test_expect_continue_invites_only_a_body_the_gateway_would_take(client_and_billing):
    client, billing = client_and_billing
    too_big = await raw_exchange(client.port, b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n"
                                              b"Expect: 100-continue\r\nContent-Length: 99999999\r\n\r\n")
    assert too_big.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in too_big
    delivery = sign("stripe", StripeScenario().event("payment_intent.succeeded"), STRIPE_SECRET)
    head = b"\r\n".join([b"POST /webhooks/stripe HTTP/1.1", b"Host: x", b"Expect: 100-continue",
                         b"Content-Length: " + str(len(delivery.body)).encode(),
                         *(k.encode() + b": " + v.encode() for k, v in delivery.headers.items())]) + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(head)
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(delivery.body)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
    assert [e.event_id for e in billing.received] == [delivery.event_id]
