"""Serving the gateway's app as aiohttp's run_app does, except for what aiohttp answers itself.

A request aiohttp cannot parse (not HTTP, a malformed header, a line over the limit) never reaches the
app or its middleware: aiohttp answers it with a text/plain 400 that quotes the bytes received. Here it
gets the status aiohttp chose and a short JSON error, as every other refusal of the gateway does, and
nothing the sender wrote is echoed back.
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.web.app import error_response


def _refusal(status: int, exc: BaseException | None) -> web.Response:
    if status >= 500 or not isinstance(exc, HttpProcessingError):
        code, message = "internal", "internal error"
    else:
        # aiohttp's message goes on to quote the bytes received, after a colon: the reason is before it.
        code, message = "malformed_http", exc.message.split(":", 1)[0].strip()[:120] or "malformed request"
    response = error_response(status, code, message)
    response.force_close()  # as aiohttp does: what follows on the connection cannot be trusted
    return response


class _JsonRefusals(web.RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own handling first: it logs, and gives up when part of a response was sent already.
        super().handle_error(request, status, exc, message)
        return _refusal(status, exc)


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _JsonRefusals(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """aiohttp's AppRunner, whose connections answer what aiohttp refuses in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application builds its server itself; ours differs only in the connection handler it makes.
        server.__class__ = _Server
        return server


async def serve(app: web.Application, host: str, port: int, shutdown_timeout: float) -> None:
    """Serve until SIGTERM or SIGINT, then as run_app: stop accepting, let the requests in flight finish
    within `shutdown_timeout`, run the app's shutdown and cleanup. Everything else keeps running meanwhile
    (the calls to billing the requests wait on), so nothing is cancelled before it is drained."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = GatewayRunner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await stop.wait()
    finally:
        await runner.cleanup()
