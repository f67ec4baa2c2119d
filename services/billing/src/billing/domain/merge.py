"""How facts from events merge into payment transactions and user subscriptions.

Providers deliver events at least once and in any order. Every merge here is order-independent: the
state after a set of events is the same whatever order they arrived in, and applying a fact twice
changes nothing. That holds because each field merges by a rule that is commutative and idempotent:
- status: the candidate first in one total order wins (see `_txn_candidate`); several events that
  report one status (a payment intent, its charge, its invoice) tie only in precedence, and the order
  settles them: the earliest report, then the provider's word. Refund reports do not compete but add
  up: what the refunds leave (refunded in full or in part, or paid again once every refund failed) is
  judged from the amounts, and dated by the latest report;
- the charge (Stripe) or payment (Razorpay) the row names is the one that decided the outcome, once any
  event names it (none while only an invoice or checkout reported it); before an outcome, the latest
  attempt's. Its receipt and payment method come with it;
- identities and owner (tenant, user): first known value is kept (all events of one payment agree);
- amount: what the first report of the payment made states (what was taken); before one, the first
  known, except that a row created before the payment holds what was asked until the provider states one;
- customer address and name: each from the most trusted source (CONTACT_*), then the first in text order;
- refunds: each refund by its id, its state the furthest it reached (pending, succeeded, then failed or
  cancelled, which are final); the largest cumulative amount refunded any event reported; the amount
  refunded is what those say is still refunded (see `_refunded`); refund time: the latest;
- paid and disputed time: the earliest;
- failure details: those of the latest failure.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from billing.domain.model import (
    Owner,
    PaymentFact,
    Provider,
    Refund,
    RefundState,
    SubStatus,
    Subscription,
    SubscriptionFact,
    Transaction,
    TxnStatus,
    new_id,
)

# (tier, rank). Within tier 0 (attempts in progress or failed) the latest event wins, so a customer
# who retries after a failure shows as retrying; a higher tier always wins, so nothing late undoes a
# success, a refund or a dispute. Within the dispute tier the latest wins too: opened, then won or lost.
_TXN_PRECEDENCE: dict[TxnStatus, tuple[int, int]] = {
    TxnStatus.PENDING: (0, 0),
    TxnStatus.REQUIRES_ACTION: (0, 1),
    TxnStatus.PROCESSING: (0, 2),
    TxnStatus.AUTHORIZED: (0, 3),
    TxnStatus.FAILED: (0, 4),
    TxnStatus.CANCELLED: (1, 0),
    TxnStatus.SUCCEEDED: (1, 1),
    TxnStatus.PARTIALLY_REFUNDED: (2, 0),
    TxnStatus.REFUNDED: (2, 1),
    TxnStatus.DISPUTED: (3, 0),
}


# Tiers whose latest report wins: attempts (a retry after a failure) and a dispute (opened, then closed
# won or lost). In the others a status, once reached, only gives way to a higher tier.
_LATEST_WINS = (0, 3)


def _txn_candidate(status: TxnStatus, at: datetime, provider_status: str | None) -> tuple[int, float, int, float, str]:
    """A status report's place in the order that decides the row's status: tier, then (attempts and
    disputes) the latest report, then rank; reports still equal (one status reported by several events)
    go to the earliest, so status_at is when the payment first reached its status, then to the
    provider's word."""
    tier, rank = _TXN_PRECEDENCE[status]
    t = at.timestamp()
    return (tier, t if tier in _LATEST_WINS else 0.0, rank, -t, provider_status or "")


# (terminal, rank). A subscription that ended never comes back, so terminal states always win;
# otherwise the newest snapshot wins and the rank only breaks ties within one second.
_SUB_PRECEDENCE: dict[SubStatus, tuple[int, int]] = {
    SubStatus.PENDING: (0, 0),
    SubStatus.TRIALING: (0, 1),
    SubStatus.ACTIVE: (0, 2),
    SubStatus.PAST_DUE: (0, 3),
    SubStatus.UNPAID: (0, 4),
    SubStatus.HALTED: (0, 5),
    SubStatus.PAUSED: (0, 6),
    SubStatus.EXPIRED: (1, 0),
    SubStatus.COMPLETED: (1, 1),
    SubStatus.CANCELLED: (1, 2),
}


def _sub_candidate(status: SubStatus, at: datetime, snapshot: tuple) -> tuple:
    """A subscription snapshot's place in the order: ended first, then the newest (the earliest report of an
    end), then rank. Snapshots of one second with one status (a plan change, a renewal) are settled by
    their content, the later period first, so the result never depends on arrival order."""
    terminal, rank = _SUB_PRECEDENCE[status]
    t = at.timestamp()
    return (terminal, t if not terminal else 0.0, rank, -t if terminal else 0.0, snapshot)


def _snapshot(*values: datetime | str | int | None) -> tuple[tuple[bool, float | str], ...]:
    """Values in a comparable form: None first, then times by instant, text by its characters and numbers
    by their size (each position holds one kind)."""
    return tuple((False, 0.0) if v is None else (True, v.timestamp() if isinstance(v, datetime) else v)
                 for v in values)


def _merge_refunds(held: tuple[Refund, ...], reported: tuple[Refund, ...]) -> tuple[Refund, ...]:
    """The refunds known from both, each the furthest it went; sorted by id, so order never shows."""
    by_id = {r.id: r for r in held}
    for refund in reported:
        known = by_id.get(refund.id)
        if known is None or refund._standing() > known._standing():
            by_id[refund.id] = refund
    return tuple(sorted(by_id.values(), key=lambda r: r.id))


def _refunded(refunds: tuple[Refund, ...], reported: int) -> int:
    """What is refunded: the refunds known not to have failed, or the largest cumulative amount the provider
    reported less the refunds known to have failed, whichever is more. A cumulative report made before
    a refund failed still counts it, and one made after may not; the refunds known by id settle it when
    every refund is known, and the difference never counts a failed refund as refunded."""
    standing = sum(r.amount for r in refunds if not r.undone)
    undone = sum(r.amount for r in refunds if r.undone)
    return max(standing, reported - undone, 0)


def _first(current, new):
    return current if current is not None else new


def _earliest(current: datetime | None, new: datetime | None) -> datetime | None:
    if current is None or new is None:
        return current or new
    return min(current, new)


def _latest(current: datetime | None, new: datetime | None) -> datetime | None:
    if current is None or new is None:
        return current or new
    return max(current, new)


def merge_payment(row: Transaction | None, fact: PaymentFact, owner_hint: Owner | None = None) -> Transaction:
    """The transaction after `fact`; `row` is None for a payment seen for the first time.

    `owner_hint` is the owner of the subscription the payment belongs to, for events (subscription
    invoices, refunds, disputes) that carry no owner themselves.
    """
    ref = fact.ref
    if row is None:
        row = Transaction(
            id=new_id(),
            provider=ref.provider,
            status=TxnStatus.PENDING,
            status_at=fact.at,
        )
    owner = fact.owner or owner_hint
    amount, currency = _first(row.amount, fact.amount), _first(row.currency, fact.currency)
    if fact.amount is not None and (
        # The first report of the payment made states what was taken: it replaces an attempt's amount
        # (an authorisation captured in part)...
        (fact.paid_at is not None and row.paid_at is None)
        # ...and, on a row created before its payment, what the platform asked for (a coupon, a changed
        # cart), whatever reports it first. Once the amount differs from the one asked, it is kept.
        or (row.requested_amount is not None and (amount, currency) == (row.requested_amount, row.requested_currency))
    ):
        amount, currency = fact.amount, fact.currency
    sub_id = fact.subscription.subscription_id if fact.subscription else None
    stripe_sub = sub_id if ref.provider is Provider.STRIPE else None
    razorpay_sub = sub_id if ref.provider is Provider.RAZORPAY else None
    # One dict of changes and one replace(): this runs once per event on the ingest hot path.
    changes = dict(
        tenant_id=_first(row.tenant_id, owner.tenant_id if owner else None),
        user_id=_first(row.user_id, owner.user_id if owner else None),
        customer_locale=_first(row.customer_locale, owner.locale if owner else None),
        amount=amount,
        currency=currency,
        stripe_payment_intent_id=_first(row.stripe_payment_intent_id, ref.stripe_payment_intent_id),
        stripe_invoice_id=_first(row.stripe_invoice_id, ref.stripe_invoice_id),
        stripe_subscription_id=_first(row.stripe_subscription_id, stripe_sub),
        razorpay_order_id=_first(row.razorpay_order_id, ref.razorpay_order_id),
        razorpay_subscription_id=_first(row.razorpay_subscription_id, razorpay_sub),
        invoice_url=_first(row.invoice_url, fact.invoice_url),
        refunds=_merge_refunds(row.refunds, fact.refunds) if fact.refunds else row.refunds,
        refunds_reported=max(row.refunds_reported, fact.amount_refunded or 0),
        refunded_at=_latest(row.refunded_at, fact.refunded_at),
        paid_at=_earliest(row.paid_at, fact.paid_at),
        disputed_at=_earliest(row.disputed_at, fact.disputed_at),
    )
    changes["customer_email"], changes["customer_email_rank"] = _best_contact(
        row.customer_email, row.customer_email_rank, fact.customer_email, fact.email_rank)
    changes["customer_name"], changes["customer_name_rank"] = _best_contact(
        row.customer_name, row.customer_name_rank, fact.customer_name, fact.name_rank)
    if fact.action is not None and (row.action_requested_at is None or fact.at >= row.action_requested_at):
        changes.update(action_url=fact.action.url, action_instructions=fact.action.instructions,
                       action_requested_at=fact.at)
    if fact.failure is not None and _is_latest_failure(row, fact.at, fact.failure.code, fact.failure.message):
        changes.update(failed_at=fact.at, failure_code=fact.failure.code, failure_message=fact.failure.message)
    changes["amount_refunded"] = _refunded(changes["refunds"], changes["refunds_reported"])
    status = fact.status
    provider_status = fact.provider_status or row.provider_status
    standing = _standing(row)
    if status in _REFUNDS and standing in _REFUNDS and row.provider_status is not None:
        # Refund reports add up rather than compete: the outcome is what all of them leave (below),
        # dated by the latest report.
        wins = True
        changes.update(status=standing, status_at=max(row.status_at, fact.at))
    else:
        # A row no event has reported a status for (created ahead of its payment) takes the first report.
        wins = status is not None and (
            row.provider_status is None
            or _txn_candidate(status, fact.at, provider_status)
            > _txn_candidate(standing, row.status_at, row.provider_status)
        )
        if wins:
            changes.update(status=status, status_at=fact.at, provider_status=provider_status)
    if changes.get("status", standing) in _REFUNDS:
        # Judged by the amounts (a refund seen before its payment's amount is taken as full until the
        # amount is known), so the same refunds give the same outcome in any order.
        changes["status"], changes["provider_status"] = _refund_outcome(
            changes["amount"], changes["amount_refunded"], changes["refunds"])
    _take_charge(changes, row, fact, decided=status is not None and _decided(status), wins=wins)
    return replace(row, **changes)


def _best_contact(held: str | None, held_rank: int, new: str | None, new_rank: int) -> tuple[str | None, int]:
    if new is None or (held is not None and (held_rank, new) >= (new_rank, held)):
        return held, held_rank
    return new, new_rank


def _take_charge(changes: dict, row: Transaction, fact: PaymentFact, *, decided: bool, wins: bool) -> None:
    """The charge (Stripe) or payment (Razorpay) the row names, with its receipt and payment method.

    An event that reports the outcome (paid, refunded, disputed, cancelled) names the one charge that
    decided it, and that replaces any other; an attempt in progress or failed names the row's charge
    when it is the latest attempt. The receipt is always the named charge's; its method replaces one
    known from elsewhere.
    """
    column = "stripe_charge_id" if row.provider is Provider.STRIPE else "razorpay_payment_id"
    named = getattr(fact.ref, column)
    current = getattr(row, column)
    row_decided = row.provider_status is not None and _decided(row.status)
    if named and decided:
        charge = named
    elif named:  # an attempt: never the charge of a decided payment
        charge = named if not row_decided and (wins or current is None) else current
    else:  # an outcome reported without its charge (an invoice, a checkout) names no attempt's charge
        charge = None if decided and wins and not row_decided else current
    from_charge = named is not None and named == charge
    if charge != current:
        changes.update({column: charge, "receipt_url": fact.receipt_url if from_charge else None})
    elif from_charge and row.receipt_url is None:
        changes["receipt_url"] = fact.receipt_url
    if (from_charge and fact.payment_method) or row.payment_method is None:
        changes["payment_method"] = fact.payment_method
        # A payment intent names the method's type only: the card its charge told of stays.
        if fact.payment_method_detail or fact.payment_method != row.payment_method:
            changes["payment_method_detail"] = fact.payment_method_detail


def twin_to_keep(a: Transaction, b: Transaction) -> tuple[Transaction, Transaction]:
    """Of two rows of one payment, the one to keep and the one to merge into it: the one the customer
    can be written to (its emails were asked for under its id), then the one with a tenant (the one
    tenants have seen), then the invoice's."""
    def rank(t: Transaction) -> tuple[bool, bool, bool, str]:
        return (bool(t.customer_email and t.tenant_id), t.tenant_id is not None,
                t.stripe_payment_intent_id is None, t.id)
    return (a, b) if rank(a) >= rank(b) else (b, a)


def absorb(keep: Transaction, gone: Transaction) -> Transaction:
    """`keep` knowing all that `gone`, another row of the same payment made from other events, knows.
    `gone` is merged as a fact by the same rules, so the row is what one row would have been had every
    event named the payment the same way."""
    fact = PaymentFact(
        ref=gone.ref,
        at=gone.status_at,
        status=_standing(gone) if gone.provider_status is not None else None,
        provider_status=gone.provider_status,
        owner=Owner(gone.tenant_id, gone.user_id, gone.customer_locale) if gone.tenant_id else None,
        amount=gone.amount, currency=gone.currency, amount_refunded=gone.refunds_reported, refunds=gone.refunds,
        refunded_at=gone.refunded_at, paid_at=gone.paid_at, disputed_at=gone.disputed_at,
        receipt_url=gone.receipt_url, invoice_url=gone.invoice_url, payment_method=gone.payment_method,
        payment_method_detail=gone.payment_method_detail,
        customer_email=gone.customer_email, customer_name=gone.customer_name,
        email_rank=gone.customer_email_rank, name_rank=gone.customer_name_rank,
        subscription=gone.subscription,
    )
    merged = merge_payment(keep, fact)
    if keep.idempotency_key is None and gone.idempotency_key is not None:
        # The platform made `gone` ahead of its payment: its key, and what it asked for, now name `keep`.
        merged = replace(merged, idempotency_key=gone.idempotency_key, requested_amount=gone.requested_amount,
                         requested_currency=gone.requested_currency)
    if gone.failed_at is not None and _is_latest_failure(merged, gone.failed_at, gone.failure_code,
                                                         gone.failure_message):
        merged = replace(merged, failed_at=gone.failed_at, failure_code=gone.failure_code,
                         failure_message=gone.failure_message)
    if gone.action_requested_at is not None and (merged.action_requested_at is None
                                                 or gone.action_requested_at > merged.action_requested_at):
        merged = replace(merged, action_url=gone.action_url, action_instructions=gone.action_instructions,
                         action_requested_at=gone.action_requested_at)
    return merged


def _is_latest_failure(row: Transaction, at: datetime, code: str | None, message: str | None) -> bool:
    """Whether a failure at `at` is the row's latest (one second's failures ordered by their words)."""
    return row.failed_at is None or (at.timestamp(), code or "", message or "") >= (
        row.failed_at.timestamp(), row.failure_code or "", row.failure_message or "")


def _decided(status: TxnStatus) -> bool:
    """An outcome (paid, cancelled, refunded, disputed), not an attempt in progress or failed."""
    return _TXN_PRECEDENCE[status][0] >= 1


_REFUNDS = (TxnStatus.REFUNDED, TxnStatus.PARTIALLY_REFUNDED)


def _refund_status(amount: int | None, amount_refunded: int) -> TxnStatus:
    """Refund events carry the cumulative amount refunded; judged against the payment's amount (full
    while that is not known)."""
    if amount is not None and amount_refunded < amount:
        return TxnStatus.PARTIALLY_REFUNDED
    return TxnStatus.REFUNDED


# What a payment shows when every refund of it failed or was cancelled: paid, the money with the merchant.
_REFUNDS_UNDONE = ("refund_failed", "refund_cancelled")


def _refund_outcome(amount: int | None, refunded: int, refunds: tuple[Refund, ...]) -> tuple[TxnStatus, str]:
    """The status and provider status of a payment refunds were reported for: refunded in full or in
    part, or, when every one failed, paid again (the money came back to the merchant)."""
    if refunded == 0 and any(r.undone for r in refunds):
        failed = any(r.state is RefundState.FAILED for r in refunds)
        return TxnStatus.SUCCEEDED, "refund_failed" if failed else "refund_cancelled"
    status = _refund_status(amount, refunded)
    return status, status.value


def _standing(row: Transaction) -> TxnStatus:
    """A row's place in the order of statuses: a payment whose refunds all failed shows as paid, but ranks
    among the refunded, so that no late report of the payment undoes what its refunds left."""
    if row.status is TxnStatus.SUCCEEDED and row.provider_status in _REFUNDS_UNDONE:
        return TxnStatus.REFUNDED
    return row.status


def merge_subscription(row: Subscription | None, fact: SubscriptionFact) -> Subscription:
    ref = fact.ref
    if row is None:
        row = Subscription(
            id=new_id(),
            provider=ref.provider,
            status=fact.status or SubStatus.PENDING,
            status_at=fact.at,
            stripe_subscription_id=ref.subscription_id if ref.provider is Provider.STRIPE else None,
            razorpay_subscription_id=ref.subscription_id if ref.provider is Provider.RAZORPAY else None,
        )
    merged = replace(
        row,
        tenant_id=_first(row.tenant_id, fact.owner.tenant_id if fact.owner else None),
        user_id=_first(row.user_id, fact.owner.user_id if fact.owner else None),
        customer_locale=_first(row.customer_locale, fact.owner.locale if fact.owner else None),
        customer_email=_first(row.customer_email, fact.customer_email),
        customer_name=_first(row.customer_name, fact.customer_name),
        plan=_first(row.plan, fact.plan),
        plan_id=_first(row.plan_id, fact.plan_id),
        plan_nickname=_first(row.plan_nickname, fact.plan_nickname),
        trial_ends=_latest(row.trial_ends, fact.trial_ends),  # a trial is extended, never shortened
    )
    if fact.status is None:
        if row.provider_status is None:  # still no status: dated by the earliest event that named it
            merged = replace(merged, status_at=min(row.status_at, fact.at))
        return merged
    plan = fact.plan or merged.plan
    snapshot = _snapshot(fact.current_period_end, fact.current_period_start, fact.provider_status, plan,
                         fact.cancelled_at, fact.cancel_at, fact.price_currency, fact.price_amount)
    held = _snapshot(row.current_period_end, row.current_period_start, row.provider_status, row.plan,
                     row.cancelled_at, row.cancel_at, row.price_currency, row.price_amount)
    # A row no snapshot has given a status yet (made from a checkout that came first) takes the first.
    if row.provider_status is None or (
        _sub_candidate(fact.status, fact.at, snapshot) > _sub_candidate(row.status, row.status_at, held)
    ):
        merged = replace(
            merged,
            status=fact.status,
            status_at=fact.at,
            provider_status=fact.provider_status,
            plan=plan,
            plan_id=fact.plan_id or merged.plan_id,
            plan_nickname=fact.plan_nickname if fact.plan_id else merged.plan_nickname,
            current_period_start=fact.current_period_start,
            current_period_end=fact.current_period_end,
            cancelled_at=fact.cancelled_at,
            cancel_at=fact.cancel_at,
            price_amount=fact.price_amount,
            price_currency=fact.price_currency,
        )
    return merged
