"""Billing entry point: `python -m billing serve` (the default), `migrate`, or `recover-stripe-events`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvloop
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc
from pgkit import partitions
from servicekit.authz import Policy, server_policy
from servicekit.env import ConfigError
from servicekit.grpcserve import listen, new_server, serve_until_signalled
from servicekit.logs import configure_logging, run_logged
from servicekit.metrics import serve_metrics
from servicekit.worker import PollingWorker

from billing.adapters.migrations import DEFAULT_DIRECTORY, migrate
from billing.adapters import retention
from billing.adapters.outbox import GrpcNotifier, PostgresOutbox
from billing.adapters.postgres import PostgresEventStore, create_pool
from billing.adapters.reader import PostgresBillingReader
from billing.api.metrics import push_recovery, record_ingest, refresh_gauges
from billing.api.servicer import BillingServicer
from billing.config import Settings
from billing.domain.dispatch import DispatchEmails
from billing.domain.ingest import IngestEvents
from billing.domain.internal_api import InternalApi
from billing.domain.model import Provider
from billing.domain.plans import PlanCatalog
from billing.domain.recovery import EventFeed, InvalidRange, RecoverEvents

log = logging.getLogger("billing")

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name


async def serve(settings: Settings, authz: Policy | None) -> None:
    assert settings.grpc_tls is not None, "read for serving"
    pool = await create_pool(settings.database_url.value, min_size=2, max_size=settings.db_pool_size)
    notifier_channel = settings.grpc_tls.channel(settings.notifier_addr)
    plan_sources = _plan_sources(settings)
    try:
        await partitions.prepare(pool, retention.TABLES, settings.retention, datetime.now(UTC))
        reader = PostgresBillingReader(pool)
        plans = PlanCatalog(reader, plan_sources)
        dispatch = DispatchEmails(PostgresOutbox(pool), GrpcNotifier(notifier_channel),
                                  clock=lambda: datetime.now(UTC), profiles=reader, plans=plans)
        outbox_worker = PollingWorker(dispatch.run_once, dispatch.next_due_in, name="email-outbox")
        server = new_server(authz)
        ingest = IngestEvents(PostgresEventStore(pool), on_emails_committed=outbox_worker.wake,
                              on_applied=record_ingest, stripe_scope=settings.stripe_scope)
        api = InternalApi.wired(reader, ingest, on_emails_queued=outbox_worker.wake, plans=plans)
        retry_worker = PollingWorker(api.events.retry_due, api.events.next_retry_in, name="event-retries")
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
        for source in plan_sources.values():
            await source.close()
        await pool.close()


def _plan_sources(settings: Settings) -> dict:
    """The providers whose API billing may ask for a plan's name: those it has a key for. The SDKs are
    imported only then: they take time and memory to import."""
    sources: dict = {}
    if settings.stripe_api_key is None and not settings.razorpay_key_id:
        return sources
    from billing.adapters.plan_sources import RazorpayPlans, StripePlans

    if settings.stripe_api_key is not None:
        sources[Provider.STRIPE] = StripePlans(settings.stripe_api_key.value, api_base=settings.stripe_api_base)
    if settings.razorpay_key_id and settings.razorpay_key_secret is not None:
        sources[Provider.RAZORPAY] = RazorpayPlans(settings.razorpay_key_id, settings.razorpay_key_secret.value,
                                                   api_base=settings.razorpay_api_base)
    return sources


async def keep_for_retention(settings: Settings) -> None:
    pool = await create_pool(settings.database_url.value, min_size=1, max_size=1)
    try:
        done = await partitions.apply_retention(pool, retention.TABLES, retention.KEYS, settings.retention,
                                                 datetime.now(UTC))
    finally:
        await pool.close()
    log.info("retention applied", extra={"fields": done})


async def recover_events(settings: Settings, provider: str, since: datetime, until: datetime | None,
                         every: bool) -> int:
    """Take in what a provider reported in a time range that billing never got: 0 when the whole range was
    read, 1 when it stopped early (run it again from where it says), 2 for a range with nothing to read."""
    # Imported here: the SDKs take time and memory to import, and serving never uses them.
    feed: EventFeed
    if provider == "stripe":
        from billing.adapters.stripe_api import StripeEventFeed

        assert settings.stripe_api_key is not None
        feed = StripeEventFeed(settings.stripe_api_key.value, api_base=settings.stripe_api_base)
    else:
        from billing.adapters.razorpay_api import RazorpayEntityFeed

        assert settings.razorpay_key_id and settings.razorpay_key_secret is not None
        feed = RazorpayEntityFeed(settings.razorpay_key_id, settings.razorpay_key_secret.value,
                                  api_base=settings.razorpay_api_base)
    request_id = f"recovery-{uuid.uuid4().hex[:16]}"
    pool = await create_pool(settings.database_url.value, min_size=1, max_size=2)
    try:
        # The serving billing's outbox worker sends the emails these events ask for, on its next look.
        recovery = RecoverEvents(feed, IngestEvents(PostgresEventStore(pool), stripe_scope=settings.stripe_scope),
                                 clock=lambda: datetime.now(UTC))
        report = await recovery.execute(since, until, undelivered_only=not every, request_id=request_id)
    except InvalidRange as exc:
        log.error("nothing to recover", extra={"fields": {"error": str(exc)}})
        return 2
    finally:
        await feed.close()
        await pool.close()
    fields = {"provider": provider, "request_id": request_id, "from": report.start.isoformat(),
              "until": report.end.isoformat(),
              "only_undelivered": not every, "listed": report.listed, "skipped_types_not_handled": report.skipped,
              **{outcome.value: count for outcome, count in sorted(report.outcomes.items())},
              "failed_event_ids": report.failed_event_ids[:100]}
    if settings.metrics_pushgateway:
        try:
            push_recovery(settings.metrics_pushgateway, provider, report)
        except OSError as exc:  # the run's work is done and logged: a missing figure is not a failed run
            log.warning("recovery figures not pushed", extra={"fields": {"error": str(exc)}})
    if not report.complete:
        assert report.resume_from is not None
        log.error(f"{provider} event recovery stopped early; run it again with --since set to resume_from",
                  extra={"fields": {**fields, "error": report.error, "resume_from": report.resume_from.isoformat()}})
        return 1
    if provider == "stripe" and report.taken_in:  # webhooks had not brought them: worth a look at why
        log.warning("stripe events recovered, some that no webhook had delivered", extra={"fields": fields})
    elif provider == "stripe":
        log.info("stripe events recovered, none missing", extra={"fields": fields})
    else:  # Razorpay's entities are given under ids of recovery's own: new to billing, changing nothing known
        log.info("razorpay entities recovered", extra={"fields": fields})
    return 0


async def check_setup(settings: Settings, url: str, fix: bool) -> int:
    """Report whether Stripe's webhook endpoint for `url` sends billing what it needs, and print Razorpay's
    checklist: 0 when Stripe's is complete (or was made so with `fix`), 1 when it is not, 2 when Stripe
    could not be asked."""
    from billing.adapters.stripe_api import StripeRefused, StripeWebhookEndpoints
    from billing.domain.setup_check import RAZORPAY_CHECKLIST, STRIPE_NEEDED, check_stripe_endpoint

    assert settings.stripe_api_key is not None
    endpoints = StripeWebhookEndpoints(settings.stripe_api_key.value, api_base=settings.stripe_api_base)
    try:
        report = check_stripe_endpoint(await endpoints.list(), url)
        print(f"Stripe webhook endpoint for {url}:")
        if report.endpoint_id is None:
            print("  none sends to this URL")
        else:
            print(f"  {report.endpoint_id}, {'enabled' if report.enabled else 'DISABLED'}, "
                  f"API version {report.api_version or 'the account default'}")
        for event_type, loss in report.missing:
            print(f"  missing  {event_type}" + (f"  -- {loss}" if loss else ""))
        for event_type in report.ignored:
            print(f"  ignored  {event_type}  (sent, but billing does not act on it)")
        if fix and not report.complete:
            if report.endpoint_id is None:
                made = await endpoints.create(url, list(STRIPE_NEEDED))
                print(f"  created {made['id']}; its signing secret, shown this once: {made.get('secret')}")
                print("  add it to STRIPE_WEBHOOK_SECRET (comma-separated beside the current one while rotating)")
            else:
                sent = sorted(set(STRIPE_NEEDED) | set(report.ignored))
                await endpoints.update(report.endpoint_id, sent)
                print(f"  updated {report.endpoint_id}: enabled, sending every type billing needs")
            report = check_stripe_endpoint(await endpoints.list(), url)
        print("  complete" if report.complete else "  INCOMPLETE: run again with --fix, or change it in Stripe's "
              "dashboard")
    except StripeRefused as exc:
        print(f"billing: {exc}", file=sys.stderr)
        return 2
    finally:
        await endpoints.close()
    print("\nRazorpay has no API for most accounts' webhooks: in its dashboard (Settings > Webhooks), "
          "tick these events for the endpoint:")
    for event_type in RAZORPAY_CHECKLIST:
        print(f"  [ ] {event_type}")
    return 0 if report.complete else 1


def _aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} names no time zone: add Z or an offset, as in 2026-11-20T00:00:00Z")
    return value


_AGO = re.compile(r"(\d+)([hd])")


def _time_or_ago(text: str) -> datetime:
    """A time, or a span before now: `72h`, `3d` (for a schedule that looks back over Stripe's retries)."""
    ago = _AGO.fullmatch(text)
    if ago is None:
        return _aware_time(text)
    return datetime.now(UTC) - timedelta(**{"hours" if ago[2] == "h" else "days": int(ago[1])})


def _range_arguments(command: argparse.ArgumentParser, span_example: str) -> None:
    command.add_argument("--since", required=True, type=_time_or_ago,
                         help=f"start of the range: ISO 8601 with a zone, or a span before now such as {span_example}")
    command.add_argument("--until", type=_aware_time, help="end of the range (default: now)")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m billing")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve billing's gRPC API (the default)")
    commands.add_parser("migrate", help="apply billing's database migrations")
    commands.add_parser("retention", help="make the weeks ahead and drop events and outbox emails past RETENTION_DAYS")
    recover = commands.add_parser(
        "recover-stripe-events", help="take in the Stripe events of a time range that billing never got",
        description="Reads Stripe's list of events (it keeps 30 days) with STRIPE_API_KEY and applies those billing "
                    "acts on, oldest first, as if their webhooks had just come. Events billing holds are duplicates "
                    "and change nothing: safe to run again, and alongside live webhooks.")
    _range_arguments(recover, "72h or 3d")
    recover.add_argument("--all", action="store_true",
                         help="every event of the range, not only those Stripe has not delivered to every endpoint "
                              "(after restoring the database from a backup)")
    razorpay = commands.add_parser(
        "recover-razorpay-events", help="take in the Razorpay payments, orders, refunds and subscriptions of a "
                                        "time range that billing never got",
        description="Lists, with RAZORPAY_KEY_ID and RAZORPAY_KEY_SECRET, the payments, orders, refunds, "
                    "subscriptions and invoices created in the range, and applies each as the event reporting its "
                    "state (a subscription's charge with its subscription). Running it again, or after the "
                    "webhooks came, changes nothing.")
    _range_arguments(razorpay, "48h")
    check = commands.add_parser(
        "check-setup", help="check that the providers' webhook set-up sends billing what it needs",
        description="Reads Stripe's webhook endpoints with STRIPE_API_KEY and reports, for the given URL, whether "
                    "the endpoint exists and is enabled, which event types billing needs that it does not send (and "
                    "what each costs), which it sends that billing ignores, and its API version. Prints the "
                    "checklist of Razorpay's events to tick. Exit 0: complete; 1: not; 2: Stripe refused.")
    check.add_argument("--url", required=True, help="the gateway's public Stripe URL, .../webhooks/stripe")
    check.add_argument("--fix", action="store_true",
                       help="create the endpoint, or enable it and add the missing types (prints a new secret once)")
    return parser.parse_args(argv[1:])


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    try:
        settings = Settings.from_env(os.environ, serving=args.command in (None, "serve"))
        if args.command == "recover-stripe-events" and settings.stripe_api_key is None:
            raise ConfigError("STRIPE_API_KEY is required to read Stripe's list of events")
        if args.command == "recover-razorpay-events" and not (settings.razorpay_key_id and settings.razorpay_key_secret):
            raise ConfigError("RAZORPAY_KEY_ID and RAZORPAY_KEY_SECRET are required to read Razorpay's payments")
        if args.command == "check-setup" and settings.stripe_api_key is None:
            raise ConfigError("STRIPE_API_KEY is required to read Stripe's webhook endpoints")
        authz = (server_policy(settings.grpc_tls.plaintext, settings.policy_file, [billing_pb2.DESCRIPTOR])
                 if settings.grpc_tls else None)
    except ConfigError as exc:
        print(f"billing: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("billing", settings.log_level)
    if args.command == "migrate":
        directory = Path(settings.migrations_dir) if settings.migrations_dir else DEFAULT_DIRECTORY
        return run_logged(log, lambda: asyncio.run(migrate(settings.database_url.value, directory)))
    if args.command == "check-setup":
        return run_logged(log, lambda: asyncio.run(check_setup(settings, args.url, args.fix)))
    if args.command == "retention":
        return run_logged(log, lambda: asyncio.run(keep_for_retention(settings)))
    if args.command in ("recover-stripe-events", "recover-razorpay-events"):
        provider = args.command.split("-")[1]
        return run_logged(log, lambda: asyncio.run(recover_events(settings, provider, args.since, args.until,
                                                                  getattr(args, "all", False))))
    return run_logged(log, lambda: uvloop.run(serve(settings, authz)))


def run() -> None:
    """The image's entrypoint (the `boxcost-service` command)."""
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
