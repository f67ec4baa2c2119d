"""Reading events into facts and applying a batch of them to its rows: pure, no I/O. Which event changes
what is in merge.py; which emails a change asks for, in notifications.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

import orjson

from billing.domain.providers import razorpay_events, stripe_events
from billing.domain.events import Attention, EventRecord, IncomingEvent, IngestResult, KnownEvents, Outcome
from billing.domain.providers.fields import InvalidEvent
from billing.domain.merge import absorb, merge_payment, merge_subscription, twin_to_keep
from billing.domain.model import (
    Facts,
    Owner,
    Provider,
    RefundState,
    SubRef,
    Subscription,
    SubscriptionFact,
    Transaction,
    TxnRef,
)
from billing.domain.notifications import fold_amendments, payment_emails, link_amendments, subscription_emails
from billing.domain.scope import StripeScope
from billing.domain.working_set import WorkingSet

log = logging.getLogger(__name__)


@dataclass
class Interpreted:
    event: IncomingEvent
    payload_text: str | None
    facts: Facts | None = None
    error: str | None = None
    ignored_because: str | None = None  # kept, never applied: why (facts and error are None)


_INTERPRETERS = {
    Provider.STRIPE: stripe_events.interpret,
    Provider.RAZORPAY: razorpay_events.interpret,
}


def interpret(event: IncomingEvent, stripe_scope: StripeScope) -> Interpreted:
    try:
        body = orjson.loads(event.payload)
        text = event.payload.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return Interpreted(event, None, error="payload is not JSON")
    if not isinstance(body, dict) or "\\u0000" in text:
        return Interpreted(event, None, error="payload is not a storable JSON object")
    if event.provider is Provider.STRIPE and (reason := stripe_scope.reason_to_ignore(body)):
        return Interpreted(event, text, ignored_because=reason)
    try:
        return Interpreted(event, text, facts=_INTERPRETERS[event.provider](event.event_type, body))
    except InvalidEvent as exc:
        return Interpreted(event, text, error=f"invalid {event.event_type}: {exc}")


def apply_batch(
    ws: WorkingSet, items: list[Interpreted], known: KnownEvents, *, again: bool = False
) -> tuple[list[IngestResult], list[EventRecord]]:
    """Apply each event's facts to the working set (pure). Returns results and the event rows to keep.
    With `again` (an operator's replay), stored events of any status are applied again, as retries:
    every merge is idempotent and every email keyed, so what was applied before changes nothing."""
    results: list[IngestResult] = []
    records: list[EventRecord] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        event = item.event
        previous = known.statuses.get(event.key)
        if (event.key in seen or stored_under_another_id(event, known)
                or (previous is not None and previous != Outcome.FAILED.value and not again)):
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


def stored_under_another_id(event: IncomingEvent, known: KnownEvents) -> bool:
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
    ws: WorkingSet, facts: Facts, event: IncomingEvent
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
                txn_ids.extend(give_owner(ws, sub, fact.at, request_id))
            else:
                hint_sub = ws.find_subscription(fact.subscription) if fact.subscription else None
                hint = Owner(hint_sub.tenant_id, hint_sub.user_id) if hint_sub and hint_sub.tenant_id else None
                old_txn, base = _payment_row(ws, fact.ref)
                _warn_if_owner_differs("transaction_id", base, fact.owner, request_id)
                txn = merge_payment(base, fact, owner_hint=hint)
                attention.extend(_needs_attention(base, txn, request_id))
                ws.put_transaction(txn)
                ws.emails.extend(payment_emails(old_txn, txn, fact.at, request_id))
                ws.amendments.extend(link_amendments(old_txn, txn))
                txn_ids.append(txn.id)
    except Exception as exc:  # a defect in a rule must not lose the event nor fail its neighbours
        log.exception("event could not be applied")
        ws.restore(before)
        return Outcome.FAILED, f"{type(exc).__name__}: {exc}", (), (), ()
    return (Outcome.PROCESSED, None, tuple(dict.fromkeys(txn_ids)), tuple(dict.fromkeys(sub_ids)),
            tuple(attention))


def _warn_if_owner_differs(kind: str, row: Transaction | Subscription | None, named: Owner | None,
                           request_id: str) -> None:
    """The first owner recorded stays. An event naming another tenant means the platform's metadata is
    wrong somewhere: operators hear of it, and nothing moves the row to the other tenant."""
    if row is not None and row.tenant_id and named is not None and named.tenant_id != row.tenant_id:
        log.warning("an event names another tenant than the one recorded; the recorded one stays",
                    extra={"fields": {kind: row.id, "tenant_id": row.tenant_id, "event_tenant_id": named.tenant_id,
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


def give_owner(ws: WorkingSet, sub: Subscription, at: datetime, request_id: str) -> list[str]:
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
