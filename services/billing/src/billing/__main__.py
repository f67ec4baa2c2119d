"""Billing entry point: `python -m billing migrate` or `python -m billing serve` (the default)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from datetime import UTC, datetime

import uvloop
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc
from servicekit.env import ConfigError
from servicekit.grpcserve import listen, new_server, serve_until_signalled
from servicekit.logs import configure_logging, run_logged
from servicekit.metrics import serve_metrics
from servicekit.worker import PollingWorker

from billing.adapters.migrations import DEFAULT_DIRECTORY, migrate
from billing.adapters.outbox import GrpcNotifier, PostgresOutbox
from billing.adapters.postgres import PostgresEventStore, create_pool
from billing.adapters.queries import PostgresBillingReader
from billing.api.metrics import record_ingest, refresh_gauges
from billing.api.servicer import BillingServicer
from billing.config import Settings
from billing.domain.dispatch import DispatchEmails
from billing.domain.ingest import IngestEvents
from billing.domain.queries import BillingApi

log = logging.getLogger("billing")

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name


async def serve(settings: Settings) -> None:
    pool = await create_pool(settings.database_url.value, min_size=2, max_size=settings.db_pool_size)
    notifier_channel = settings.grpc_tls.channel(settings.notifier_addr)
    try:
        dispatch = DispatchEmails(PostgresOutbox(pool), GrpcNotifier(notifier_channel),
                                  clock=lambda: datetime.now(UTC))
        outbox_worker = PollingWorker(dispatch.run_once, dispatch.next_due_in, name="email-outbox")
        server = new_server()
        ingest = IngestEvents(PostgresEventStore(pool), on_emails_committed=outbox_worker.wake,
                              on_applied=record_ingest)
        reader = PostgresBillingReader(pool)
        api = BillingApi(reader, ingest, on_emails_queued=outbox_worker.wake)
        retry_worker = PollingWorker(api.retry_due, api.next_retry_in, name="event-retries")
        billing_pb2_grpc.add_BillingServiceServicer_to_server(BillingServicer(ingest, api), server)
        health = listen(server, settings.listen_addr, SERVICE_NAME, settings.grpc_tls)
        log.info("billing listening", extra={"fields": {"addr": settings.listen_addr,
                                                        "notifier_addr": settings.notifier_addr}})
        outbox_worker.start()
        retry_worker.start()
        serve_metrics(settings.metrics_port)
        gauges = asyncio.get_running_loop().create_task(refresh_gauges(reader.backlog))

        async def stop_workers() -> None:
            gauges.cancel()
            await asyncio.gather(retry_worker.stop(settings.shutdown_grace_seconds),
                                 outbox_worker.stop(settings.shutdown_grace_seconds))

        await serve_until_signalled(server, health, [SERVICE_NAME], settings.shutdown_grace_seconds,
                                    on_draining=stop_workers, health_port=settings.health_port)
    finally:
        await notifier_channel.close()
        await pool.close()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "serve"
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"billing: configuration error: {exc}", file=sys.stderr)
        return 2
    if command not in ("serve", "migrate"):
        print(f"usage: python -m billing [serve|migrate], not {command!r}", file=sys.stderr)
        return 2
    configure_logging("billing", settings.log_level)
    if command == "migrate":
        directory = Path(settings.migrations_dir) if settings.migrations_dir else DEFAULT_DIRECTORY
        return run_logged(log, lambda: asyncio.run(migrate(settings.database_url.value, directory)))
    return run_logged(log, lambda: uvloop.run(serve(settings)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
