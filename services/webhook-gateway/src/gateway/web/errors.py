"""The gateway's answers in JSON: every refusal is {"error": {"code", "message"}}."""

from __future__ import annotations

import orjson
from aiohttp import web


def json_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def raw_error(status: int, reason: str, code: str, message: str, headers: str = "") -> bytes:
    """A whole HTTP response, for a connection with no request in progress, which then closes."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{headers}Connection: close\r\n\r\n").encode() + body
