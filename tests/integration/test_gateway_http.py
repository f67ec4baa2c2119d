"""The gateway's HTTP contract, with a fake billing behind it: precise 4xx for bad input, nothing forwarded."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
from unittest import mock

import pytest
from aiohttp.streams import StreamReader
from prometheus_client import REGISTRY
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, make_mocked_request
from yarl import URL
from gateway.adapters.billing_client import BatchingBillingClient, open_channel
from gateway.config import Settings
from gateway.domain.receive import AuthenticatedEvent, BillingUnavailable, ProcessingResult
from gateway.web.app import _read_body, _ServerLog, connection_options, create_app
from gateway.web.server import ConnectionLimits, GuardedSite
from servicekit.env import Secret
from servicekit.tls import PLAINTEXT
from trigger.delivery import sign
from trigger.events import RazorpayScenario, StripeScenario

from tests.fakes import RecordingBilling, serving_billing
from tests.support import wait_for

STRIPE_SECRET, RAZORPAY_SECRET = "whsec_gw_test", "rzp_gw_test"
GZIP_BOMB = gzip.compress(b"0" * (20 * 1024 * 1024))


class FakeBilling:
    def __init__(self) -> None:
        self.received: list[AuthenticatedEvent] = []
        self.down = False
        self.health_checks = 0

    async def ingest(self, event: AuthenticatedEvent) -> ProcessingResult:
        if self.down:
            raise BillingUnavailable("UNAVAILABLE")
        self.received.append(event)
        return ProcessingResult("processed", transaction_ids=("11111111-1111-1111-1111-111111111111",))

    async def is_serving(self) -> bool:
        self.health_checks += 1
        await asyncio.sleep(0.05)  # a round trip to billing, so that concurrent probes overlap it
        return not self.down


def settings(**overrides) -> Settings:
    base = dict(port=0, host="127.0.0.1", billing_addr="unused:1", grpc_tls=PLAINTEXT,
                stripe_webhook_secrets=(Secret("whsec_old"), Secret(STRIPE_SECRET)),
                razorpay_webhook_secrets=(Secret(RAZORPAY_SECRET),), tolerance_seconds=300,
                max_body_bytes=64 * 1024, billing_timeout_seconds=1.0, shutdown_grace_seconds=1.0,
                log_level="INFO", health_cache_seconds=0.0)
    return Settings(**{**base, **overrides})


@pytest.fixture
def billing() -> FakeBilling:
    return FakeBilling()


class GatewayTestServer(BaseTestServer):
    """The app served as the gateway serves it (its own site and connection limits), on a free port."""

    def __init__(self, app: web.Application, limits: ConnectionLimits) -> None:
        super().__init__(host="127.0.0.1")
        self.app = app
        self._limits = limits
        self._base: URL | None = None

    async def start_server(self, loop=None, **kwargs) -> None:
        if self.runner:
            return
        self.runner = web.AppRunner(self.app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = GuardedSite(self.runner, self.host, 0, self._limits, connection_options())
        await site.start()
        self.port = site.port
        self.scheme = "http"
        self._base = URL(f"http://{self.host}:{self.port}")

    def make_url(self, path) -> URL:
        assert self._base is not None
        return self._base.join(URL(path))

    async def _make_runner(self, **kwargs):
        raise NotImplementedError("start_server makes the runner")


def served(app, limits: ConnectionLimits = ConnectionLimits()) -> TestClient:
    return TestClient(GatewayTestServer(app, limits))


@pytest.fixture
async def client(billing):
    client = served(create_app(settings(), billing=billing))
    await client.start_server()
    yield client
    await client.close()


def stripe_delivery(**kwargs):
    return sign("stripe", StripeScenario().event("payment_intent.succeeded"), STRIPE_SECRET, **kwargs)


async def post(client, delivery, headers=None, body=None):
    return await client.post(f"/webhooks/{delivery.provider}", data=delivery.body if body is None else body,
                             headers=delivery.headers if headers is None else headers)


def _webhooks_counted(provider: str, result: str) -> float:
    return REGISTRY.get_sample_value("webhook_requests_total", {"provider": provider, "result": result}) or 0.0


async def test_signed_stripe_event_is_acknowledged_with_billing_result(client, billing):
    d = stripe_delivery()
    r = await post(client, d)
    assert r.status == 200
    assert await r.json() == {
        "received": True, "event_id": d.event_id, "event_type": "payment_intent.succeeded",
        "processing_result": {"status": "processed", "subscription_ids": [],
                              "transaction_ids": ["11111111-1111-1111-1111-111111111111"]}}
    assert [e.event_id for e in billing.received] == [d.event_id]
    assert billing.received[0].payload == d.body  # raw bytes, as signed


async def test_signed_razorpay_event_uses_header_event_id(client, billing):
    d = sign("razorpay", RazorpayScenario().event("payment.captured"), RAZORPAY_SECRET, event_id="evt_hdr_1")
    r = await post(client, d)
    assert r.status == 200 and (await r.json())["event_id"] == "evt_hdr_1"
    assert billing.received[0].event_type == "payment.captured"


def _without(headers, name):
    return {k: v for k, v in headers.items() if k != name}


@pytest.mark.parametrize(
    ("case", "code"),
    [("missing_signature", "invalid_signature"), ("garbled_signature", "invalid_signature"),
     ("wrong_secret", "invalid_signature"), ("stale", "invalid_signature"), ("future", "invalid_signature"),
     ("tampered_body", "invalid_signature"), ("not_json", "invalid_event"), ("wrong_types", "invalid_event")],
)
async def test_bad_stripe_requests_get_400_and_reach_nothing(client, billing, case, code):
    d = stripe_delivery(age_seconds={"stale": 301, "future": -301}.get(case, 0))
    headers, body = d.headers, d.body
    if case == "missing_signature":
        headers = _without(headers, "Stripe-Signature")
    elif case == "garbled_signature":
        headers = {**headers, "Stripe-Signature": "t=abc;;v1"}
    elif case == "wrong_secret":
        headers = sign("stripe", json.loads(body), "whsec_wrong").headers
    elif case == "tampered_body":
        body = body.replace(b"4999", b"1")
    elif case == "not_json":
        d = sign("stripe", b"amount=4999", STRIPE_SECRET)
        headers, body = d.headers, d.body
    elif case == "wrong_types":
        d = sign("stripe", b'{"id": 1, "type": "x", "created": 1, "data": {"object": {}}}', STRIPE_SECRET)
        headers, body = d.headers, d.body
    r = await client.post("/webhooks/stripe", data=body, headers=headers)
    assert r.status == 400
    assert (await r.json())["error"]["code"] == code
    assert billing.received == []


async def test_bad_razorpay_requests_get_400(client, billing):
    d = sign("razorpay", RazorpayScenario().event("payment.captured"), RAZORPAY_SECRET)
    for headers in (_without(d.headers, "X-Razorpay-Signature"), _without(d.headers, "X-Razorpay-Event-Id"),
                    {**d.headers, "X-Razorpay-Signature": "0" * 64}):
        r = await post(client, d, headers=headers)
        assert r.status == 400, headers
        assert (await r.json())["error"]["code"] in {"invalid_signature", "invalid_event"}
    assert billing.received == []


async def test_body_over_the_limit_gets_413(client, billing):
    big = StripeScenario().event("payment_intent.succeeded")
    big["data"]["object"]["description"] = "x" * 70_000
    r = await post(client, sign("stripe", big, STRIPE_SECRET))
    assert r.status == 413 and (await r.json())["error"]["code"] == "body_too_large"
    assert billing.received == []


async def _answer_to_partial_body(port: int, head: bytes, body_part: bytes) -> bytes:
    """Send a request's head and only part of its body; the server's whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body_part)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        length = int(next(line.split(b":")[1] for line in answer.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        return answer + await asyncio.wait_for(reader.readexactly(length), timeout=10)
    finally:
        writer.close()


async def test_a_body_that_never_finishes_arriving_gets_408_and_the_connection_is_not_kept(billing):
    client = served(create_app(settings(body_timeout_seconds=0.2), billing=billing))
    await client.start_server()
    timed_out_before = _webhooks_counted("stripe", "body_timeout")
    try:
        d = stripe_delivery()
        head = (f"POST /webhooks/stripe HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                f"Stripe-Signature: {d.headers['Stripe-Signature']}\r\nContent-Length: {len(d.body)}\r\n\r\n")
        answer = await _answer_to_partial_body(client.port, head.encode(), d.body[:20])
    finally:
        await client.close()
    head_lines, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_lines.split(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert b"connection: close" in [line.lower() for line in header_lines]
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert billing.received == []
    assert _webhooks_counted("stripe", "body_timeout") == timed_out_before + 1


async def _answer_to_raw_bytes(port: int, data: bytes) -> bytes:
    """Send bytes that need not be HTTP; the server's whole answer, up to its closing the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


@pytest.mark.parametrize(("request_bytes", "error", "reason"), [
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: gateway\r\nStripe-Signature t=1,v1=5257a869\r\n\r\n",
     "BadHttpMessage", "Invalid header token"),
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: gateway\r\nContent-Length: 12ab\r\n\r\n",
     "BadHttpMessage", "Invalid character in Content-Length"),
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: gateway\r\nX-Filler: " + b"v1=5257a869" * 800 + b"\r\n\r\n",
     "LineTooLong", "Got more than 8190 bytes when reading"),
])
async def test_a_request_that_is_not_valid_http_gets_400_in_json_and_one_info_line_without_what_was_sent(
    client, billing, caplog, request_bytes, error, reason
):
    # A scanner's garbage is the sender's fault: logged as a refusal, not as an error of ours with a
    # traceback, and nothing it sent (here a signature-like value) is written to the log or echoed back.
    with caplog.at_level("INFO", logger="aiohttp.server"):
        answer = await _answer_to_raw_bytes(client.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].split(b" ", 1)[1] == b"400 Bad Request"
    assert b"content-type: application/json" in head.lower().split(b"\r\n")
    assert json.loads(body) == {"error": {"code": "malformed_http", "message": reason}}
    [record] = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert (record.levelname, record.getMessage(), record.exc_info) == ("INFO", "HTTP request refused", None)
    assert record.fields == {"code": "malformed_http", "status": 400, "error": error, "reason": reason,
                             "client": "127.0.0.1"}
    assert billing.received == []


def test_the_server_log_keeps_the_traceback_of_anything_but_a_request_it_could_not_parse(caplog):
    server_log = _ServerLog(logging.getLogger("aiohttp.server"))
    with caplog.at_level("INFO", logger="aiohttp.server"):
        server_log.exception("Error handling request from %s", "10.0.0.9", exc_info=RuntimeError("a defect"))
    [record] = caplog.records
    assert record.levelname == "ERROR" and isinstance(record.exc_info[1], RuntimeError)
    assert record.getMessage() == "Error handling request from 10.0.0.9"


async def test_a_body_still_arriving_when_reading_starts_is_read_whole():
    app = create_app(settings(body_timeout_seconds=5), billing=FakeBilling())
    stream = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    request = make_mocked_request("POST", "/webhooks/stripe", headers={"Content-Length": "10"}, payload=stream,
                                  app=app)
    stream.feed_data(b"01234")
    reading = asyncio.ensure_future(_read_body(request))
    done, _ = await asyncio.wait({reading}, timeout=0.1)
    assert not done  # the read waits for the rest
    stream.feed_data(b"56789")
    stream.feed_eof()
    assert await reading == b"0123456789"


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
async def test_a_compressed_body_gets_415_and_is_never_expanded(client, billing, encoding):
    # A small gzip "bomb" (20 MiB of zeros in ~20 KiB) is refused by its header, never decompressed;
    # an encoding aiohttp has no decoder for (br) is answered the same way.
    d = stripe_delivery()
    r = await post(client, d, headers={**d.headers, "Content-Encoding": encoding}, body=GZIP_BOMB)
    assert r.status == 415 and (await r.json())["error"]["code"] == "content_encoding_unsupported"
    assert billing.received == []


async def test_a_body_marked_identity_is_accepted(client, billing):
    d = stripe_delivery()
    r = await post(client, d, headers={**d.headers, "Content-Encoding": "identity"})
    assert r.status == 200 and [e.event_id for e in billing.received] == [d.event_id]


async def test_wrong_method_gets_405_json(client):
    r = await client.get("/webhooks/stripe")
    assert r.status == 405 and (await r.json())["error"]["code"] == "method_not_allowed"
    assert "POST" in r.headers["Allow"]


async def test_unknown_provider_path_gets_404_json(client, billing):
    d = stripe_delivery()
    r = await client.post("/webhooks/paypal", data=d.body, headers=d.headers)
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    assert billing.received == []


async def test_billing_down_gets_503_with_retry_after(client, billing):
    billing.down = True
    r = await post(client, stripe_delivery())
    assert r.status == 503 and r.headers["Retry-After"].isdigit()
    assert (await r.json())["error"]["code"] == "billing_unavailable"


async def test_a_stalled_billing_gets_each_webhook_a_503_within_the_timeout_and_a_full_queue_one_at_once():
    # The gateway's own gRPC client, to a billing that takes calls and answers none; room in the queue for
    # one waiting event.
    async for recording, addr in serving_billing(RecordingBilling(stalled=True)):
        gateway = served(create_app(settings(), connect_billing=lambda: BatchingBillingClient(
            open_channel(addr, PLAINTEXT), timeout_seconds=2.0, max_queued_bytes=1)))
        await gateway.start_server()
        try:
            loop = asyncio.get_running_loop()
            in_flight = []
            for taken in (1, 2):  # one at a time, each into a call slot of its own
                in_flight.append(asyncio.ensure_future(post(gateway, stripe_delivery())))

                async def sent(taken=taken):
                    return len(recording.calls) == taken

                await wait_for(sent, timeout=5, what=f"call {taken} to reach billing")
            started = loop.time()
            # One of these two waits in the queue; the other finds it full.
            late = [asyncio.ensure_future(post(gateway, stripe_delivery())) for _ in range(2)]
            done, _ = await asyncio.wait(late, return_when=asyncio.FIRST_COMPLETED)
            refused_after = loop.time() - started
            answers = await asyncio.gather(*in_flight, *late)
            waited = loop.time() - started
            codes = [(r.status, r.headers["Retry-After"].isdigit(), (await r.json())["error"]["code"]) for r in answers]
        finally:
            await gateway.close()
    assert codes == [(503, True, "billing_unavailable")] * 4
    assert len(done) == 1 and refused_after < 1.0, refused_after  # at once, not at its deadline
    assert waited < 4, waited  # each within its own timeout; none hangs on the stalled calls


async def test_a_flood_of_health_probes_is_one_call_to_billing_per_cache_period(billing):
    client = await _client_for(billing, health_cache_seconds=60.0)
    try:
        answers = await asyncio.gather(*(client.get(path) for path in ["/readyz", "/webhooks/health"] * 100))
        assert [a.status for a in answers] == [200] * 200
        assert billing.health_checks == 1
    finally:
        await client.close()


async def test_health_and_probes_follow_billing(client, billing):
    assert (await (await client.get("/webhooks/health")).json())["status"] == "healthy"
    assert (await client.get("/livez")).status == 200
    assert (await client.get("/readyz")).status == 200
    billing.down = True
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/livez")).status == 200


async def test_provider_without_secret_is_not_accepted(billing):
    client = served(create_app(settings(razorpay_webhook_secrets=()), billing=billing))
    await client.start_server()
    try:
        r = await post(client, sign("razorpay", RazorpayScenario().event("payment.captured"), RAZORPAY_SECRET))
        assert r.status == 404 and (await r.json())["error"]["code"] == "provider_not_configured"
    finally:
        await client.close()


async def test_request_id_is_echoed(client):
    r = await post(client, stripe_delivery(), headers={**stripe_delivery().headers, "X-Request-Id": "req-abc"})
    assert r.headers["X-Request-Id"] == "req-abc"


@pytest.mark.parametrize("given", ["caf\u00e9", "a\tb", "two words", ""])
async def test_a_request_id_that_could_not_travel_to_billing_is_replaced(client, billing, given):
    d = stripe_delivery()
    r = await post(client, d, headers={**d.headers, "X-Request-Id": given})
    assert r.status == 200
    replaced = r.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)
    assert [e.request_id for e in billing.received] == [replaced]


async def test_a_long_request_id_travels_as_its_first_64_characters(client, billing):
    d = stripe_delivery()
    r = await post(client, d, headers={**d.headers, "X-Request-Id": "a" * 64 + "-tail"})
    assert r.status == 200 and r.headers["X-Request-Id"] == "a" * 64
    assert [e.request_id for e in billing.received] == ["a" * 64]


async def _client_for(billing, **overrides):
    client = served(create_app(settings(**overrides), billing=billing))
    await client.start_server()
    return client


async def test_failed_authentications_are_rate_limited_but_genuine_traffic_never_is(billing):
    client = await _client_for(billing, auth_failures_per_minute=3)
    try:
        bad = {**stripe_delivery().headers, "Stripe-Signature": "t=1,v1=00"}
        statuses = [(await post(client, stripe_delivery(), headers=bad)).status for _ in range(5)]
        assert statuses == [400, 400, 400, 429, 429]
        limited = await post(client, stripe_delivery(), headers=bad)
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        assert (await limited.json())["error"]["code"] == "too_many_failures"
        genuine = await post(client, stripe_delivery())
        assert genuine.status == 200
    finally:
        await client.close()


async def test_allow_list_refuses_other_sources_and_reads_forwarded_for_only_from_trusted_proxies(billing):
    from gateway.domain.edge import parse_networks

    # The test client connects from 127.0.0.1: here it plays the trusted proxy.
    client = await _client_for(billing, stripe_allowed_cidrs=parse_networks("54.187.0.0/16"),
                               trusted_proxies=parse_networks("127.0.0.0/8, 10.0.0.0/8"))
    try:
        d = stripe_delivery()
        direct = await post(client, d)
        assert direct.status == 403 and (await direct.json())["error"]["code"] == "forbidden_source"
        spoofed = await post(client, d, headers={**d.headers, "X-Forwarded-For": "54.187.1.1, 198.51.100.7"})
        assert spoofed.status == 403
        # Every header line counts, read as one list: the last line's address is what the proxy saw.
        two_lines = [*d.headers.items(), ("X-Forwarded-For", "54.187.1.1"), ("X-Forwarded-For", "198.51.100.7")]
        assert (await client.post("/webhooks/stripe", data=d.body, headers=two_lines)).status == 403
        via_proxies = await post(client, d, headers={**d.headers, "X-Forwarded-For": "54.187.1.1, 10.1.2.3"})
        assert via_proxies.status == 200
        assert [(e.event_id, e.client_address) for e in billing.received] == [(d.event_id, "54.187.1.1")]
    finally:
        await client.close()


async def test_billing_is_handed_the_delivery_evidence_and_never_a_credential(client, billing):
    d = stripe_delivery()
    sent = {**d.headers, "Authorization": "Bearer sk_live_x", "Cookie": "session=1", "X-Other": "y"}
    assert (await post(client, d, headers=sent)).status == 200
    r = sign("razorpay", RazorpayScenario().event("payment.captured"), RAZORPAY_SECRET)
    assert (await post(client, r)).status == 200
    stripe_kept, razorpay_kept = billing.received
    assert dict(stripe_kept.headers) == {"stripe-signature": d.headers["Stripe-Signature"],
                                         "user-agent": d.headers["User-Agent"], "content-type": "application/json"}
    assert dict(razorpay_kept.headers) == {
        "x-razorpay-signature": r.headers["X-Razorpay-Signature"], "x-razorpay-event-id": r.event_id,
        "user-agent": r.headers["User-Agent"], "content-type": "application/json"}
    assert stripe_kept.client_address == razorpay_kept.client_address == "127.0.0.1"
    assert stripe_kept.payload == d.body and razorpay_kept.payload == r.body


async def test_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy_is_ignored(billing):
    from gateway.domain.edge import parse_networks

    client = await _client_for(billing, stripe_allowed_cidrs=parse_networks("54.187.0.0/16"),
                               trusted_proxies=parse_networks("10.0.0.0/8"))
    try:
        d = stripe_delivery()
        claimed = await post(client, d, headers={**d.headers, "X-Forwarded-For": "54.187.1.1"})
        assert claimed.status == 403 and billing.received == []
    finally:
        await client.close()


async def test_metrics_count_webhooks_by_provider_and_result_off_the_public_port(client):
    results = ["processed", "invalid_signature", "body_too_large", "content_encoding_unsupported"]
    before = {result: _webhooks_counted("stripe", result) for result in results}
    answered = REGISTRY.get_sample_value("webhook_request_seconds_count", {"provider": "stripe"}) or 0.0
    d = stripe_delivery()
    assert (await post(client, d)).status == 200
    assert (await post(client, d, headers={**d.headers, "Stripe-Signature": "t=1,v1=00"})).status == 400
    assert (await post(client, d, body=b"x" * 70_000)).status == 413
    assert (await post(client, d, headers={**d.headers, "Content-Encoding": "gzip"})).status == 415
    # Refusals made while reading the body are counted with the rest: operators see every answer.
    assert {result: _webhooks_counted("stripe", result) - before[result] for result in results} == dict.fromkeys(
        results, 1.0)
    assert REGISTRY.get_sample_value("webhook_request_seconds_count", {"provider": "stripe"}) == answered + 4
    public = await client.get("/metrics")
    assert public.status == 404  # the webhook port faces the internet; METRICS_PORT serves these


async def test_a_failed_events_error_text_is_logged_but_never_sent_to_the_provider(caplog):
    class FailingBilling(FakeBilling):
        async def ingest(self, event):
            return ProcessingResult("failed", error="KeyError: 'amount' in stripe_events.py line 212")

    client = await _client_for(FailingBilling())
    try:
        with caplog.at_level(logging.INFO, logger="gateway.web.app"):
            r = await post(client, stripe_delivery())
        assert r.status == 200
        body = await r.json()
        assert body["processing_result"]["status"] == "failed"
        assert "KeyError" not in json.dumps(body) and "error" not in body["processing_result"]
        assert any("KeyError" in str(getattr(rec, "fields", {}).get("error")) for rec in caplog.records)
    finally:
        await client.close()
