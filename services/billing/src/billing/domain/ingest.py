"""Use case: store and apply a batch of webhook events, exactly once, in one database transaction.

A batch is committed as a whole (one fsync for many events: group commit) while each event keeps its
own outcome: one that cannot be applied is recorded as failed and its partial effects are discarded
in memory before anything is written, so it never fails its neighbours.

Concurrency: before reading anything, the batch takes transaction-scoped locks on every event id and
every payment/subscription it touches, in sorted order. Two deliveries of one event, or two events of
one payment, therefore never interleave, and batches never deadlock each other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from billing.domain.apply import Interpreted, apply_batch, give_owner, interpret, stored_under_another_id
from billing.domain.events import (
    BatchUnit,
    EventRecord,
    EventStore,
    IncomingEvent,
    IngestResult,
    Outcome,
    TransientStoreError,
)
from billing.domain.model import Owner, PaymentFact, SubRef, Subscription, Transaction, TxnRef
from billing.domain.notifications import payment_emails, subscription_emails
from billing.domain.scope import StripeScope
from billing.domain.working_set import WorkingSet

log = logging.getLogger(__name__)

_T = TypeVar("_T")


MAX_TRANSIENT_RETRIES = 3


def _txn_lock_keys(ref: TxnRef, *, every_id: bool = False) -> Iterable[str]:
    """The locks an event naming `ref` takes; with `every_id`, those of every event that can name the
    payment these ids are of (a charge is named alone only by charges made without an intent)."""
    p = ref.provider.value
    if ref.stripe_payment_intent_id:
        yield f"{p}:pi:{ref.stripe_payment_intent_id}"
    if ref.stripe_invoice_id:  # also with the intent: an event naming both may merge two rows
        yield f"{p}:in:{ref.stripe_invoice_id}"
    if ref.stripe_charge_id and (every_id or not (ref.stripe_payment_intent_id or ref.stripe_invoice_id)):
        yield f"{p}:ch:{ref.stripe_charge_id}"
    if ref.razorpay_order_id:
        yield f"{p}:order:{ref.razorpay_order_id}"
    if ref.razorpay_payment_id:
        yield f"{p}:pay:{ref.razorpay_payment_id}"


def _sub_lock_key(ref: SubRef) -> str:
    return f"{ref.provider.value}:sub:{ref.subscription_id}"


@dataclass
class _Plan:
    """What a batch reads: its events and every row they may touch."""

    items: list[Interpreted]
    txn_refs: list[TxnRef] = field(default_factory=list)
    sub_refs: list[SubRef] = field(default_factory=list)

    @classmethod
    def of(cls, items: list[Interpreted]) -> _Plan:
        plan = cls(items)
        for item in items:
            for fact in item.facts or ():
                if isinstance(fact, PaymentFact):
                    plan.txn_refs.append(fact.ref)
                    if fact.subscription:
                        plan.sub_refs.append(fact.subscription)
                else:
                    plan.sub_refs.append(fact.ref)
        return plan

    @property
    def event_keys(self) -> list[tuple[str, str]]:
        return [item.event.key for item in self.items]

    @property
    def bodies(self) -> list[str]:
        return [item.event.body_sha256 for item in self.items if item.event.body_identifies]

    def lock_keys(self) -> list[str]:
        keys = {f"event:{p}:{e}" for p, e in self.event_keys}
        keys.update(f"event:razorpay:body:{body}" for body in self.bodies)
        for ref in self.txn_refs:
            keys.update(_txn_lock_keys(ref))
        keys.update(_sub_lock_key(ref) for ref in self.sub_refs)
        return sorted(keys)


@dataclass(frozen=True)
class Preview:
    """A dry run of applying events again: each one's outcome, the rows it would change, the emails."""

    results: list[IngestResult]
    changed_transaction_ids: list[str]
    changed_subscription_ids: list[str]
    email_kinds: list[str]


class IngestEvents:
    """Applies events, whoever hands them over: the gateway's calls, the retry worker, an operator's replay.
    `on_applied` hears of every batch once it is committed (metrics); `on_emails_committed`, of a batch
    that asked for emails."""

    def __init__(self, store: EventStore, on_emails_committed: Callable[[], None] = lambda: None,
                 on_applied: Callable[[Sequence[IncomingEvent], list[IngestResult]], None] = lambda e, r: None,
                 stripe_scope: StripeScope = StripeScope()) -> None:
        self._store = store
        self._stripe_scope = stripe_scope
        self._on_emails = on_emails_committed
        self._on_applied = on_applied

    async def execute(self, events: Sequence[IncomingEvent], *, again: bool = False) -> list[IngestResult]:
        """Store and apply these events; with `again`, apply stored ones again too (see apply_batch)."""
        items = [interpret(e, self._stripe_scope) for e in events]
        storable = [i for i in items if i.payload_text is not None]
        results = ({id(i): r for i, r in zip(storable, await self._run(storable, again), strict=True)}
                   if storable else {})
        answered = [
            results.get(id(i)) or IngestResult(i.event.event_id, Outcome.FAILED, error=i.error)
            for i in items
        ]
        self._on_applied(events, answered)
        return answered

    async def _run(self, items: list[Interpreted], again: bool = False) -> list[IngestResult]:
        try:
            return await self._commit(items, again)
        except TransientStoreError:
            raise
        except Exception:
            if len(items) == 1:
                return [await self._record_unappliable(items[0])]
            # The database refused something of the batch; find which event by going one at a time.
            log.warning("batch refused by the database; applying its events one by one", exc_info=True)
            return [(await self._run([item], again))[0] for item in items]

    async def _commit(self, items: list[Interpreted], again: bool = False) -> list[IngestResult]:
        plan = _Plan.of(items)

        async def apply(unit: BatchUnit) -> tuple[list[IngestResult], bool]:
            known, working_set = await unit.read(plan.event_keys, plan.txn_refs, plan.sub_refs, plan.bodies)
            results, records = apply_batch(working_set, items, known, again=again)
            await unit.write(working_set, records)
            return results, bool(working_set.emails or working_set.amendments)

        results, emailed = await self._in_unit(plan.lock_keys(), apply)
        if emailed:
            self._on_emails()
        return results

    async def preview(self, events: Sequence[IncomingEvent]) -> Preview:
        """What applying these stored events again would do, under the same locks, writing nothing."""
        items = [i for i in (interpret(e, self._stripe_scope) for e in events) if i.payload_text is not None]
        plan = _Plan.of(items)

        async def look(unit: BatchUnit) -> Preview:
            known, ws = await unit.read(plan.event_keys, plan.txn_refs, plan.sub_refs, plan.bodies)
            before = {row.id: row for row in [*ws.transactions, *ws.subscriptions]}
            results, _ = apply_batch(ws, items, known, again=True)
            changed_txns = [i for i, row in ws.changed_transactions.items() if before.get(i) != row]
            changed_subs = [i for i, row in ws.changed_subscriptions.items() if before.get(i) != row]
            return Preview(results, changed_txns, changed_subs, [email.kind for email in ws.emails])

        return await self._in_unit(plan.lock_keys(), look) if items else Preview([], [], [], [])

    async def _in_unit(self, lock_keys: list[str], work: Callable[[BatchUnit], Awaitable[_T]]) -> _T:
        """`work` in one database transaction holding these locks, committed; done again from the start
        when the database fails for a passing reason (deadlock, lost connection), a few times."""
        for attempt in range(1, MAX_TRANSIENT_RETRIES + 1):
            try:
                async with self._store.unit(lock_keys) as unit:
                    return await work(unit)
            except TransientStoreError:
                if attempt == MAX_TRANSIENT_RETRIES:
                    raise
                log.info("transient database error; retrying batch", extra={"fields": {"attempt": attempt}})
        raise AssertionError("unreachable")

    async def assign_tenant(self, payment: Transaction, owner: Owner, at: datetime,
                          request_id: str = "") -> Transaction | None:
        """An operator's word on whose a payment that no tenant owns is. It is written under the locks every
        event of the payment takes, so no event's write undoes it, and it asks for the emails that waited
        for a tenant, as an event bringing one at `at` would. A payment that has a tenant keeps it: the
        row is returned unchanged. None when the payment is no longer there (merged since into
        another)."""
        ref = payment.ref

        async def give(unit: BatchUnit) -> tuple[Transaction | None, WorkingSet | None]:
            _, working_set = await unit.read([], [ref], [])
            current = working_set.find_transaction(ref)
            if current is None or current.id != payment.id:
                return None, None
            if current.tenant_id:
                return current, None
            owned = replace(current, tenant_id=owner.tenant_id, user_id=owner.user_id)
            working_set.put_transaction(owned)
            working_set.emails.extend(payment_emails(current, owned, at, request_id))
            await unit.write(working_set, [])
            return owned, working_set

        return await self._assign(sorted(set(_txn_lock_keys(ref, every_id=True))), give,
                                {"transaction_id": payment.id, "tenant_id": owner.tenant_id, "request_id": request_id})

    async def assign_subscription_tenant(self, ref: SubRef, owner: Owner, at: datetime,
                                       request_id: str = "") -> Subscription | None:
        """As assign_tenant, for a subscription: its payments stored without an owner take the tenant too,
        with the emails that waited for one, as when a subscription's own event brings its tenant."""

        async def give(unit: BatchUnit) -> tuple[Subscription | None, WorkingSet | None]:
            _, working_set = await unit.read([], [], [ref])
            current = working_set.find_subscription(ref)
            if current is None or current.tenant_id:
                return current, None
            owned = replace(current, tenant_id=owner.tenant_id, user_id=owner.user_id)
            working_set.put_subscription(owned)
            working_set.emails.extend(subscription_emails(current, owned, at, request_id))
            give_owner(working_set, owned, at, request_id)
            await unit.write(working_set, [])
            return owned, working_set

        return await self._assign([_sub_lock_key(ref)], give, {
            "subscription_id": ref.subscription_id, "tenant_id": owner.tenant_id, "request_id": request_id})

    async def _assign(self, lock_keys: list[str], give: Callable[[BatchUnit], Awaitable[tuple[_T, WorkingSet | None]]],
                    fields: dict[str, str]) -> _T:
        row, written = await self._in_unit(lock_keys, give)
        if written is not None:
            log.info("tenant assigned by an operator", extra={"fields": fields})
            if written.emails:
                self._on_emails()
        return row

    async def _record_unappliable(self, item: Interpreted) -> IngestResult:
        """Keep an event whose effects the database refused, as failed, without its effects."""
        error = "the database refused the event's changes"
        plan = _Plan([item])
        async with self._store.unit(plan.lock_keys()) as unit:
            known, _ = await unit.read(plan.event_keys, [], [], plan.bodies)
            status = known.statuses.get(item.event.key)
            if stored_under_another_id(item.event, known) or (status is not None and status != Outcome.FAILED.value):
                return IngestResult(item.event.event_id, Outcome.DUPLICATE)
            await unit.write(
                WorkingSet(),
                [EventRecord(item.event, item.payload_text or "{}", Outcome.FAILED, error, (), (), status is not None)],
            )
        return IngestResult(item.event.event_id, Outcome.FAILED, error=error)


