"""Stand-ins for adapters and services: in memory, for unit tests of the use cases, and a billing gRPC server
that records what the gateway's client sends it."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import grpc
from billing.domain.events import EventRecord, KnownEvents
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc
from billing.domain.model import Provider, SubRef, Subscription, Transaction, TxnRef
from billing.domain.working_set import WorkingSet
from billing.domain.recovery import FeedUnavailable, ListedEvent
from gateway.domain import receive as gateway


class InMemoryEventStore:
    """Atomic like a database transaction: a unit's writes land only if its block completes."""

    def __init__(self) -> None:
        self.transactions: dict[str, Transaction] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.events: dict[tuple[str, str], EventRecord] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.outbox: dict[str, object] = {}

    @asynccontextmanager
    async def unit(self, lock_keys: Sequence[str]) -> AsyncIterator[InMemoryUnit]:
        unit = InMemoryUnit(copy.copy(self.transactions), copy.copy(self.subscriptions),
                            copy.copy(self.events), copy.copy(self.attempts), copy.copy(self.outbox))
        unit.locked = list(lock_keys)
        yield unit
        self.transactions, self.subscriptions = unit.transactions, unit.subscriptions
        self.events, self.attempts, self.outbox = unit.events, unit.attempts, unit.outbox


class InMemoryUnit:
    def __init__(self, transactions, subscriptions, events, attempts, outbox) -> None:
        self.outbox = outbox
        self.transactions = transactions
        self.subscriptions = subscriptions
        self.events = events
        self.attempts = attempts
        self.locked: list[str] = []

    async def read(self, keys, txn_refs: Sequence[TxnRef], sub_refs: Sequence[SubRef], bodies=()):
        known = KnownEvents({k: self.events[k].status.value for k in keys if k in self.events},
                            {r.event.body_sha256: r.event.event_id for r in self.events.values()
                             if r.event.body_identifies and r.event.body_sha256 in bodies})
        ws = WorkingSet()
        ws.transactions = [t for t in self.transactions.values()
                           if any(t.matches(r) or t.adoptable_by(r) for r in txn_refs)
                           or (t.tenant_id is None and t.subscription in sub_refs)]
        ws.subscriptions = [s for s in self.subscriptions.values() if any(s.matches(r) for r in sub_refs)]
        return known, ws

    async def write(self, working_set: WorkingSet, records: Sequence[EventRecord]) -> None:
        for email in working_set.emails:
            self.outbox.setdefault(email.idempotency_key, email)
        for amendment in working_set.amendments:  # every email here waits unsent
            if (email := self.outbox.get(amendment.idempotency_key)) is not None:
                self.outbox[amendment.idempotency_key] = email.amended(amendment)
        self.subscriptions.update(working_set.changed_subscriptions)
        for merged in working_set.merged_transactions:
            self.transactions.pop(merged, None)
        self.transactions.update(working_set.changed_transactions)
        for record in records:
            self.events[record.event.key] = record
            self.attempts[record.event.key] = self.attempts.get(record.event.key, 0) + 1


class FakeStripeFeed:
    """Stripe's list of events, from events built by the trigger tool: those of a time range, oldest first,
    optionally only those not delivered; a window starting at or after `unavailable_from` cannot be read."""

    provider = Provider.STRIPE
    retention = timedelta(days=30)

    def __init__(self, events: Sequence[dict], undelivered: Collection[str] = ()) -> None:
        self.events = sorted(events, key=lambda e: e["created"])
        self.undelivered = set(undelivered)
        self.unavailable_from: datetime | None = None
        self.asked: list[tuple[datetime, datetime, bool]] = []

    async def events_between(self, start: datetime, end: datetime, *, undelivered_only: bool) -> list[ListedEvent]:
        self.asked.append((start, end, undelivered_only))
        if self.unavailable_from is not None and start >= self.unavailable_from:
            raise FeedUnavailable("Stripe refused the list of events (500): boom")
        return [ListedEvent(e["id"], e["type"], json.dumps(e).encode()) for e in self.events
                if start.timestamp() <= e["created"] < end.timestamp()
                and (not undelivered_only or e["id"] in self.undelivered)]


class RecordingBilling(billing_pb2_grpc.BillingServiceServicer):
    """Billing that records each call's events; a stalled one answers none until released, as in a database
    stall or a long lock wait."""

    def __init__(self, stalled: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        if not stalled:
            self.release.set()

    async def IngestEvents(self, request, context):
        self.calls.append([e.event_id for e in request.events])
        await self.release.wait()
        return billing_pb2.IngestEventsResponse(results=[
            billing_pb2.IngestResult(event_id=e.event_id, status=billing_pb2.INGEST_STATUS_PROCESSED,
                                     transaction_ids=[f"txn-of-{e.event_id}"])
            for e in request.events])


def gateway_event(event_id: str, request_id: str = "req-1", payload: bytes = b"{}") -> gateway.AuthenticatedEvent:
    """An event as the gateway hands it to its billing client, once its webhook is authenticated."""
    return gateway.AuthenticatedEvent(gateway.Provider.STRIPE, event_id, "payment_intent.succeeded", payload,
                                      datetime.now(UTC), request_id)


async def serving_billing(servicer: RecordingBilling) -> AsyncIterator[tuple[RecordingBilling, str]]:
    """The servicer served by a real gRPC server on a free port, with its address."""
    server = grpc.aio.server()
    billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    servicer.release.set()
    await server.stop(None)


class TakingNotifier:
    """Billing's notifier port taking every email handed over, as a notifier that accepts them all; what
    it took, as handed over."""

    def __init__(self) -> None:
        self.sent: list = []

    async def send_emails(self, items):
        self.sent.extend(items)
        return [None] * len(items)
