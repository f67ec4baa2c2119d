"""The gateway's answers in JSON, and the one table of its refusals: every exception it answers, from the
domain, from reading the body and from aiohttp, to a status, a code and a message.
Every refusal is {"error": {"code", "message"}}."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.domain.receive import (
    BillingUnavailable,
    InvalidEvent,
    ProviderNotConfigured,
    SignatureError,
    SourceNotAllowed,
    TooManyFailures,
)


class BodyRefused(Exception):
    """The body cannot be taken as sent: its words are the answer's message."""


class BodyTooLarge(BodyRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body exceeds {limit} bytes")


class BodyTimeout(BodyRefused):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"body not received within {seconds:g} s")


class CompressedBody(BodyRefused):
    def __init__(self) -> None:
        super().__init__("send the body uncompressed, as providers do")


@dataclass(frozen=True)
class Refusal:
    status: int | None  # None: the status aiohttp chose
    code: str
    message: str | None = None  # None: the exception's own words


REFUSALS: tuple[tuple[type[Exception], Refusal], ...] = (
    (SignatureError, Refusal(400, "invalid_signature")),
    (InvalidEvent, Refusal(400, "invalid_event")),
    (HttpProcessingError, Refusal(None, "malformed_http")),  # not HTTP, a bad header line, a bad chunk
    (SourceNotAllowed, Refusal(403, "forbidden_source")),
    (ProviderNotConfigured, Refusal(404, "provider_not_configured")),
    (web.HTTPNotFound, Refusal(404, "not_found", "no such endpoint")),
    (web.HTTPMethodNotAllowed, Refusal(405, "method_not_allowed")),
    (BodyTimeout, Refusal(408, "body_timeout")),
    (BodyTooLarge, Refusal(413, "body_too_large")),
    (web.HTTPRequestEntityTooLarge, Refusal(413, "body_too_large")),  # a chunked body over the limit
    (CompressedBody, Refusal(415, "content_encoding_unsupported")),
    (TooManyFailures, Refusal(429, "too_many_failures")),
    (BillingUnavailable, Refusal(503, "billing_unavailable", "billing is unavailable; retry later")),
)
RETRY_AFTER_SECONDS = 5  # when billing is unavailable; providers retry on their own schedule anyway


def json_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def refusal_for(exc: BaseException) -> tuple[str, web.Response] | None:
    """The code and the answer for an exception of the table; None for any other (a defect: a 500)."""
    refusal = next((r for kind, r in REFUSALS if isinstance(exc, kind)), None)
    if refusal is None:
        return None
    headers: dict[str, str] = {}
    if isinstance(exc, HttpProcessingError):
        # aiohttp's message goes on to quote the bytes received, after a colon: the reason is before it.
        message, status = exc.message.split(":", 1)[0].strip()[:120] or "malformed request", exc.code
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        message, status, headers["Allow"] = f"use {', '.join(allowed)}", 405, ",".join(allowed)
    else:
        message = refusal.message or (exc.text if isinstance(exc, web.HTTPException) and exc.text else str(exc))
        status = refusal.status or 400
    if isinstance(exc, TooManyFailures):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, BillingUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response = error_response(status, refusal.code, message, headers or None)
    if isinstance(exc, (BodyTimeout, HttpProcessingError)):
        response.force_close()  # the rest of what was sent may still come: the connection can't be reused
    return refusal.code, response


def raw_error(status: int, reason: str, code: str, message: str, headers: str = "") -> bytes:
    """A whole HTTP response, for a connection with no request in progress, which then closes."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{headers}Connection: close\r\n\r\n").encode() + body
