"""Notifier settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pgkit.partitions import Retention
from servicekit.env import ConfigError, Secret, env_float, env_int, env_str
from servicekit.tls import GrpcTls


@dataclass(frozen=True)
class Settings:
    database_url: Secret
    listen_addr: str
    grpc_tls: GrpcTls | None  # None, like smtp_host, for the commands that only work on the database
    policy_file: str | None
    health_port: int
    migrations_dir: str | None
    metrics_port: int
    smtp_host: str | None
    smtp_port: int
    smtp_user: str | None
    smtp_password: Secret | None
    smtp_tls: str
    smtp_timeout_seconds: float
    smtp_ca_file: str | None
    smtp_connections: int
    render_workers: int
    from_email: str
    max_attempts: int
    retry_for_seconds: int
    db_pool_size: int
    shutdown_grace_seconds: float
    log_level: str
    retention: Retention = Retention()
    dkim: tuple[str, str, str] | None = None  # domain, selector, private key file: sign outgoing mail

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, serving: bool = True) -> Settings:
        """Unless `serving` (migrations, retention) the TLS and mail settings are not read: those pods hold
        no certificate, key or mail password."""
        notifier_addr = env_str(environ, "NOTIFIER_ADDR", "127.0.0.1:50052")
        tls = env_str(environ, "SMTP_TLS", "starttls").lower()
        if tls not in ("starttls", "tls", "none"):
            raise ConfigError(f"SMTP_TLS must be starttls, tls or none, not {tls!r}")
        password = environ.get("SMTP_PASSWORD", "") if serving else ""
        return cls(
            database_url=Secret(env_str(environ, "DATABASE_URL")),
            listen_addr=env_str(environ, "NOTIFIER_LISTEN_ADDR", notifier_addr),
            grpc_tls=GrpcTls.from_env(environ) if serving else None,
            # Who may call which RPC; required with mTLS (servicekit.authz has the format).
            policy_file=environ.get("GRPC_POLICY_FILE", "").strip() or None,
            # Plaintext health-only port for Kubernetes gRPC probes when the main port needs mTLS; 0 = off.
            health_port=env_int(environ, "GRPC_HEALTH_PORT", 0),
            migrations_dir=environ.get("MIGRATIONS_DIR") or None,
            metrics_port=env_int(environ, "METRICS_PORT", 0),
            smtp_host=env_str(environ, "SMTP_HOST") if serving else None,
            smtp_port=env_int(environ, "SMTP_PORT", 587, minimum=1),
            smtp_user=environ.get("SMTP_USER") or None,
            smtp_password=Secret(password) if password else None,
            smtp_tls=tls,
            smtp_timeout_seconds=env_float(environ, "SMTP_TIMEOUT_SECONDS", 15.0, minimum=0.1),
            smtp_ca_file=environ.get("SMTP_CA_FILE") or None,
            smtp_connections=env_int(environ, "SMTP_CONNECTIONS", 16, minimum=1),
            # Processes that validate and render accepted emails; 0 renders on the event loop.
            render_workers=env_int(environ, "NOTIFIER_RENDER_WORKERS", 1, minimum=0),
            from_email=env_str(environ, "FROM_EMAIL", "noreply@boxcostpro.com"),
            max_attempts=env_int(environ, "EMAIL_MAX_ATTEMPTS", 10, minimum=1),
            retry_for_seconds=env_int(environ, "EMAIL_RETRY_FOR_SECONDS", 86400, minimum=1),
            db_pool_size=env_int(environ, "NOTIFIER_DB_POOL_SIZE", 10, minimum=2),
            shutdown_grace_seconds=env_float(environ, "SHUTDOWN_GRACE_SECONDS", 20.0),
            log_level=env_str(environ, "LOG_LEVEL", "INFO"),
            retention=Retention(days=env_int(environ, "RETENTION_DAYS", 90, minimum=1),
                                key_days=env_int(environ, "KEY_RETENTION_DAYS", 35, minimum=35),
                                ahead_weeks=env_int(environ, "PARTITIONS_AHEAD_WEEKS", 8, minimum=2)),
            dkim=_dkim(environ),
        )


def _dkim(environ: Mapping[str, str]) -> tuple[str, str, str] | None:
    names = ("DKIM_DOMAIN", "DKIM_SELECTOR", "DKIM_PRIVATE_KEY_FILE")
    values = tuple(environ.get(n, "").strip() for n in names)
    if not any(values):
        return None
    if not all(values):
        raise ConfigError(f"set {', '.join(names)} together, or none of them (no signing)")
    return values
