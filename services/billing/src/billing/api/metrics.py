"""Billing's Prometheus metrics. Label values are bounded: providers, handled event types (others are
"other"), outcomes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway

from billing.domain.providers import razorpay_events, stripe_events
from billing.domain.events import Attention, IncomingEvent, IngestResult, Outcome
from billing.domain.model import Provider
from billing.domain.recovery import RecoveryReport

log = logging.getLogger(__name__)

EVENTS = Counter("billing_webhook_events_total", "Webhook events ingested, by provider, type and outcome.",
                 ["provider", "event_type", "outcome"])
BATCH_SIZE = Histogram("billing_ingest_batch_events", "Events per batch applied (group commit size): an "
                       "IngestEvents call, a round of automatic retries or an operator's replay.",
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
OUTBOX_BACKLOG = Gauge("billing_email_outbox_pending", "Emails waiting in the outbox for the notifier.")
OUTBOX_AGE = Gauge("billing_email_outbox_oldest_seconds", "Age of the oldest email waiting in the outbox.")
FAILED_EVENTS = Gauge("billing_failed_events", "Failed webhook events still being retried automatically.")
DEAD_LETTER = Gauge("billing_dead_letter_events", "Failed webhook events whose retries ran out.")
OUTBOX_REFUSED = Gauge("billing_email_outbox_refused", "Customer emails the notifier refused, kept in the outbox.")
UNATTRIBUTED = Gauge("billing_unattributed_payments", "Payments received that no tenant owns.")
ATTENTION = Counter("billing_finance_attention_total", "Payments finance has to act on, by provider and reason: "
                    "dispute_opened (evidence due by the provider's deadline), refund_failed (the customer is "
                    "still owed the money).", ["provider", "reason"])

_HANDLED = {
    Provider.STRIPE: set(stripe_events.HANDLERS),
    Provider.RAZORPAY: set(razorpay_events.HANDLED_TYPES),
}


@lru_cache(maxsize=1024)  # bounded: providers x types x outcomes; labels() takes a lock and checks each call
def _events_counter(provider: Provider, event_type: str, outcome: Outcome) -> Counter:
    return EVENTS.labels(provider.value, event_type if event_type in _HANDLED[provider] else "other", outcome.value)


def record_ingest(events: list[IncomingEvent], results: list[IngestResult]) -> None:
    BATCH_SIZE.observe(len(events))
    for event, result in zip(events, results, strict=True):
        _events_counter(event.provider, event.event_type, result.outcome).inc()
        for reason in result.attention:
            _attention_counter(event.provider, reason).inc()


@lru_cache(maxsize=16)
def _attention_counter(provider: Provider, reason: Attention) -> Counter:
    return ATTENTION.labels(provider.value, reason.value)


async def refresh_gauges(read: Callable[[], Awaitable[dict[str, float]]], every_seconds: float = 15.0) -> None:
    """Keep the backlog gauges current (a cheap query on partial indexes) until cancelled."""
    while True:
        try:
            counts = await read()
            OUTBOX_BACKLOG.set(counts["outbox_pending"])
            OUTBOX_AGE.set(counts["outbox_oldest_seconds"])
            FAILED_EVENTS.set(counts["failed_retrying"])
            DEAD_LETTER.set(counts["dead_letter"])
            OUTBOX_REFUSED.set(counts["outbox_refused"])
            UNATTRIBUTED.set(counts["unattributed_payments"])
        except Exception:  # metrics must never take the service down
            log.warning("could not refresh gauges", exc_info=True)
        await asyncio.sleep(every_seconds)


def push_recovery(gateway: str, provider: str, report: RecoveryReport) -> None:
    """What a recovery run found and applied, pushed to a Prometheus Pushgateway: a CronJob's run ends
    before any scrape could read it. Replaces the last run's figures for the provider."""
    registry = CollectorRegistry()
    events = Gauge("billing_recovery_events", "Events the last recovery run listed, took and applied, by outcome.",
                   ["provider", "outcome"], registry=registry)
    events.labels(provider, "listed").set(report.listed)
    events.labels(provider, "skipped").set(report.skipped)
    for outcome in Outcome:
        events.labels(provider, outcome.value).set(report.outcomes[outcome])
    Gauge("billing_recovery_complete", "1 when the last recovery run read its whole range.", ["provider"],
          registry=registry).labels(provider).set(1 if report.complete else 0)
    Gauge("billing_recovery_last_run_timestamp_seconds", "When the last recovery run ended.", ["provider"],
          registry=registry).labels(provider).set_to_current_time()
    push_to_gateway(gateway, job="billing-recovery", registry=registry, grouping_key={"provider": provider},
                    timeout=10)
