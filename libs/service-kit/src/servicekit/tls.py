"""Mutual TLS for every gRPC hop: servers require a client certificate from the platform CA, clients
verify the server against it. Plaintext only when explicitly asked for (local development).

Certificates are renewed in place (cert-manager rewrites the mounted files): a server takes the new ones
for each new connection, and a client opens new connections with them, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from servicekit.env import ConfigError

log = logging.getLogger(__name__)

# How often a client looks at its certificate files, and how long a replaced channel may finish its calls.
RELOAD_CHECK_SECONDS = 1.0
OLD_CHANNEL_GRACE_SECONDS = 30.0


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

    @property
    def _paths(self) -> tuple[str, str, str]:
        assert self.cert_file and self.key_file and self.ca_file
        return self.cert_file, self.key_file, self.ca_file

    def _versions(self) -> tuple[tuple[int, int], ...]:
        """What changes when a file is rewritten or its symlink swapped (as Kubernetes does)."""
        versions = []
        for path in self._paths:
            try:
                stat = Path(path).stat()
            except OSError:
                return ()
            versions.append((stat.st_mtime_ns, stat.st_ino))
        return tuple(versions)

    def _material(self) -> tuple[bytes, bytes, bytes]:
        """Certificate chain, key and CA, checked to belong together: a renewal caught half-written is
        refused (ValueError or OSError), and the certificates in use stay."""
        cert_file, key_file, ca_file = self._paths
        ssl.create_default_context().load_cert_chain(cert_file, key_file)
        cert, key, ca = (Path(p).read_bytes() for p in self._paths)
        if b"BEGIN CERTIFICATE" not in ca:
            raise ValueError(f"{ca_file} holds no certificate")
        return cert, key, ca

    def _server_config(self) -> Any:
        cert, key, ca = self._material()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that require a client certificate from the CA, re-read for each new connection
        when the files have changed."""
        seen = [self._versions()]

        def fetch() -> Any:
            versions = self._versions()
            if versions == seen[0]:
                return None
            try:
                config = self._server_config()
            except (OSError, ValueError, ssl.SSLError) as exc:
                log.warning("renewed certificates not usable yet; keeping the current ones",
                            extra={"fields": {"error": str(exc)}})
                return None
            seen[0] = versions
            log.info("server certificates reloaded", extra={"fields": {"cert_file": self.cert_file}})
            return config

        return grpc.dynamic_ssl_server_credentials(self._server_config(), fetch,
                                                   require_client_authentication=True)

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        if self.plaintext:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.server_credentials())

    def channel_credentials(self) -> grpc.ChannelCredentials:
        cert, key, ca = self._material()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel(self, address: str, options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
        """A channel to `address`: host:port, or any gRPC target (dns:///name:port for a headless Service,
        ipv4:a:port,b:port). Calls go round robin over every address it resolves to: one long-lived
        connection would otherwise send everything to one replica."""
        options = [("grpc.lb_policy_name", "round_robin"), *options]
        if self.plaintext:
            return grpc.aio.insecure_channel(address, options=options)
        return ReloadingChannel(self, address, options)


PLAINTEXT = GrpcTls(plaintext=True)


class _MultiCallable:
    """A method of a ReloadingChannel: each call goes through the channel in use at that moment."""

    def __init__(self, owner: ReloadingChannel, kind: str, method: str, args: tuple, kwargs: dict) -> None:
        self._owner, self._kind, self._method, self._args, self._kwargs = owner, kind, method, args, kwargs
        self._made: tuple[grpc.aio.Channel, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if self._made is None or self._made[0] is not channel:
            self._made = (channel, getattr(channel, self._kind)(self._method, *self._args, **self._kwargs))
        return self._made[1](*args, **kwargs)


class ReloadingChannel(grpc.aio.Channel):
    """A secure channel that, once its certificate files change, sends new calls through a new channel
    made with them; the one replaced finishes its calls within a grace period, then closes."""

    def __init__(self, tls: GrpcTls, address: str, options: Sequence[tuple[str, object]] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tls, self._address, self._options, self._clock = tls, address, list(options), clock
        self._versions = tls._versions()
        self._checked = clock()
        self._channel = self._open()
        self._retiring: dict[asyncio.Task, grpc.aio.Channel] = {}

    def _open(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(self._address, self._tls.channel_credentials(), options=self._options)

    def current(self) -> grpc.aio.Channel:
        now = self._clock()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return self._channel
        self._checked = now
        versions = self._tls._versions()
        if versions == self._versions:
            return self._channel
        try:
            fresh = self._open()
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.warning("renewed certificates not usable yet; keeping the current ones",
                        extra={"fields": {"error": str(exc)}})
            return self._channel
        old, self._channel, self._versions = self._channel, fresh, versions
        log.info("client certificates reloaded", extra={"fields": {"address": self._address}})
        task = asyncio.get_running_loop().create_task(old.close(OLD_CHANNEL_GRACE_SECONDS))
        self._retiring[task] = old
        task.add_done_callback(lambda done: self._retiring.pop(done, None))
        return fresh

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _MultiCallable(self, "unary_unary", method, (request_serializer, response_deserializer), {})

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _MultiCallable(self, "unary_stream", method, (request_serializer, response_deserializer), {})

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _MultiCallable(self, "stream_unary", method, (request_serializer, response_deserializer), {})

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _MultiCallable(self, "stream_stream", method, (request_serializer, response_deserializer), {})

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        """Close within `grace`, replaced channels included, however long their own grace had left."""
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
        await asyncio.gather(self._channel.close(grace), *(old.close(grace) for _, old in retiring))

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb) -> None:
        await self.close()
