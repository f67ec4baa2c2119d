"""Billing settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pgkit.partitions import Retention
from servicekit.env import ConfigError, Secret, env_float, env_int, env_str
from servicekit.tls import GrpcTls

from billing.domain.scope import StripeScope


def _stripe_scope(environ: Mapping[str, str]) -> StripeScope:
    mode = environ.get("STRIPE_LIVEMODE", "").strip().lower()
    if mode not in ("", "true", "false"):
        raise ConfigError(f"STRIPE_LIVEMODE must be true, false or unset, not {mode!r}")
    accounts = environ.get("STRIPE_CONNECT_ACCOUNTS", "").strip()
    return StripeScope(
        livemode=None if not mode else mode == "true",
        connected_accounts=None if accounts == "*" else frozenset(a.strip() for a in accounts.split(",") if a.strip()),
    )


@dataclass(frozen=True)
class Settings:
    database_url: Secret
    listen_addr: str
    notifier_addr: str
    grpc_tls: GrpcTls | None  # None for the commands that neither serve nor dial gRPC
    policy_file: str | None
    health_port: int
    migrations_dir: str | None
    metrics_port: int
    db_pool_size: int
    shutdown_grace_seconds: float
    log_level: str
    stripe_api_key: Secret | None  # recovering events from Stripe's list; serving reads plans' names with it
    stripe_api_base: str
    stripe_scope: StripeScope
    razorpay_key_id: str | None = None  # recovering Razorpay's entities; serving reads plans' names with it
    razorpay_key_secret: Secret | None = None
    razorpay_api_base: str = "https://api.razorpay.com"
    metrics_pushgateway: str | None = None  # where recovery runs push what they did (host:port or URL)
    retention: Retention = Retention()

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, serving: bool = True) -> Settings:
        """Unless `serving` (migrations, retention, recovery, the set-up check) the TLS settings are not
        read: those pods hold no certificate or key of billing's."""
        billing_addr = env_str(environ, "BILLING_ADDR", "127.0.0.1:50051")
        return cls(
            database_url=Secret(env_str(environ, "DATABASE_URL")),
            # Clients dial BILLING_ADDR; in a container the server binds all interfaces instead.
            listen_addr=env_str(environ, "BILLING_LISTEN_ADDR", billing_addr),
            notifier_addr=env_str(environ, "NOTIFIER_ADDR", "127.0.0.1:50052"),
            grpc_tls=GrpcTls.from_env(environ) if serving else None,
            # Who may call which RPC; required with mTLS (servicekit.authz has the format).
            policy_file=environ.get("GRPC_POLICY_FILE", "").strip() or None,
            # Plaintext health-only port for Kubernetes gRPC probes when the main port needs mTLS; 0 = off.
            health_port=env_int(environ, "GRPC_HEALTH_PORT", 0),
            migrations_dir=environ.get("MIGRATIONS_DIR") or None,
            metrics_port=env_int(environ, "METRICS_PORT", 0),
            db_pool_size=env_int(environ, "BILLING_DB_POOL_SIZE", 10, minimum=2),
            shutdown_grace_seconds=env_float(environ, "SHUTDOWN_GRACE_SECONDS", 20.0),
            log_level=env_str(environ, "LOG_LEVEL", "INFO"),
            stripe_api_key=Secret(key) if (key := env_str(environ, "STRIPE_API_KEY", "")) else None,
            stripe_api_base=env_str(environ, "STRIPE_API_BASE", "https://api.stripe.com"),
            # Events of the other mode, or of connected accounts not listed ("*": all), are kept and ignored.
            stripe_scope=_stripe_scope(environ),
            razorpay_key_id=env_str(environ, "RAZORPAY_KEY_ID", "") or None,
            razorpay_key_secret=Secret(k) if (k := env_str(environ, "RAZORPAY_KEY_SECRET", "")) else None,
            razorpay_api_base=env_str(environ, "RAZORPAY_API_BASE", "https://api.razorpay.com"),
            metrics_pushgateway=env_str(environ, "METRICS_PUSHGATEWAY", "") or None,
            retention=Retention(days=env_int(environ, "RETENTION_DAYS", 90, minimum=1),
                                key_days=env_int(environ, "KEY_RETENTION_DAYS", 35, minimum=35),
                                ahead_weeks=env_int(environ, "PARTITIONS_AHEAD_WEEKS", 8, minimum=2)),
        )
