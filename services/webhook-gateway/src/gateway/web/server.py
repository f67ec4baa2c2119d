"""Serving the gateway's app on the public port, with limits on what one connection may hold.

- A request head must be complete within the header timeout of its first byte (of the accept, on a new
  connection): else 408 and the connection is closed.
- An idle keep-alive connection is closed after the keep-alive timeout.
- Past the connection cap, a new connection gets 503 and is closed at once; admitted ones are untouched.
- What aiohttp refuses itself (not HTTP, a malformed header) gets the usual short JSON error, and nothing
  the sender wrote is echoed back.
- On SIGTERM it stops accepting, then for a moment answers what still arrives on open connections (with
  Connection: close) before it shuts down: a request already sent on a kept-alive connection is served,
  not cut off.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from gateway.web.errors import error_response, raw_error, refusal_for

log = logging.getLogger(__name__)

REFUSED_CONNECTIONS = Counter("webhook_connections_refused_total",
                              "Connections closed by the gateway's limits, by reason.", ["reason"])


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 60.0
    max_connections: int = 1024


def _refusal(status: int, exc: BaseException | None) -> web.Response:
    """The answer to what aiohttp refused before the app saw it: from the gateway's table of refusals."""
    refused = refusal_for(exc) if exc is not None and status < 500 else None
    response = refused[1] if refused is not None else error_response(500, "internal", "internal error")
    response.force_close()  # as aiohttp does: what follows on the connection cannot be trusted
    return response


# How long a stopping gateway still reads requests from connections it has open.
DRAIN_WINDOW_SECONDS = 1.0


class _OpenConnections:
    def __init__(self) -> None:
        self.handlers: set[GuardedHandler] = set()
        self.draining = False


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, timing each request head and counting the connection against the cap.
    The app's middleware marks where each request starts and ends (`request_started`, `request_finished`)."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, open_connections: _OpenConnections,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._open = open_connections
        self._refused = False
        self._in_request = False
        self.draining = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._open.draining or len(self._open.handlers) >= self._limits.max_connections:
            self._refused = True
            REFUSED_CONNECTIONS.labels("over_capacity").inc()
            assert isinstance(transport, asyncio.Transport)
            transport.write(raw_error(503, "Service Unavailable", "over_capacity",
                                        "too many open connections; retry later", "Retry-After: 5\r\n"))
            transport.close()
            return
        self._open.handlers.add(self)
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_request and self._head_timer is None:
            self._arm_head_timer()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._open.handlers.discard(self)
        self._cancel_head_timer()
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._in_request = True
        self._cancel_head_timer()

    def request_finished(self) -> None:
        self._in_request = False

    @property
    def closing_after_this_request(self) -> bool:
        return self._open.draining

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own handling first: it logs, and gives up when part of a response was sent already.
        super().handle_error(request, status, exc, message)
        return _refusal(status, exc)

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._limits.header_timeout_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if self._in_request or transport is None or transport.is_closing():
            return
        REFUSED_CONNECTIONS.labels("header_timeout").inc()
        transport.write(raw_error(408, "Request Timeout", "header_timeout",
                                    f"request head not received within {self._limits.header_timeout_seconds:g} s"))
        transport.close()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are GuardedHandlers of the runner's server."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: ConnectionLimits,
                 handler_args: dict[str, Any], *, reuse_port: bool = False) -> None:
        super().__init__(runner)
        self._app_runner = runner
        self._host, self._port = host, port
        self._limits = limits
        self._handler_args = handler_args
        self._reuse_port = reuse_port
        self._listener: asyncio.AbstractServer | None = None
        self._open = _OpenConnections()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        if self._listener is not None and self._listener.sockets:
            return self._listener.sockets[0].getsockname()[1]
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._app_runner.server
        assert server is not None, "the runner is set up first"
        loop = asyncio.get_running_loop()

        def connection() -> GuardedHandler:
            return GuardedHandler(server, loop=loop, limits=self._limits, open_connections=self._open,
                                  keepalive_timeout=self._limits.keepalive_timeout_seconds, **self._handler_args)

        self._listener = await loop.create_server(connection, self._host, self._port, reuse_address=True,
                                                  reuse_port=self._reuse_port or None, backlog=1024,
                                                  family=socket.AF_UNSPEC)

    async def drain(self, seconds: float) -> None:
        """Stop accepting; for `seconds`, still answer requests on the open connections, each then closed."""
        self._open.draining = True
        if self._listener is not None:
            self._listener.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._open.handlers and loop.time() < deadline:
            await asyncio.sleep(0.05)  # a window of time, not a wait for an event: requests may still come

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        await super().stop()


def mark_request(request: web.BaseRequest, started: bool) -> None:
    """Tell the connection's guard a request head was complete (started) or its answer is made."""
    protocol = request.protocol
    if isinstance(protocol, GuardedHandler):
        if started:
            protocol.request_started()
        else:
            protocol.request_finished()


def closing_after(request: web.BaseRequest) -> bool:
    """Whether the connection closes after this request's answer (the gateway is stopping)."""
    protocol = request.protocol
    return isinstance(protocol, GuardedHandler) and protocol.closing_after_this_request


async def serve(app: web.Application, host: str, port: int, shutdown_timeout: float, limits: ConnectionLimits,
                handler_args: dict[str, Any], *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, then as run_app: stop accepting, let the requests in flight finish
    within `shutdown_timeout`, run the app's shutdown and cleanup. Everything else keeps running meanwhile
    (the calls to billing the requests wait on), so nothing is cancelled before it is drained."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = GuardedSite(runner, host, port, limits, handler_args, reuse_port=reuse_port)
    try:
        await site.start()
        await stop.wait()
        await site.drain(min(DRAIN_WINDOW_SECONDS, shutdown_timeout))
    finally:
        await runner.cleanup()
