"""Gateway entry point: read settings, configure logging, run the aiohttp app until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys

import uvloop
from aiohttp import web
from servicekit.env import ConfigError
from servicekit.gctune import settle_after_startup
from servicekit.logs import configure_logging, run_logged
from servicekit.metrics import serve_metrics

from gateway.adapters.billing_client import BatchingBillingClient, open_channel
from gateway.config import Settings
from gateway.web.app import connection_options, create_app
from gateway.web.server import ConnectionLimits, serve

log = logging.getLogger("gateway")


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"webhook-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("webhook-gateway", settings.log_level)
    return run_logged(log, lambda: _serve(settings))


def _serve(settings: Settings) -> None:
    log.info("webhook gateway listening", extra={"fields": {"host": settings.host, "port": settings.port,
                                                            "billing_addr": settings.billing_addr}})
    def connect_billing() -> BatchingBillingClient:
        return BatchingBillingClient(open_channel(settings.billing_addr, settings.grpc_tls),
                                     timeout_seconds=settings.billing_timeout_seconds,
                                     max_queued_bytes=settings.billing_queue_max_bytes)

    app = create_app(settings, connect_billing=connect_billing)

    async def settle(_app: web.Application) -> None:
        settle_after_startup()

    app.on_startup.append(settle)
    serve_metrics(settings.metrics_port)
    # On SIGTERM it stops accepting, lets in-flight webhooks finish for the grace period, then runs the
    # cleanup contexts (closing the billing channel) in reverse order.
    limits = ConnectionLimits(settings.header_timeout_seconds, settings.keepalive_timeout_seconds,
                              settings.max_connections)
    uvloop.run(serve(app, settings.host, settings.port, settings.shutdown_grace_seconds, limits,
                     connection_options(), reuse_port=settings.reuse_port))


def run() -> None:
    """The image's entrypoint (the `boxcost-service` command)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
