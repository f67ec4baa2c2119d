"""Prometheus metrics shared by the gRPC services: RPC latency and codes, and the metrics HTTP port."""

from __future__ import annotations

import time

import grpc
from prometheus_client import Counter, Histogram, start_http_server

RPC_HANDLED = Counter("grpc_server_handled_total", "RPCs completed, by method and status code.",
                      ["grpc_method", "grpc_code"])
RPC_SECONDS = Histogram("grpc_server_handling_seconds", "Time to handle an RPC, by method.", ["grpc_method"],
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every unary RPC. Labels are the method name and the status code: both bounded."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        async def behaviour(request, context):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except Exception:
                code = context.code() if isinstance(context.code(), grpc.StatusCode) else grpc.StatusCode.UNKNOWN
                raise
            finally:
                RPC_SECONDS.labels(method).observe(time.perf_counter() - started)
                RPC_HANDLED.labels(method, code.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def serve_metrics(port: int) -> None:
    """Expose /metrics on `port` (0: off), from a thread of its own."""
    if port:
        start_http_server(port)
