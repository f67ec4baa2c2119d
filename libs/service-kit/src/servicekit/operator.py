"""Operators' command lines over a service's gRPC API: how they connect, and how they end."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from servicekit.env import ConfigError
from servicekit.tls import GrpcTls


def run_command(prog: str, service: str, command: Callable[[GrpcTls], Coroutine[Any, Any, int]]) -> int:
    """Run `command` with the channel security of the environment: mutual TLS when GRPC_TLS_* are set (as
    in a service's pod, with its certificates), else plaintext (make run). A settings error exits 2, an
    error status from the service 1, each as one line on stderr."""
    try:
        tls = GrpcTls.from_env({"GRPC_PLAINTEXT": "true", **os.environ})
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(command(tls))
    except grpc.aio.AioRpcError as exc:
        print(f"{service}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
