"""How the operators' command lines end: one line on stderr and an exit code a script can test."""

from __future__ import annotations

import grpc
from grpc.aio import Metadata
from servicekit.operator import run_command
from servicekit.tls import GrpcTls


def test_settings_that_cannot_make_a_channel_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("GRPC_TLS_CERT_FILE", "/etc/tls/tls.crt")  # without its key and CA
    monkeypatch.delenv("GRPC_TLS_KEY_FILE", raising=False)
    monkeypatch.delenv("GRPC_TLS_CA_FILE", raising=False)

    async def never(_tls):
        raise AssertionError("must not run")

    assert run_command("notifier.cli", "notifier", never) == 2
    assert capsys.readouterr().err.startswith("notifier.cli: configuration error: mutual TLS needs ")


def test_plaintext_without_tls_settings_and_an_error_status_exits_1(monkeypatch, capsys):
    for name in ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE", "GRPC_PLAINTEXT"):
        monkeypatch.delenv(name, raising=False)
    seen = []

    async def refused(tls: GrpcTls) -> int:
        seen.append(tls.plaintext)
        raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, Metadata(), Metadata(), details="no email x")

    assert run_command("notifier.cli", "notifier", refused) == 1
    assert seen == [True]
    assert capsys.readouterr().err == "notifier: NOT_FOUND: no email x\n"
