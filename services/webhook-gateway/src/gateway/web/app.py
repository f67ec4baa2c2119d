"""aiohttp transport: decode the request, call ReceiveWebhook, map the receipt or error to a response."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter, Gauge, Histogram
from servicekit.logs import REQUEST_ID_HEADER, accept_request_id, request_id_var

from gateway.config import Settings
from gateway.domain.edge import AuthFailureLimiter, Network, client_address
from gateway.domain.receive import BillingPort, EdgePolicy, Provider, Receipt, ReceiveWebhook, WebhookSecrets
from gateway.web.errors import (
    BodyTimeout,
    BodyTooLarge,
    CompressedBody,
    error_response,
    json_response,
    refusal_for,
)
from gateway.web.server import closing_after, mark_request

log = logging.getLogger(__name__)


class ReadinessProbe:
    """Whether the gateway should receive traffic: billing reachable and not shutting down. Billing's answer
    is reused for `cache_seconds`, and callers meanwhile share one check: probes on the public port never
    multiply into calls to billing."""

    def __init__(self, billing_serving: Callable[[], Awaitable[bool]], cache_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._billing_serving = billing_serving
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._checked_at = float("-inf")
        self._reachable = False
        self._check: asyncio.Future[bool] | None = None
        self.shutting_down = False

    async def billing_reachable(self) -> bool:
        if self._clock() - self._checked_at < self._cache_seconds:
            return self._reachable
        if self._check is None:
            self._check = asyncio.ensure_future(self._ask())
        return await asyncio.shield(self._check)

    async def _ask(self) -> bool:
        try:
            self._reachable = await self._billing_serving()
            self._checked_at = self._clock()
            return self._reachable
        finally:
            self._check = None


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    body_timeout_seconds: float = 10.0
    trusted_proxies: tuple[Network, ...] = ()


WEBHOOKS = Counter("webhook_requests_total", "Webhook requests by provider and result (processed, duplicate, "
                   "ignored, failed, or the refusal code).", ["provider", "result"])
WEBHOOK_SECONDS = Histogram("webhook_request_seconds", "Time from request to answer, by provider.", ["provider"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

IN_FLIGHT = Gauge("webhook_requests_in_flight", "Webhooks received and not yet answered (most wait for billing).")

RECEIVE = web.AppKey("receive", ReceiveWebhook)
READINESS = web.AppKey("readiness", ReadinessProbe)
LIMITS = web.AppKey("limits", Limits)



def _receipt_body(receipt: Receipt) -> dict:
    result = receipt.result
    processing = {
        "status": result.status,
        "transaction_ids": list(result.transaction_ids),
        "subscription_ids": list(result.subscription_ids),
    }
    return {
        "received": True,
        "event_id": receipt.envelope.event_id,
        "event_type": receipt.envelope.event_type,
        "processing_result": processing,
    }


async def _read_body(request: web.Request) -> bytes:
    limits = request.app[LIMITS]
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise CompressedBody()  # providers send webhooks uncompressed
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise BodyTooLarge(limits.max_body_bytes)
    if request.content.is_eof():  # the whole body came with the headers, as providers send it
        return await request.read()
    try:
        async with asyncio.timeout(limits.body_timeout_seconds):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(limits.body_timeout_seconds) from None


@lru_cache(maxsize=64)  # bounded label sets: providers x results; labels() costs a lock and checks per call
def _webhook_counter(provider: Provider, result: str) -> Counter:
    return WEBHOOKS.labels(provider.value, result)


_WEBHOOK_SECONDS = {provider: WEBHOOK_SECONDS.labels(provider.value) for provider in Provider}


async def receive_webhook(request: web.Request) -> web.Response:
    provider = Provider(request.match_info["provider"])
    started = time.perf_counter()
    with IN_FLIGHT.track_inprogress():
        response, result = await _receive(request, provider)
    _observe(provider, started, result)
    return response


def _observe(provider: Provider, started: float, result: str) -> None:
    _WEBHOOK_SECONDS[provider].observe(time.perf_counter() - started)
    _webhook_counter(provider, result).inc()


async def _receive(request: web.Request, provider: Provider) -> tuple[web.Response, str]:
    limits = request.app[LIMITS]
    client = client_address(request.remote, request.headers.getall("X-Forwarded-For", ()), limits.trusted_proxies)
    try:
        body = await _read_body(request)
        receipt = await request.app[RECEIVE].execute(provider, request.headers, body, request_id_var.get(), client)
    except Exception as exc:
        refused = refusal_for(exc)
        if refused is None:
            raise
        code, response = refused
        log.info("webhook refused", extra={"fields": {"provider": provider.value, "code": code, "reason": str(exc),
                                                      "client": str(client)}})
        return response, code
    result = receipt.result
    log.info(
        "webhook accepted",
        extra={"fields": {"provider": provider.value, "event_id": receipt.envelope.event_id,
                          "event_type": receipt.envelope.event_type, "status": result.status,
                          "error": result.error}},
    )
    return json_response(_receipt_body(receipt)), result.status


async def health(request: web.Request) -> web.Response:
    """Kept for existing BoxCostPro clients, which expect {"status": "healthy"}."""
    reachable = await request.app[READINESS].billing_reachable()
    body = {"status": "healthy" if reachable else "unhealthy", "service": "webhook-gateway",
            "billing": "reachable" if reachable else "unreachable"}
    return json_response(body, status=200 if reachable else 503)


async def livez(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    if readiness.shutting_down:
        return json_response({"status": "shutting_down"}, status=503)
    if not await readiness.billing_reachable():
        return json_response({"status": "billing_unreachable"}, status=503)
    return json_response({"status": "ready"})


@web.middleware
async def request_context(request: web.Request, handler):
    """Request id (the caller's, or a new one) for logs and billing; JSON for every HTTP error."""
    mark_request(request, started=True)
    request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    except Exception as exc:
        refused = refusal_for(exc)
        if refused is not None:
            response = refused[1]
        elif isinstance(exc, web.HTTPException):  # one aiohttp raises that the table does not name
            response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        else:
            log.exception("unhandled error")
            response = error_response(500, "internal", "internal error")
    finally:
        request_id_var.reset(token)
        mark_request(request, started=False)
    if closing_after(request):
        response.force_close()
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


async def _expect_continue(request: web.Request) -> web.Response | None:
    """Expect: 100-continue is answered only for a body the gateway would take; any other expectation is
    refused, in JSON like every refusal."""
    if request.headers.get("Expect", "").strip().lower() != "100-continue":
        return error_response(417, "expectation_failed", "only Expect: 100-continue is understood")
    limit = request.app[LIMITS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        response = error_response(413, "body_too_large", f"body exceeds {limit} bytes")
        response.force_close()  # the client was not invited to send it: nothing of it may follow
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def _mark_shutting_down(app: web.Application) -> None:
    app[READINESS].shutting_down = True


class _ServerLog(logging.LoggerAdapter):
    """aiohttp's own log of each connection. A request it could not parse (a scanner, a broken client) is
    the sender's fault, not a defect here: it gets one info line, as every other refusal does, instead of
    an error with a traceback. The reason is cut before aiohttp quotes the bytes received, so nothing the
    sender wrote, a signature header included, reaches the log. Anything else passes through."""

    def exception(self, msg: object, *args: object, exc_info: object = True, **kwargs: Any) -> None:
        if not isinstance(exc_info, HttpProcessingError):
            self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)
            return
        reason = exc_info.message.split(":", 1)[0].strip()
        # aiohttp passes the peer's address as the one argument of its message.
        self.logger.info("HTTP request refused", extra={"fields": {
            "code": "malformed_http", "status": exc_info.code, "error": type(exc_info).__name__,
            "reason": reason[:120], "client": str(args[0]) if args else None}})


def connection_options() -> dict[str, Any]:
    """aiohttp's options for each connection. auto_decompress off: the signature is checked on the bytes as
    sent, and no compressed body is ever expanded."""
    return {"auto_decompress": False, "access_log": None,
            "logger": _ServerLog(logging.getLogger("aiohttp.server"))}


class ConnectedBilling(BillingPort, Protocol):
    """Billing over a connection the app closes when it stops."""

    async def close(self, timeout: float) -> None: ...


def create_app(
    settings: Settings,
    billing: BillingPort | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    *,
    connect_billing: Callable[[], ConnectedBilling] | None = None,
) -> web.Application:
    """The gateway application, with `billing` (tests pass a fake), or with the billing that
    `connect_billing` makes at start-up and the app closes when it stops (the gRPC client)."""
    if (billing is None) == (connect_billing is None):
        raise TypeError("give create_app either billing or connect_billing")
    # client_max_size also guards chunked bodies that send no Content-Length.
    app = web.Application(middlewares=[request_context], client_max_size=settings.max_body_bytes,
                          handler_args=connection_options())
    app[LIMITS] = Limits(max_body_bytes=settings.max_body_bytes, body_timeout_seconds=settings.body_timeout_seconds,
                         trusted_proxies=settings.trusted_proxies)
    edge = EdgePolicy(
        AuthFailureLimiter(per_minute=settings.auth_failures_per_minute, burst=settings.auth_failures_per_minute),
        {Provider.STRIPE: settings.stripe_allowed_cidrs, Provider.RAZORPAY: settings.razorpay_allowed_cidrs},
    )

    async def billing_context(app: web.Application) -> AsyncIterator[None]:
        connected = connect_billing() if connect_billing is not None else None
        client = connected or billing
        assert client is not None
        secrets = WebhookSecrets(
            stripe=tuple(s.value for s in settings.stripe_webhook_secrets),
            razorpay=tuple(s.value for s in settings.razorpay_webhook_secrets),
        )
        app[RECEIVE] = ReceiveWebhook(client, secrets, tolerance_seconds=settings.tolerance_seconds, clock=clock,
                                      edge=edge)
        app[READINESS] = ReadinessProbe(client.is_serving, settings.health_cache_seconds)
        yield
        if connected is not None:
            # After the grace period the server gave the webhooks in flight: what is still with billing
            # has no one waiting for its answer, so it gets a short while more, not another grace period.
            await connected.close(timeout=min(5.0, settings.shutdown_grace_seconds))

    app.cleanup_ctx.append(billing_context)
    app.router.add_post(r"/webhooks/{provider:stripe|razorpay}", receive_webhook, expect_handler=_expect_continue)
    app.router.add_get("/webhooks/health", health, expect_handler=_expect_continue)
    app.router.add_get("/livez", livez, expect_handler=_expect_continue)
    app.router.add_get("/readyz", readyz, expect_handler=_expect_continue)
    app.on_shutdown.append(_mark_shutting_down)
    return app
