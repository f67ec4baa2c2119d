"""Recovering the Stripe events billing never got, from Stripe's list, on an in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from billing.domain.events import Outcome, TransientStoreError
from billing.domain.ingest import IngestEvents
from billing.domain.recovery import InvalidRange, RecoverEvents
from trigger.flows import FLOWS

from tests.fakes import FakeStripeFeed, InMemoryEventStore
from tests.support import incoming, state

NOW = datetime.now(UTC)


def clock() -> datetime:
    return NOW


def subscription_events() -> list[dict]:
    events = FLOWS["stripe-subscription"].build("t1", "u1")
    # A type billing does not act on, as Stripe's list has many of (a webhook endpoint is subscribed to
    # the types it wants; the list has every type).
    events.append({**events[0], "id": "evt_customer_created", "type": "customer.created",
                   "created": max(e["created"] for e in events)})
    return events


async def ingested_in_order(events: list[dict]) -> InMemoryEventStore:
    store = InMemoryEventStore()
    for event in sorted(events, key=lambda e: e["created"]):
        if event["type"] != "customer.created":
            await IngestEvents(store).execute([incoming("stripe", event)])
    return store


def emails(store: InMemoryEventStore) -> list[tuple[str, str]]:
    return sorted((e.kind, e.to_email) for e in store.outbox.values())


async def test_recovery_applies_the_missed_events_as_a_timely_delivery_would_have():
    events = sorted(subscription_events(), key=lambda e: e["created"])
    delivered, missed = events[:len(events) // 2], events[len(events) // 2:]  # the endpoint was down since
    store = InMemoryEventStore()
    for event in delivered:
        if event["type"] != "customer.created":
            await IngestEvents(store).execute([incoming("stripe", event)])
    feed = FakeStripeFeed(events, undelivered=[e["id"] for e in missed])

    report = await RecoverEvents(feed, IngestEvents(store), clock=clock).execute(
        NOW - timedelta(hours=3), None, undelivered_only=True, request_id="recovery-1")

    expected = await ingested_in_order(events)
    assert state(store.transactions.values()) == state(expected.transactions.values())
    assert state(store.subscriptions.values()) == state(expected.subscriptions.values())
    assert emails(store) == emails(expected)
    assert set(store.events) == set(expected.events)  # the type billing does not act on is not kept
    assert report.complete and report.listed == len(missed)
    assert report.skipped == 1
    assert report.outcomes == {Outcome.PROCESSED: len(missed) - report.skipped}
    assert {store.events[k].event.request_id for k in store.events if k[1] in {e["id"] for e in missed}} == {
        "recovery-1"}


async def test_recovery_run_again_or_over_delivered_events_changes_nothing():
    events = subscription_events()
    store = await ingested_in_order(events)
    before = (state(store.transactions.values()), state(store.subscriptions.values()), dict(store.outbox))
    feed = FakeStripeFeed(events)

    for _ in range(2):
        report = await RecoverEvents(feed, IngestEvents(store), clock=clock).execute(
            NOW - timedelta(hours=3), None, undelivered_only=False, request_id="recovery-2")
        assert report.outcomes == {Outcome.DUPLICATE: len(events) - 1}

    assert (state(store.transactions.values()), state(store.subscriptions.values()), dict(store.outbox)) == before
    assert set(store.attempts.values()) == {1}


class RecordingIngest(IngestEvents):
    def __init__(self) -> None:
        super().__init__(InMemoryEventStore())
        self.calls: list[list[str]] = []

    async def execute(self, events):
        self.calls.append([e.event_id for e in events])
        return await super().execute(events)


async def test_recovery_hands_events_over_oldest_first_a_window_at_a_time_in_group_commits():
    events = FLOWS["stripe-payment"].build("t1", "u1") + FLOWS["stripe-card-retry"].build("t2", "u2")
    feed = FakeStripeFeed(events)
    ingest = RecordingIngest()
    start = datetime.fromtimestamp(min(e["created"] for e in events), UTC)

    await RecoverEvents(feed, ingest, clock=clock, window=timedelta(seconds=4), batch=3).execute(
        start, None, undelivered_only=False, request_id="r")

    oldest_first = [e["id"] for e in sorted(events, key=lambda e: e["created"])]
    assert [i for call in ingest.calls for i in call] == oldest_first
    assert max(len(call) for call in ingest.calls) == 3
    assert all(end - begin <= timedelta(seconds=4) for begin, end, _ in feed.asked)
    assert feed.asked[-1][1] == NOW


async def test_recovery_stops_at_a_window_it_cannot_read_and_names_where_to_resume():
    events = FLOWS["stripe-payment"].build("t1", "u1")
    times = sorted(datetime.fromtimestamp(e["created"], UTC) for e in events)
    feed = FakeStripeFeed(events)
    feed.unavailable_from = times[3]
    store = InMemoryEventStore()
    recovery = RecoverEvents(feed, IngestEvents(store), clock=clock, window=timedelta(seconds=1))

    report = await recovery.execute(times[0], None, undelivered_only=False, request_id="r")

    assert not report.complete and report.resume_from == times[3]
    assert "Stripe refused the list of events (500)" in (report.error or "")
    assert report.outcomes == {Outcome.PROCESSED: 3}  # the windows read before are applied and kept
    feed.unavailable_from = None
    resumed = await recovery.execute(report.resume_from, None, undelivered_only=False, request_id="r")
    assert resumed.complete and resumed.outcomes == {Outcome.PROCESSED: len(events) - 3}
    assert state(store.transactions.values()) == state((await ingested_in_order(events)).transactions.values())


async def test_recovery_reads_only_what_stripe_keeps_and_refuses_a_range_with_nothing_to_read():
    feed = FakeStripeFeed([])
    recovery = RecoverEvents(feed, IngestEvents(InMemoryEventStore()), clock=clock, window=timedelta(days=1))

    report = await recovery.execute(NOW - timedelta(days=45), None, undelivered_only=True, request_id="r")
    assert (report.start, report.end) == (NOW - timedelta(days=30), NOW)
    assert feed.asked[0] == (NOW - timedelta(days=30), NOW - timedelta(days=29), True)

    for since, until in [(NOW - timedelta(hours=1), NOW - timedelta(hours=2)),  # backwards
                         (NOW - timedelta(days=40), NOW - timedelta(days=31)),  # all of it gone at Stripe
                         (NOW + timedelta(hours=1), None)]:  # in the future
        with pytest.raises(InvalidRange, match="nothing to recover"):
            await recovery.execute(since, until, undelivered_only=True, request_id="r")


class UnreachableStore(InMemoryEventStore):
    """The database goes away for good after `units` transactions: every later one fails for a passing
    reason (a lost connection), retries included."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.units = units

    def unit(self, lock_keys):
        if self.units == 0:
            raise TransientStoreError("connection lost")
        self.units -= 1
        return super().unit(lock_keys)


async def test_recovery_stops_where_the_database_stayed_unreachable_having_kept_what_it_took():
    events = FLOWS["stripe-payment"].build("t1", "u1")
    times = sorted(datetime.fromtimestamp(e["created"], UTC) for e in events)
    store = UnreachableStore(units=2)  # one event a window, one transaction an event
    recovery = RecoverEvents(FakeStripeFeed(events), IngestEvents(store), clock=clock, window=timedelta(seconds=1))

    report = await recovery.execute(times[0], None, undelivered_only=False, request_id="r")

    assert not report.complete and report.resume_from == times[2] and "connection lost" in (report.error or "")
    assert report.outcomes == {Outcome.PROCESSED: 2} and len(store.events) == 2
