"""Mutual TLS for every gRPC hop: servers require a client certificate from the platform CA, clients
verify the server against it. Plaintext only when explicitly asked for (local development)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from servicekit.env import ConfigError


@dataclass(frozen=True)
class GrpcTls:
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    plaintext: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GrpcTls:
        files = {name: environ.get(name, "").strip() or None
                 for name in ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE")}
        plaintext = environ.get("GRPC_PLAINTEXT", "").strip().lower() in ("1", "true", "yes")
        if any(files.values()) and not all(files.values()):
            missing = ", ".join(k for k, v in files.items() if not v)
            raise ConfigError(f"mutual TLS needs GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE; missing {missing}")
        if not any(files.values()) and not plaintext:
            raise ConfigError("configure GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE, "
                              "or set GRPC_PLAINTEXT=true for local development")
        for name, path in files.items():
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}: no file at {path}")
        return cls(files["GRPC_TLS_CERT_FILE"], files["GRPC_TLS_KEY_FILE"], files["GRPC_TLS_CA_FILE"],
                   plaintext and not any(files.values()))

    def _material(self) -> tuple[bytes, bytes, bytes]:
        assert self.cert_file and self.key_file and self.ca_file
        return (Path(self.cert_file).read_bytes(), Path(self.key_file).read_bytes(), Path(self.ca_file).read_bytes())

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        if self.plaintext:
            return server.add_insecure_port(address)
        cert, key, ca = self._material()
        credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
        return server.add_secure_port(address, credentials)

    def channel(self, address: str, options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
        if self.plaintext:
            return grpc.aio.insecure_channel(address, options=list(options))
        cert, key, ca = self._material()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        return grpc.aio.secure_channel(address, credentials, options=list(options))


PLAINTEXT = GrpcTls(plaintext=True)

