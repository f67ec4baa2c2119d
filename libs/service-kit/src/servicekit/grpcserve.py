"""Serving a grpc.aio server: request ids from metadata, health, and graceful SIGTERM handling."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from servicekit.authz import AuthorizationInterceptor, Policy
from servicekit.gctune import settle_after_startup
from servicekit.logs import REQUEST_ID_HEADER, new_request_id, request_id_var
from servicekit.metrics import MetricsInterceptor
from servicekit.tls import GrpcTls

log = logging.getLogger(__name__)


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    """Puts the caller's `x-request-id` (or a new one) in the logging context of each unary RPC."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        request_id = next(
            (v for k, v in handler_call_details.invocation_metadata or () if k == REQUEST_ID_HEADER),
            "",
        ) or new_request_id()
        inner = handler.unary_unary

        async def behaviour(request, context):
            token = request_id_var.set(request_id)
            try:
                return await inner(request, context)
            finally:
                request_id_var.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# What a request's bytes decode to when they are not the method's message.
_UNDECODABLE = object()


class DecodeInterceptor(grpc.aio.ServerInterceptor):
    """A request whose bytes are not the method's message (a broken client, or one built from an
    incompatible contract) is bad input like any other: INVALID_ARGUMENT naming the message type. Left
    to gRPC it would be UNKNOWN, with an error and a traceback logged as if the fault were the server's."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        decode, inner = handler.request_deserializer, handler.unary_unary
        message_type = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
        expected = message_type.full_name if message_type else "request message"

        def lenient(raw: bytes):
            try:
                return decode(raw)
            except DecodeError:
                return _UNDECODABLE

        async def behaviour(request, context):
            if request is _UNDECODABLE:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {expected}")
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=lenient, response_serializer=handler.response_serializer
        )


_NO_TEXT = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


@functools.cache
def _text_fields(descriptor) -> tuple[tuple[str, bool, bool, bool], ...]:
    """(name, is a string, repeated, is a map) of the fields of a message type that are strings or may
    hold some."""
    return tuple(
        (field.name, field.type == field.TYPE_STRING, field.is_repeated,
         field.type == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)
        for field in descriptor.fields
        if field.type == field.TYPE_STRING
        or (field.type == field.TYPE_MESSAGE and field.message_type.full_name not in _NO_TEXT)
    )


def nul_field(message, prefix: str = "") -> str | None:
    """The path of the first string in `message` (nested messages and maps included) that holds a NUL
    character, which no PostgreSQL text column can store; None when there is none."""
    for name, is_text, repeated, is_map in _text_fields(message.DESCRIPTOR):
        if is_map:
            for key, item in getattr(message, name).items():
                path = f"{prefix}{name}[{key!r}]"
                if isinstance(key, str) and "\x00" in key or isinstance(item, str) and "\x00" in item:
                    return path
                if not isinstance(item, (str, bytes, int, float, bool)) and (found := nul_field(item, path + ".")):
                    return found
            continue
        if not repeated and not is_text and not message.HasField(name):
            continue
        value = getattr(message, name)
        for i, item in enumerate(value if repeated else (value,)):
            path = f"{prefix}{name}[{i}]" if repeated else prefix + name
            if is_text:
                if "\x00" in item:
                    return path
            elif found := nul_field(item, path + "."):
                return found
    return None


def maps_errors(table: Mapping[type[Exception], grpc.StatusCode], *, refuse_nul: bool = True):
    """Decorates a servicer's RPC methods. A request with a NUL character in a string is refused first
    (INVALID_ARGUMENT naming the field), unless `refuse_nul` is off for a method that refuses item by
    item. Exceptions in `table` end the call with their status code and
    message (UNAVAILABLE with a generic one, the cause logged); anything else is a defect for grpc to log."""
    known = tuple(table)

    def decorate(method):
        @functools.wraps(method)
        async def rpc(self, request, context: grpc.aio.ServicerContext):
            if refuse_nul and (field := nul_field(request)) is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: must not contain NUL characters")
            try:
                return await method(self, request, context)
            except known as exc:
                code = next(c for t, c in table.items() if isinstance(exc, t))
                if code is grpc.StatusCode.UNAVAILABLE:
                    log.warning("dependency unavailable", extra={"fields": {"error": str(exc)}})
                    await context.abort(code, "temporarily unavailable; retry")
                await context.abort(code, str(exc))

        return rpc

    return decorate


MAX_CONNECTION_AGE_SECONDS = 300


def new_server(policy: Policy | None, max_concurrent_rpcs: int | None = None) -> grpc.aio.Server:
    """A server whose calls are authorized by `policy`; None allows every call (plaintext, local use)."""
    if policy is None:
        log.warning("no authorization policy: every caller may call every method (local development only)")
    authorize = [AuthorizationInterceptor(policy)] if policy is not None else []
    return grpc.aio.server(
        # The innermost last: callers are authorized before anything else is done for them, and the
        # request is decoded by DecodeInterceptor's rule.
        interceptors=[RequestIdInterceptor(), MetricsInterceptor(), *authorize, DecodeInterceptor()],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            # A connection lives at most this long, then its client reconnects and resolves the target
            # again: replicas added by a scale-up get their share of calls within minutes.
            ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_SECONDS * 1000),
            ("grpc.max_connection_age_grace_ms", 30_000),
        ],
    )


def listen(server: grpc.aio.Server, listen_addr: str, service_name: str, tls: GrpcTls) -> health.aio.HealthServicer:
    """Add the standard health service and reflection (for grpcurl) and bind `listen_addr` (mTLS unless
    plaintext was asked for)."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((service_name, reflection.SERVICE_NAME), server)
    if tls.bind(server, listen_addr) == 0:
        raise OSError(f"cannot listen on {listen_addr}")
    return servicer


def health_only_server(health_servicer: health.aio.HealthServicer, port: int) -> grpc.aio.Server:
    """A plaintext server with only the health service, for Kubernetes' native gRPC probes, which
    cannot present client certificates. It shares the main server's health state."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"0.0.0.0:{port}") == 0:
        raise OSError(f"cannot listen on health port {port}")
    return server


async def serve_until_signalled(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    service_names: Sequence[str],
    grace_seconds: float,
    on_draining: Callable[[], Awaitable[None]] | None = None,
    health_port: int = 0,
) -> None:
    """Start, report SERVING, wait for SIGTERM/SIGINT, then drain within the grace period.

    Draining: health goes NOT_SERVING first (so probes and load balancers stop sending), then the
    server stops accepting RPCs and lets in-flight ones finish for up to `grace_seconds`.
    """
    probe_server = health_only_server(health_servicer, health_port) if health_port else None
    await server.start()
    if probe_server is not None:
        await probe_server.start()
    settle_after_startup()
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutdown requested; draining", extra={"fields": {"grace_seconds": grace_seconds}})
    await health_servicer.enter_graceful_shutdown()
    if on_draining is not None:
        await on_draining()
    await server.stop(grace_seconds)
    if probe_server is not None:
        await probe_server.stop(0)
    log.info("stopped")
