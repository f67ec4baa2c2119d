"""Gateway settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.env import ConfigError, Secret, env_float, env_int, env_secrets, env_str
from servicekit.tls import GrpcTls

from gateway.domain.edge import Network, parse_networks


def _networks(environ: Mapping[str, str], name: str) -> tuple[Network, ...]:
    try:
        return parse_networks(environ.get(name, ""))
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


MAX_BODY_BYTES_LIMIT = 32 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    port: int
    host: str
    billing_addr: str
    grpc_tls: GrpcTls
    stripe_webhook_secrets: tuple[Secret, ...]
    razorpay_webhook_secrets: tuple[Secret, ...]
    tolerance_seconds: int
    max_body_bytes: int
    billing_timeout_seconds: float
    shutdown_grace_seconds: float
    log_level: str
    trusted_proxies: tuple[Network, ...] = ()
    auth_failures_per_minute: int = 30
    stripe_allowed_cidrs: tuple[Network, ...] = ()
    razorpay_allowed_cidrs: tuple[Network, ...] = ()
    body_timeout_seconds: float = 10.0
    metrics_port: int = 0
    billing_queue_max_bytes: int = 64 * 1024 * 1024
    header_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 60.0
    max_connections: int = 1024
    health_cache_seconds: float = 1.0
    reuse_port: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        settings = cls(
            port=env_int(environ, "GATEWAY_PORT", 8000),
            host=env_str(environ, "GATEWAY_HOST", "0.0.0.0"),
            billing_addr=env_str(environ, "BILLING_ADDR", "127.0.0.1:50051"),
            grpc_tls=GrpcTls.from_env(environ),
            stripe_webhook_secrets=env_secrets(environ, "STRIPE_WEBHOOK_SECRET"),
            razorpay_webhook_secrets=env_secrets(environ, "RAZORPAY_WEBHOOK_SECRET"),
            tolerance_seconds=env_int(environ, "WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1),
            # Stripe's largest events are a few hundred KiB; 1 MiB leaves room and bounds abuse.
            max_body_bytes=env_int(environ, "WEBHOOK_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            billing_timeout_seconds=env_float(environ, "BILLING_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            # Events waiting for billing, in payload bytes: a bound on memory when billing is slower than
            # the providers' deliveries. Past it webhooks get 503 until the queue drains.
            billing_queue_max_bytes=env_int(environ, "BILLING_QUEUE_MAX_BYTES", 64 * 1024 * 1024, minimum=1),
            # Providers send a body at once; a client that trickles one only holds a connection open.
            body_timeout_seconds=env_float(environ, "WEBHOOK_BODY_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            shutdown_grace_seconds=env_float(environ, "SHUTDOWN_GRACE_SECONDS", 20.0),
            log_level=env_str(environ, "LOG_LEVEL", "INFO"),
            trusted_proxies=_networks(environ, "TRUSTED_PROXIES"),
            # A request head takes one packet from a provider; a client that trickles one only holds a slot.
            header_timeout_seconds=env_float(environ, "WEBHOOK_HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            keepalive_timeout_seconds=env_float(environ, "WEBHOOK_KEEPALIVE_TIMEOUT_SECONDS", 60.0, minimum=0.1),
            # Past this many open connections, new ones get 503 and are closed at once.
            max_connections=env_int(environ, "WEBHOOK_MAX_CONNECTIONS", 1024, minimum=1),
            # Health on the public port reuses billing's answer this long, so a flood of probes is not a flood of RPCs.
            health_cache_seconds=env_float(environ, "HEALTH_CACHE_SECONDS", 1.0, minimum=0.0),
            # Several gateway processes on one host share the public port (SO_REUSEPORT): the kernel
            # spreads new connections over them.
            reuse_port=environ.get("GATEWAY_REUSE_PORT", "").strip().lower() in ("1", "true", "yes"),
            auth_failures_per_minute=env_int(environ, "AUTH_FAILURES_PER_MINUTE", 30, minimum=1),
            stripe_allowed_cidrs=_networks(environ, "STRIPE_ALLOWED_CIDRS"),
            razorpay_allowed_cidrs=_networks(environ, "RAZORPAY_ALLOWED_CIDRS"),
            # Off the webhook port, which faces the internet: operational figures are not for the public.
            metrics_port=env_int(environ, "METRICS_PORT", 0),
        )
        if "TRUSTED_PROXY_HOPS" in environ:
            raise ConfigError("TRUSTED_PROXY_HOPS is replaced by TRUSTED_PROXIES: the proxies' networks, "
                              "so that X-Forwarded-For counts only when a trusted proxy sent it")
        if settings.max_body_bytes > MAX_BODY_BYTES_LIMIT:  # one event must fit in a gRPC message to billing
            raise ConfigError(f"WEBHOOK_MAX_BODY_BYTES must be at most {MAX_BODY_BYTES_LIMIT}")
        if not settings.stripe_webhook_secrets and not settings.razorpay_webhook_secrets:
            raise ConfigError("set STRIPE_WEBHOOK_SECRET and/or RAZORPAY_WEBHOOK_SECRET")
        return settings
