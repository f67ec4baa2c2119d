"""Mutual TLS between services: only clients with a certificate from the platform CA get in, and
clients only talk to a server the platform CA vouches for."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trustme
from devstack.stack import free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servicekit.env import ConfigError
from servicekit.grpcserve import listen
from servicekit.tls import GrpcTls


def write_identity(tmp_path, name: str, ca: trustme.CA, *hosts: str) -> GrpcTls:
    cert = ca.issue_cert(*hosts)
    paths = {kind: tmp_path / f"{name}.{kind}.pem" for kind in ("cert", "key", "ca")}
    paths["cert"].write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    paths["key"].write_bytes(cert.private_key_pem.bytes())
    paths["ca"].write_bytes(ca.cert_pem.bytes())
    return GrpcTls(str(paths["cert"]), str(paths["key"]), str(paths["ca"]))


@pytest.fixture
def platform(tmp_path):
    ca = trustme.CA()
    return {
        "server": write_identity(tmp_path, "server", ca, "127.0.0.1", "localhost"),
        "client": write_identity(tmp_path, "gateway", ca, "gateway.boxcost.internal"),
        "rogue": write_identity(tmp_path, "rogue", trustme.CA(), "gateway.boxcost.internal"),
    }


@pytest.fixture
async def server_addr(platform):
    port = free_port()
    server = grpc.aio.server()
    listen(server, f"127.0.0.1:{port}", "boxcost.billing.v1.BillingService", platform["server"])
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def check(tls: GrpcTls, addr: str) -> grpc.StatusCode:
    async with tls.channel(addr) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_configured_client_is_served(platform, server_addr):
    assert await check(platform["client"], server_addr) is grpc.StatusCode.OK


async def test_client_without_certificate_is_refused(platform, server_addr):
    ca = Path(platform["client"].ca_file).read_bytes()
    async with grpc.aio.secure_channel(server_addr, grpc.ssl_channel_credentials(ca)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_client_from_another_ca_is_refused(platform, server_addr):
    assert await check(platform["rogue"], server_addr) is grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_is_refused(server_addr):
    assert await check(GrpcTls(plaintext=True), server_addr) is grpc.StatusCode.UNAVAILABLE


def test_plaintext_must_be_asked_for_and_tls_needs_all_three_files(platform):
    with pytest.raises(ConfigError, match="GRPC_PLAINTEXT"):
        GrpcTls.from_env({})
    with pytest.raises(ConfigError, match="missing GRPC_TLS_CA_FILE"):
        GrpcTls.from_env({"GRPC_TLS_CERT_FILE": platform["client"].cert_file,
                          "GRPC_TLS_KEY_FILE": platform["client"].key_file})
    assert GrpcTls.from_env({"GRPC_PLAINTEXT": "true"}).plaintext
    tls = GrpcTls.from_env({"GRPC_TLS_CERT_FILE": platform["client"].cert_file,
                            "GRPC_TLS_KEY_FILE": platform["client"].key_file,
                            "GRPC_TLS_CA_FILE": platform["client"].ca_file, "GRPC_PLAINTEXT": "true"})
    assert not tls.plaintext  # certificates win over a leftover plaintext flag


async def test_probe_port_answers_health_in_plaintext_while_the_api_needs_mtls(platform):
    from servicekit.grpcserve import health_only_server

    api_port, probe_port = free_port(), free_port()
    server = grpc.aio.server()
    health = listen(server, f"127.0.0.1:{api_port}", "boxcost.billing.v1.BillingService", platform["server"])
    probe = health_only_server(health, probe_port)
    await server.start()
    await probe.start()
    try:
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        assert await check(GrpcTls(plaintext=True), f"127.0.0.1:{probe_port}") is grpc.StatusCode.OK
        assert await check(GrpcTls(plaintext=True), f"127.0.0.1:{api_port}") is grpc.StatusCode.UNAVAILABLE
    finally:
        await probe.stop(0)
        await server.stop(0)
