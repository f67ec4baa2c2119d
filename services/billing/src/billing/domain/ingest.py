"""Use case: store and apply a batch of webhook events, exactly once, in one database transaction.

A batch is committed as a whole (one fsync for many events: group commit) while each event keeps its
own outcome: one that cannot be applied is recorded as failed and its partial effects are discarded
in memory before anything is written, so it never fails its neighbours.

Concurrency: before reading anything, the batch takes transaction-scoped locks on every event id and
every payment/subscription it touches, in sorted order. Two deliveries of one event, or two events of
one payment, therefore never interleave, and batches never deadlock each other.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from functools import cached_property
from datetime import datetime
from enum import Enum
from typing import Protocol, TypeVar

import orjson

from billing.domain import razorpay_events, stripe_events
from billing.domain.fields import InvalidEvent
from billing.domain.scope import StripeScope
from billing.domain.notifications import (
    fold_amendments,
    payment_emails,
    receipt_amendments,
    subscription_emails,
)
from billing.domain.merge import absorb, merge_payment, merge_subscription, twin_to_keep
from billing.domain.model import (
    Owner,
    PaymentFact,
    Provider,
    RefundState,
    SubRef,
    Subscription,
    SubscriptionFact,
    Transaction,
    TxnRef,
)
from billing.domain.working_set import WorkingSet

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Outcome(str, Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    FAILED = "failed"


@dataclass(frozen=True)
class IncomingEvent:
    provider: Provider
    event_id: str
    event_type: str
    payload: bytes
    received_at: datetime
    request_id: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider.value, self.event_id)

    @cached_property
    def body_sha256(self) -> str:
        """The signed body's SHA-256, in hex: kept as evidence, and a Razorpay delivery's identity."""
        return hashlib.sha256(self.payload).hexdigest()

    @property
    def body_identifies(self) -> bool:
        """Razorpay's event id header is outside its signature: a signed body resent under a new id is
        the same delivery. (Razorpay retries with the same body; two events never share one.)"""
        return self.provider is Provider.RAZORPAY


class Attention(str, Enum):
    """What an event made that someone in finance has to act on."""

    DISPUTE_OPENED = "dispute_opened"  # evidence is due at the provider by its deadline
    REFUND_FAILED = "refund_failed"  # the customer is still owed the money, and was told so


@dataclass(frozen=True)
class IngestResult:
    event_id: str
    outcome: Outcome
    error: str | None = None
    transaction_ids: tuple[str, ...] = ()
    subscription_ids: tuple[str, ...] = ()
    attention: tuple[Attention, ...] = ()


@dataclass(frozen=True)
class EventRecord:
    """The row kept for an event: inserted when new, updated when a failed one is retried."""

    event: IncomingEvent
    payload_text: str
    status: Outcome
    error: str | None
    transaction_ids: tuple[str, ...]
    subscription_ids: tuple[str, ...]
    retry: bool


@dataclass
class _Interpreted:
    event: IncomingEvent
    payload_text: str | None
    facts: list[PaymentFact | SubscriptionFact] | None = None
    error: str | None = None
    ignored_because: str | None = None  # kept, never applied: why (facts and error are None)


@dataclass
class KnownEvents:
    """What the store already holds of a batch's events: the status of each event id, and for Razorpay
    bodies (by SHA-256) the event id they were stored under."""

    statuses: dict[tuple[str, str], str] = field(default_factory=dict)
    bodies: dict[str, str] = field(default_factory=dict)


class TransientStoreError(Exception):
    """The database could not finish the batch for a passing reason (deadlock, lost connection)."""


class BatchUnit(Protocol):
    """One database transaction, as the ingest use case needs it."""

    async def read(
        self, event_keys: Sequence[tuple[str, str]], txn_refs: Sequence[TxnRef], sub_refs: Sequence[SubRef],
        bodies: Sequence[str] = (),
    ) -> tuple[KnownEvents, WorkingSet]:
        """What is stored of these events (and of these Razorpay bodies), and the rows the refs name, with the
        payments without an owner of the subscriptions the sub_refs name, locked for this unit."""

    async def write(self, working_set: WorkingSet, records: Sequence[EventRecord]) -> None:
        """Keep the batch's changed rows, emails and events."""


class EventStore(Protocol):
    def unit(self, lock_keys: Sequence[str]) -> AbstractAsyncContextManager[BatchUnit]:
        """A database transaction holding a lock on each key (given sorted) until it ends."""


_INTERPRETERS = {
    Provider.STRIPE: stripe_events.interpret,
    Provider.RAZORPAY: razorpay_events.interpret,
}

MAX_TRANSIENT_RETRIES = 3


def _interpret(event: IncomingEvent, stripe_scope: StripeScope) -> _Interpreted:
    try:
        body = orjson.loads(event.payload)
        text = event.payload.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return _Interpreted(event, None, error="payload is not JSON")
    if not isinstance(body, dict) or "\\u0000" in text:
        return _Interpreted(event, None, error="payload is not a storable JSON object")
    if event.provider is Provider.STRIPE and (reason := stripe_scope.reason_to_ignore(body)):
        return _Interpreted(event, text, ignored_because=reason)
    try:
        return _Interpreted(event, text, facts=_INTERPRETERS[event.provider](event.event_type, body))
    except InvalidEvent as exc:
        return _Interpreted(event, text, error=f"invalid {event.event_type}: {exc}")


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

    items: list[_Interpreted]
    txn_refs: list[TxnRef] = field(default_factory=list)
    sub_refs: list[SubRef] = field(default_factory=list)

    @classmethod
    def of(cls, items: list[_Interpreted]) -> _Plan:
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

    async def execute(self, events: Sequence[IncomingEvent]) -> list[IngestResult]:
        items = [_interpret(e, self._stripe_scope) for e in events]
        storable = [i for i in items if i.payload_text is not None]
        results = {id(i): r for i, r in zip(storable, await self._run(storable), strict=True)} if storable else {}
        answered = [
            results.get(id(i)) or IngestResult(i.event.event_id, Outcome.FAILED, error=i.error)
            for i in items
        ]
        self._on_applied(events, answered)
        return answered

    async def _run(self, items: list[_Interpreted]) -> list[IngestResult]:
        try:
            return await self._commit(items)
        except TransientStoreError:
            raise
        except Exception:
            if len(items) == 1:
                return [await self._record_unappliable(items[0])]
            # The database refused something of the batch; find which event by going one at a time.
            log.warning("batch refused by the database; applying its events one by one", exc_info=True)
            return [(await self._run([item]))[0] for item in items]

    async def _commit(self, items: list[_Interpreted]) -> list[IngestResult]:
        plan = _Plan.of(items)

        async def apply(unit: BatchUnit) -> tuple[list[IngestResult], bool]:
            known, working_set = await unit.read(plan.event_keys, plan.txn_refs, plan.sub_refs, plan.bodies)
            results, records = _apply(working_set, items, known)
            await unit.write(working_set, records)
            return results, bool(working_set.emails or working_set.amendments)

        results, emailed = await self._in_unit(plan.lock_keys(), apply)
        if emailed:
            self._on_emails()
        return results

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

    async def give_tenant(self, payment: Transaction, owner: Owner, at: datetime,
                          request_id: str = "") -> Transaction | None:
        """An operator's word on whose a payment that no tenant owns is. It is written under the locks every
        event of the payment takes, so no event's write undoes it, and it asks for the emails that waited
        for a tenant, as an event bringing one at `at` would. A payment that has a tenant keeps it: the
        row is returned as it stands. None when the payment is no longer there (merged since into
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

        return await self._give(sorted(set(_txn_lock_keys(ref, every_id=True))), give,
                                {"transaction_id": payment.id, "tenant_id": owner.tenant_id, "request_id": request_id})

    async def give_subscription_tenant(self, ref: SubRef, owner: Owner, at: datetime,
                                       request_id: str = "") -> Subscription | None:
        """As give_tenant, for a subscription: its payments stored without an owner take the tenant too,
        with the emails that waited for one, as when a subscription's own event brings its tenant."""

        async def give(unit: BatchUnit) -> tuple[Subscription | None, WorkingSet | None]:
            _, working_set = await unit.read([], [], [ref])
            current = working_set.find_subscription(ref)
            if current is None or current.tenant_id:
                return current, None
            owned = replace(current, tenant_id=owner.tenant_id, user_id=owner.user_id)
            working_set.put_subscription(owned)
            working_set.emails.extend(subscription_emails(current, owned, at, request_id))
            _give_owner(working_set, owned, at, request_id)
            await unit.write(working_set, [])
            return owned, working_set

        return await self._give([_sub_lock_key(ref)], give, {
            "subscription_id": ref.subscription_id, "tenant_id": owner.tenant_id, "request_id": request_id})

    async def _give(self, lock_keys: list[str], give: Callable[[BatchUnit], Awaitable[tuple[_T, WorkingSet | None]]],
                    fields: dict[str, str]) -> _T:
        row, written = await self._in_unit(lock_keys, give)
        if written is not None:
            log.info("given its tenant by an operator", extra={"fields": fields})
            if written.emails:
                self._on_emails()
        return row

    async def _record_unappliable(self, item: _Interpreted) -> IngestResult:
        """Keep an event whose effects the database refused, as failed, without its effects."""
        error = "the database refused the event's changes"
        plan = _Plan([item])
        async with self._store.unit(plan.lock_keys()) as unit:
            known, _ = await unit.read(plan.event_keys, [], [], plan.bodies)
            status = known.statuses.get(item.event.key)
            if _stored_under_another_id(item.event, known) or (status is not None and status != Outcome.FAILED.value):
                return IngestResult(item.event.event_id, Outcome.DUPLICATE)
            await unit.write(
                WorkingSet(),
                [EventRecord(item.event, item.payload_text or "{}", Outcome.FAILED, error, (), (), status is not None)],
            )
        return IngestResult(item.event.event_id, Outcome.FAILED, error=error)


def _apply(
    ws: WorkingSet, items: list[_Interpreted], known: KnownEvents
) -> tuple[list[IngestResult], list[EventRecord]]:
    """Apply each event's facts to the working set (pure). Returns results and the event rows to keep."""
    results: list[IngestResult] = []
    records: list[EventRecord] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        event = item.event
        previous = known.statuses.get(event.key)
        if (event.key in seen or _stored_under_another_id(event, known)
                or (previous is not None and previous != Outcome.FAILED.value)):
            results.append(IngestResult(event.event_id, Outcome.DUPLICATE))
            continue
        seen.add(event.key)
        if event.body_identifies:  # a second id for this body later in the batch is a duplicate of this one
            known.bodies.setdefault(event.body_sha256, event.event_id)
        retry = previous is not None
        if item.facts is None and item.error is None:
            outcome, error, txn_ids, sub_ids, attention = Outcome.IGNORED, item.ignored_because, (), (), ()
        elif item.error is not None:
            outcome, error, txn_ids, sub_ids, attention = Outcome.FAILED, item.error, (), (), ()
        else:
            outcome, error, txn_ids, sub_ids, attention = _apply_facts(ws, item.facts or [], event)
        assert item.payload_text is not None
        records.append(EventRecord(event, item.payload_text, outcome, error, txn_ids, sub_ids, retry))
        results.append(IngestResult(event.event_id, outcome, error, txn_ids, sub_ids, attention))
    ws.emails, ws.amendments = fold_amendments(ws.emails, ws.amendments)
    if ws.merged_transactions:  # events of this batch that named a row merged since name the one kept
        kept = ws.merged_transactions
        records = [replace(r, transaction_ids=_kept_ids(r.transaction_ids, kept)) for r in records]
        results = [replace(r, transaction_ids=_kept_ids(r.transaction_ids, kept)) for r in results]
    return results, records


def _stored_under_another_id(event: IncomingEvent, known: KnownEvents) -> bool:
    return event.body_identifies and known.bodies.get(event.body_sha256, event.event_id) != event.event_id


def _kept_ids(ids: tuple[str, ...], kept: dict[str, str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(kept.get(i, i) for i in ids))


def _payment_row(ws: WorkingSet, ref: TxnRef) -> tuple[Transaction | None, Transaction | None]:
    """The row `ref` names, as emails compare with it and as the fact merges into it. A payment recorded
    twice (by its invoice, by its payment intent) until `ref` names both becomes one row here: the one
    kept takes in the other."""
    found = ws.find_transaction(ref)
    twin = ws.find_twin(ref, found)
    if found is None or twin is None:
        return found, found
    keep, gone = twin_to_keep(found, twin)
    merged = absorb(keep, gone)
    ws.merge_transactions(keep, gone, merged)
    return keep, merged


def _apply_facts(
    ws: WorkingSet, facts: list[PaymentFact | SubscriptionFact], event: IncomingEvent
) -> tuple[Outcome, str | None, tuple[str, ...], tuple[str, ...], tuple[Attention, ...]]:
    request_id = event.request_id
    before = ws.snapshot()
    txn_ids: list[str] = []
    sub_ids: list[str] = []
    attention: list[Attention] = []
    try:
        for fact in facts:
            if isinstance(fact, SubscriptionFact):
                old_sub = ws.find_subscription(fact.ref)
                _warn_if_owner_differs("subscription_id", old_sub, fact.owner, request_id)
                sub = merge_subscription(old_sub, fact)
                ws.put_subscription(sub)
                ws.emails.extend(subscription_emails(old_sub, sub, fact.at, request_id, event.received_at))
                sub_ids.append(sub.id)
                txn_ids.extend(_give_owner(ws, sub, fact.at, request_id))
            else:
                hint_sub = ws.find_subscription(fact.subscription) if fact.subscription else None
                hint = Owner(hint_sub.tenant_id, hint_sub.user_id) if hint_sub and hint_sub.tenant_id else None
                old_txn, base = _payment_row(ws, fact.ref)
                _warn_if_owner_differs("transaction_id", base, fact.owner, request_id)
                txn = merge_payment(base, fact, owner_hint=hint)
                attention.extend(_needs_attention(base, txn, request_id))
                ws.put_transaction(txn)
                ws.emails.extend(payment_emails(old_txn, txn, fact.at, request_id))
                ws.amendments.extend(receipt_amendments(old_txn, txn))
                txn_ids.append(txn.id)
    except Exception as exc:  # a defect in a rule must not lose the event nor fail its neighbours
        log.exception("event could not be applied")
        ws.restore(before)
        return Outcome.FAILED, f"{type(exc).__name__}: {exc}", (), (), ()
    return (Outcome.PROCESSED, None, tuple(dict.fromkeys(txn_ids)), tuple(dict.fromkeys(sub_ids)),
            tuple(attention))


def _warn_if_owner_differs(kind: str, row: Transaction | Subscription | None, told: Owner | None,
                           request_id: str) -> None:
    """The first owner recorded stays. An event naming another tenant means the platform's metadata is
    wrong somewhere: operators hear of it, and nothing moves the row to the other tenant."""
    if row is not None and row.tenant_id and told is not None and told.tenant_id != row.tenant_id:
        log.warning("an event names another tenant than the one recorded; the recorded one stays",
                    extra={"fields": {kind: row.id, "tenant_id": row.tenant_id, "event_tenant_id": told.tenant_id,
                                      "request_id": request_id}})


def _needs_attention(before: Transaction | None, after: Transaction, request_id: str) -> list[Attention]:
    """What this change of a payment asks of someone, logged once each: a dispute opened, whose evidence is
    due at the provider by its deadline; a refund that failed or was cancelled, which sent the money back
    to the merchant while the customer is still owed it (a failed one counts for finance: one cancelled
    was the merchant's own doing)."""
    if after.disputed_at is None and not after.refunds:
        return []  # most payments, on every event: nothing to look at
    found: list[Attention] = []
    fields = {"transaction_id": after.id, "tenant_id": after.tenant_id, "request_id": request_id}
    if after.disputed_at is not None and (before is None or before.disputed_at is None):
        log.warning("a payment was disputed; respond at the provider before its deadline",
                    extra={"fields": {**fields, "amount_minor": after.amount, "currency": after.currency,
                                      "dispute_status": after.provider_status}})
        found.append(Attention.DISPUTE_OPENED)
    undone_before = {r.id for r in before.refunds if r.undone} if before is not None else set()
    for refund in after.refunds:
        if refund.undone and refund.id not in undone_before:
            log.warning("a refund failed or was cancelled; the money is back with the merchant",
                        extra={"fields": {**fields, "refund_id": refund.id, "amount_minor": refund.amount,
                                          "currency": after.currency, "state": refund.state.value,
                                          "failure_reason": refund.failure_reason}})
            if refund.state is RefundState.FAILED:
                found.append(Attention.REFUND_FAILED)
    return found


def _give_owner(ws: WorkingSet, sub: Subscription, at: datetime, request_id: str) -> list[str]:
    """Payments of `sub` stored without an owner (an invoice without metadata that came before its
    subscription) take the subscription's, with the emails that waited for a tenant to write as."""
    if not sub.tenant_id:
        return []
    ids = []
    for txn in ws.payments_of(SubRef(sub.provider, sub.provider_id)):
        if txn.tenant_id:
            continue
        owned = replace(txn, tenant_id=sub.tenant_id, user_id=sub.user_id)
        ws.put_transaction(owned)
        ws.emails.extend(payment_emails(txn, owned, at, request_id))
        ids.append(owned.id)
    return ids
