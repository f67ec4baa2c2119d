"""What each Razorpay event type means for BoxCostPro's payments and subscriptions.

A Razorpay event is `{"event": ..., "payload": {"payment": {"entity": {...}}, ...}, "created_at": ...}`.
One order is one transaction: a failed attempt and a later successful one on the same order are the
same purchase. Payments without an order (rare) are keyed by payment id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from billing.domain.providers import fields as f
from billing.domain.model import (
    CONTACT_ACCOUNT,
    Facts,
    Failure,
    Owner,
    PaymentFact,
    Provider,
    Refund,
    RefundState,
    SubRef,
    SubStatus,
    SubscriptionFact,
    TxnRef,
    TxnStatus,
)

_PAYMENT_STATUS = {
    "payment.authorized": TxnStatus.AUTHORIZED,
    "payment.captured": TxnStatus.SUCCEEDED,
    "payment.failed": TxnStatus.FAILED,
    "order.paid": TxnStatus.SUCCEEDED,
}

# A payment entity's own status, as a subscription event reports it. Refunds are counted by refund events.
_PAYMENT_ENTITY_STATUS = {
    "created": TxnStatus.PENDING,
    "authorized": TxnStatus.AUTHORIZED,
    "captured": TxnStatus.SUCCEEDED,
    "refunded": TxnStatus.SUCCEEDED,
    "failed": TxnStatus.FAILED,
}

_SUB_STATUS = {
    "created": SubStatus.PENDING,
    "authenticated": SubStatus.PENDING,
    "active": SubStatus.ACTIVE,
    "pending": SubStatus.PAST_DUE,
    "halted": SubStatus.HALTED,
    "paused": SubStatus.PAUSED,
    "cancelled": SubStatus.CANCELLED,
    "completed": SubStatus.COMPLETED,
    "expired": SubStatus.EXPIRED,
}

_REFUND_STATE = {"pending": RefundState.PENDING, "processed": RefundState.SUCCEEDED, "failed": RefundState.FAILED}

# Paused, resumed and updated (a plan change) are handled too: without them a paused subscription shows
# active, and its customer keeps access without paying.
SUBSCRIPTION_EVENTS = frozenset(
    f"subscription.{s}"
    for s in ("authenticated", "activated", "charged", "pending", "halted", "cancelled", "completed",
              "paused", "resumed", "updated")
)


def _entity(payload: dict[str, Any], name: str, *, required: bool = True) -> dict[str, Any]:
    wrapper = f.obj(payload, name, required=required)
    return f.obj(wrapper, "entity", required=required)


def _payment_ref(payment: dict[str, Any]) -> TxnRef:
    return TxnRef(
        provider=Provider.RAZORPAY,
        razorpay_order_id=f.text(payment, "order_id"),
        razorpay_payment_id=f.text(payment, "id", required=True),
    )


def _payment_fact(
    status: TxnStatus,
    payment: dict[str, Any],
    at: datetime,
    *,
    owner: Owner | None = None,
    subscription: SubRef | None = None,
    pay_again_url: str | None = None,
) -> PaymentFact:
    failure = None
    if status is TxnStatus.FAILED:
        failure = Failure(
            code=f.text(payment, "error_code") or "payment_failed",
            message=f.text(payment, "error_description"),
        )
    return PaymentFact(
        ref=_payment_ref(payment),
        at=at,
        status=status,
        provider_status=f.text(payment, "status"),
        owner=f.owner(payment.get("notes")) or owner,
        amount=f.amount(payment, "amount", required=True),
        currency=f.currency(payment, required=True),
        paid_at=at if status is TxnStatus.SUCCEEDED else None,
        failure=failure,
        payment_method=f.text(payment, "method"),
        payment_method_detail=_method_detail(payment),
        customer_email=f.text(payment, "email"),
        email_rank=CONTACT_ACCOUNT,
        subscription=subscription,
        invoice_url=pay_again_url,  # where the customer pays again (a failed payment's email links it)
    )


def _method_detail(payment: dict[str, Any]) -> str | None:
    """A card's network and last four digits, or the bank's or wallet's name; never a UPI address."""
    card = payment.get("card") if isinstance(payment.get("card"), dict) else {}
    return f.method_detail(card.get("network"), card.get("last4"), payment.get("bank") or payment.get("wallet"))


def _payment_event(event_type: str, payload: dict[str, Any], at: datetime) -> Facts:
    payment = _entity(payload, "payment")
    order = _entity(payload, "order", required=False)
    return [_payment_fact(_PAYMENT_STATUS[event_type], payment, at, owner=f.owner(order.get("notes")))]


def _refund_event(payload: dict[str, Any], at: datetime) -> Facts:
    refund = _entity(payload, "refund")
    payment = _entity(payload, "payment", required=False)
    payment_id = f.text(refund, "payment_id", required=True)
    # The payment entity's amount_refunded is cumulative; the refund entity is this refund alone.
    raw = f.text(refund, "status") or "processed"
    item = Refund(f.text(refund, "id", required=True), f.amount(refund, "amount", required=True),
                  f.known(_REFUND_STATE, raw, "refund status"))
    return [
        PaymentFact(
            ref=TxnRef(
                provider=Provider.RAZORPAY,
                razorpay_order_id=f.text(payment, "order_id") if payment else None,
                razorpay_payment_id=payment_id,
            ),
            at=at,
            status=TxnStatus.REFUNDED,
            provider_status=f"refund_{raw}",
            owner=f.owner(payment.get("notes"), refund.get("notes")),
            amount=f.amount(payment, "amount") if payment else None,
            currency=f.currency(refund) or (f.currency(payment) if payment else None),
            amount_refunded=f.amount(payment, "amount_refunded") if payment else None,
            refunded_at=None if item.undone else f.timestamp(refund, "created_at") or at,
            refunds=(item,),
        )
    ]


DISPUTE_EVENTS = frozenset(
    f"payment.dispute.{s}" for s in ("created", "under_review", "action_required", "won", "lost", "closed")
)


def _dispute_event(payload: dict[str, Any], at: datetime) -> Facts:
    # A chargeback on a payment: the payment is disputed from then on, and the dispute's latest state
    # (open, under_review, won, lost, closed) shows in provider_status, as for Stripe's disputes.
    dispute = _entity(payload, "dispute")
    payment = _entity(payload, "payment", required=False)
    amount = f.amount(payment, "amount") if payment else None
    return [
        PaymentFact(
            ref=TxnRef(
                provider=Provider.RAZORPAY,
                razorpay_order_id=f.text(payment, "order_id") if payment else None,
                razorpay_payment_id=f.text(dispute, "payment_id", required=True),
            ),
            at=at,
            status=TxnStatus.DISPUTED,
            provider_status=f"dispute_{f.text(dispute, 'status') or 'open'}",
            owner=f.owner(payment.get("notes")) if payment else None,
            amount=amount,
            currency=f.currency(payment, required=amount is not None) if payment else f.currency(dispute),
            disputed_at=f.timestamp(dispute, "created_at") or at,
        )
    ]


def _subscription_event(event_type: str, payload: dict[str, Any], at: datetime) -> Facts:
    sub = _entity(payload, "subscription")
    raw_status = f.text(sub, "status", required=True)
    status = f.known(_SUB_STATUS, raw_status, "subscription status")
    ref = SubRef(Provider.RAZORPAY, f.text(sub, "id", required=True))
    owner = f.owner(sub.get("notes"))
    ended = None
    if status in (SubStatus.CANCELLED, SubStatus.COMPLETED, SubStatus.EXPIRED):
        ended = f.timestamp(sub, "ended_at") or at
    # The subscription entity names only a customer id; a payment sent with it (the charge, the
    # authorisation) carries the customer's address, which the subscription's emails need.
    payment = _entity(payload, "payment", required=event_type == "subscription.charged")
    facts: Facts = [
        SubscriptionFact(
            ref=ref,
            at=at,
            status=status,
            provider_status=raw_status,
            owner=owner,
            plan=f.text(sub, "plan_id"),
            plan_id=f.text(sub, "plan_id"),
            current_period_start=f.timestamp(sub, "current_start"),
            current_period_end=f.timestamp(sub, "current_end"),
            cancelled_at=ended,
            customer_email=f.text(payment, "email"),
        )
    ]
    # A subscription event records the payment it carries with the status that payment reports: the
    # renewal charged, or the one that failed (pending, halted), which the customer can pay again at the
    # subscription's short_url.
    if payment:
        payment_status = f.known(_PAYMENT_ENTITY_STATUS, f.text(payment, "status", required=True), "payment status")
        facts.append(_payment_fact(payment_status, payment, at, owner=owner, subscription=ref,
                                   pay_again_url=f.text(sub, "short_url")))
    return facts


# Each refund event reports one refund's state; the furthest state reached wins. refund.created counts a
# normal-speed refund from when it is made (Razorpay processes it days later), and refund.failed stops
# counting one that failed.
REFUND_EVENTS = frozenset({"refund.created", "refund.processed", "refund.failed"})

HANDLED_TYPES = frozenset(_PAYMENT_STATUS) | REFUND_EVENTS | SUBSCRIPTION_EVENTS | DISPUTE_EVENTS


def interpret(event_type: str, event: dict[str, Any]) -> Facts | None:
    """The facts a Razorpay event states, or None for a type billing does not act on."""
    if event_type in _PAYMENT_STATUS:
        handler = _payment_event
    elif event_type in REFUND_EVENTS:
        handler = lambda _t, payload, at: _refund_event(payload, at)  # noqa: E731
    elif event_type in SUBSCRIPTION_EVENTS:
        handler = _subscription_event
    elif event_type in DISPUTE_EVENTS:
        handler = lambda _t, payload, at: _dispute_event(payload, at)  # noqa: E731
    else:
        return None
    at = f.timestamp(event, "created_at", required=True)
    return handler(event_type, f.obj(event, "payload"), at)
