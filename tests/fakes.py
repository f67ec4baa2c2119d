"""In-memory stand-ins for adapters, for unit tests of the use cases."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from billing.domain.ingest import EventRecord
from billing.domain.model import SubRef, Subscription, Transaction, TxnRef, WorkingSet


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

    async def read(self, keys, txn_refs: Sequence[TxnRef], sub_refs: Sequence[SubRef]):
        known = {k: self.events[k].status.value for k in keys if k in self.events}
        ws = WorkingSet()
        ws.transactions = [t for t in self.transactions.values()
                           if any(t.matches(r) or t.adoptable_by(r) for r in txn_refs)
                           or (t.tenant_id is None and t.subscription in sub_refs)]
        ws.subscriptions = [s for s in self.subscriptions.values() if any(s.matches(r) for r in sub_refs)]
        return known, ws

    async def write(self, working_set: WorkingSet, records: Sequence[EventRecord]) -> None:
        for email in working_set.emails:
            self.outbox.setdefault(email.idempotency_key, email)
        self.subscriptions.update(working_set.changed_subscriptions)
        for merged in working_set.merged_transactions:
            self.transactions.pop(merged, None)
        self.transactions.update(working_set.changed_transactions)
        for record in records:
            self.events[record.event.key] = record
            self.attempts[record.event.key] = self.attempts.get(record.event.key, 0) + 1
