"""What each Stripe event type means for BoxCostPro's payments and subscriptions.

Event names are Stripe's real ones (`payment_intent.payment_failed`, not `payment_intent.failed`).
Objects are read as Stripe documents them, tolerating both the classic shapes and the 2025 ones
(invoice subscription under `parent.subscription_details`, periods on subscription items, invoices and
payment intents that no longer name each other, linked by `invoice_payment.paid`).

One module for all of Stripe's event types, over 400 lines: each handler reads one object type, and the
table at the end maps every event type to its handler, which a reader would otherwise chase across files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from fractions import Fraction
from typing import Any

from billing.domain.providers import fields as f
from billing.domain.providers.fields import InvalidEvent
from billing.domain.model import (
    CONTACT_ACCOUNT,
    CONTACT_CARD,
    CONTACT_RECEIPT,
    CustomerAction,
    Facts,
    Failure,
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

_PI_STATUS = {
    "payment_intent.succeeded": TxnStatus.SUCCEEDED,
    "payment_intent.payment_failed": TxnStatus.FAILED,
    "payment_intent.canceled": TxnStatus.CANCELLED,
    "payment_intent.processing": TxnStatus.PROCESSING,
    "payment_intent.requires_action": TxnStatus.REQUIRES_ACTION,
    # With manual capture: the card is authorised (requires_capture). An endpoint subscribed to intent
    # events alone would otherwise hear of the payment only at its capture.
    "payment_intent.amount_capturable_updated": TxnStatus.AUTHORIZED,
}

_SUB_STATUS = {
    "incomplete": SubStatus.PENDING,
    "trialing": SubStatus.TRIALING,
    "active": SubStatus.ACTIVE,
    "past_due": SubStatus.PAST_DUE,
    "unpaid": SubStatus.UNPAID,
    "paused": SubStatus.PAUSED,
    "canceled": SubStatus.CANCELLED,
    "incomplete_expired": SubStatus.EXPIRED,
}


def _ref(pi: str | None, *, invoice: str | None = None, charge: str | None = None) -> TxnRef:
    if not (pi or invoice or charge):
        raise InvalidEvent("the event names no payment intent, invoice or charge")
    return TxnRef(
        provider=Provider.STRIPE,
        stripe_payment_intent_id=pi,
        stripe_invoice_id=invoice,
        stripe_charge_id=charge,
    )


# Next actions the customer completes on a page of Stripe's, away from the checkout and often days later:
# the page's link, and what it asks. 3-D Secure (redirect_to_url, use_stripe_sdk) is done in the checkout
# while the customer is there, and an invoice's is told by invoice.payment_action_required.
_HOSTED_ACTIONS = {
    "display_bank_transfer_instructions": ("hosted_instructions_url",
                                           "Transfer the amount to the bank account shown on the page."),
    "verify_with_microdeposits": ("hosted_verification_url",
                                  "Confirm your bank account with the small deposits made to it."),
    "boleto_display_details": ("hosted_voucher_url", "Pay the Boleto voucher shown on the page."),
    "oxxo_display_details": ("hosted_voucher_url", "Pay the OXXO voucher shown on the page at any OXXO store."),
    "konbini_display_details": ("hosted_voucher_url", "Pay at a convenience store with the details on the page."),
    "multibanco_display_details": ("hosted_voucher_url", "Pay with the Multibanco reference shown on the page."),
}
# An invoice paid off-session (a renewal) whose card asks the customer to authenticate: on its page.
_AUTHENTICATE = "Your bank asks you to confirm this payment."


def _hosted_action(pi: dict[str, Any]) -> CustomerAction | None:
    action = f.obj(pi, "next_action", required=False)
    kind = f.text(action, "type")
    if kind not in _HOSTED_ACTIONS:
        return None
    link, instructions = _HOSTED_ACTIONS[kind]
    url = f.text(f.obj(action, kind, required=False), link)
    return CustomerAction(url, instructions) if url else None


def _payment_intent(event_type: str, pi: dict[str, Any], at: datetime) -> Facts:
    status = _PI_STATUS[event_type]
    error = f.obj(pi, "last_payment_error", required=False)
    failure = None
    if status is TxnStatus.FAILED:
        failure = Failure(
            code=f.text(error, "decline_code") or f.text(error, "code") or "payment_failed",
            message=f.text(error, "message"),
        )
    return [
        PaymentFact(
            # latest_charge: the charge of the latest attempt, the one that paid once the intent succeeded.
            ref=_ref(f.text(pi, "id", required=True), invoice=f.text(pi, "invoice"),
                     charge=f.text(pi, "latest_charge")),
            at=at,
            status=status,
            provider_status=f.text(pi, "status") or event_type.split(".", 1)[1],
            owner=f.owner(pi.get("metadata")),
            # What it collected once succeeded (less than `amount` after a partial manual capture).
            amount=_taken(f.amount(pi, "amount", required=True),
                          f.amount(pi, "amount_received") if status is TxnStatus.SUCCEEDED else None),
            currency=f.currency(pi, required=True),
            paid_at=at if status is TxnStatus.SUCCEEDED else None,
            failure=failure,
            payment_method=_only_method(pi),
            customer_email=f.text(pi, "receipt_email"),
            email_rank=CONTACT_RECEIPT,
            action=_hosted_action(pi) if status is TxnStatus.REQUIRES_ACTION else None,
        )
    ]


def _taken(asked: int | None, taken: int | None) -> int | None:
    """The amount collected when the object states one, else the amount asked."""
    return taken if taken else asked


def _only_method(pi: dict[str, Any]) -> str | None:
    """The payment method type when the intent allows only one; with several, its charge tells."""
    types = pi.get("payment_method_types")
    if isinstance(types, list) and len(types) == 1 and isinstance(types[0], str):
        return types[0]
    return None


def _method_detail(details: dict[str, Any]) -> str | None:
    """A card's brand and last four digits, or a bank account's bank, from the charge's method details."""
    kind = details.get("type")
    used = details.get(kind) if isinstance(kind, str) else None
    if not isinstance(used, dict):
        return None
    return f.method_detail(used.get("brand"), used.get("last4"), used.get("bank_name"))


def _charge(event_type: str, charge: dict[str, Any], at: datetime) -> Facts:
    charge_id = f.text(charge, "id", required=True)
    billing = f.obj(charge, "billing_details", required=False)
    receipt_email = f.text(charge, "receipt_email")
    captured = charge.get("captured")  # False only under manual capture, before the capture
    details = f.obj(charge, "payment_method_details", required=False)
    authorised = f.amount(charge, "amount", required=True)
    common = dict(
        ref=_ref(f.text(charge, "payment_intent"), charge=charge_id),
        at=at,
        owner=f.owner(charge.get("metadata")),
        # What was captured (less than `amount` after a partial manual capture).
        amount=_taken(authorised, f.amount(charge, "amount_captured") if captured is True else None),
        currency=f.currency(charge, required=True),
        receipt_url=f.text(charge, "receipt_url"),
        payment_method=f.text(details, "type"),
        payment_method_detail=_method_detail(details),
        customer_email=receipt_email or f.text(billing, "email"),
        email_rank=CONTACT_RECEIPT if receipt_email else CONTACT_CARD,
        customer_name=f.text(billing, "name"),
        name_rank=CONTACT_CARD,
    )
    if event_type in ("charge.succeeded", "charge.captured"):  # captured: an authorisation taken later
        if captured is False:
            # Manual capture: the card is only authorised, and no money moves unless the intent is captured
            # (payment_intent.succeeded); a released authorisation ends in payment_intent.canceled.
            return [PaymentFact(**common, status=TxnStatus.AUTHORIZED, provider_status="requires_capture")]
        return [PaymentFact(**common, status=TxnStatus.SUCCEEDED, provider_status="succeeded", paid_at=at)]
    if event_type == "charge.failed":
        failure = Failure(f.text(charge, "failure_code") or "charge_failed", f.text(charge, "failure_message"))
        return [PaymentFact(**common, status=TxnStatus.FAILED, provider_status="failed", failure=failure)]
    if event_type == "charge.expired":
        # An authorisation never captured ran out (after 7 days for most cards): no money moved.
        return [PaymentFact(**common, status=TxnStatus.CANCELLED, provider_status="authorization_expired")]
    if captured is False:
        # An authorisation released (the intent cancelled before capture): Stripe "refunds" the
        # uncaptured charge, but no money had moved, so there is nothing refunded either.
        return [PaymentFact(**common, status=TxnStatus.CANCELLED, provider_status="authorization_released")]
    # charge.refunded: amount_refunded is cumulative over every refund of the charge. API versions before
    # 2022-11-15 also list the refunds (newest first), each with its state.
    refunded = f.amount(charge, "amount_refunded", required=True)
    listed = f.obj(charge, "refunds", required=False).get("data")
    listed = [r for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
    # A partial capture releases the rest of the authorisation as a refund, made at the capture and so
    # the oldest listed; amount_refunded counts it. No money went back to the customer for it.
    released = max(0, authorised - common["amount"])
    if released and listed and listed[-1].get("amount") == released:
        listed.pop()
    refunded = max(0, refunded - released)
    items = tuple(item for r in listed if (item := _refund_item(r)) is not None)
    if refunded == 0 and not items:  # only that release: the payment is still captured
        return [PaymentFact(**common, status=TxnStatus.SUCCEEDED, provider_status="succeeded", paid_at=at)]
    return [
        PaymentFact(
            **common,
            status=TxnStatus.REFUNDED,
            provider_status="refunded" if charge.get("refunded") else "partially_refunded",
            amount_refunded=refunded,
            refunded_at=(f.timestamp(listed[0], "created") if listed else None) or at,
            refunds=items,
        )
    ]


_REFUND_STATE = {
    "pending": RefundState.PENDING,
    "requires_action": RefundState.PENDING,
    "succeeded": RefundState.SUCCEEDED,
    "failed": RefundState.FAILED,
    "canceled": RefundState.CANCELLED,
}


def _refund_item(refund: dict[str, Any]) -> Refund | None:
    """One refund and its state; None for the release of an authorisation that expired uncaptured,
    which Stripe makes as a refund though no money had moved."""
    if f.text(refund, "reason") == "expired_uncaptured_charge":
        return None
    return Refund(f.text(refund, "id", required=True), f.amount(refund, "amount", required=True),
                  f.known(_REFUND_STATE, f.text(refund, "status") or "succeeded", "refund status"),
                  f.text(refund, "failure_reason"))


def _refund(refund: dict[str, Any], at: datetime) -> Facts:
    """charge.refund.updated, refund.updated, refund.failed: a refund's state changed. A refund can fail
    days after it succeeded (a closed card): the money is back with the merchant, and the payment is no
    longer refunded by that amount."""
    item = _refund_item(refund)
    charge, pi = f.text(refund, "charge"), f.text(refund, "payment_intent")
    if item is None or not (charge or pi):
        return []  # an authorisation released, or a refund of no payment (a customer's balance)
    return [
        PaymentFact(
            ref=_ref(pi, charge=charge),
            at=at,
            status=TxnStatus.REFUNDED,
            provider_status=f"refund_{item.state.value}",
            owner=f.owner(refund.get("metadata")),
            currency=f.currency(refund),
            refunded_at=None if item.undone else f.timestamp(refund, "created") or at,
            refunds=(item,),
        )
    ]


def _dispute(dispute: dict[str, Any], at: datetime) -> Facts:
    return [
        PaymentFact(
            ref=_ref(f.text(dispute, "payment_intent"), charge=f.text(dispute, "charge")),
            at=at,
            status=TxnStatus.DISPUTED,
            provider_status=f"dispute_{f.text(dispute, 'status') or 'created'}",
            currency=f.currency(dispute),
            disputed_at=f.timestamp(dispute, "created") or at,
        )
    ]


def _invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    details = f.obj(invoice, "subscription_details", required=False)
    parent = f.obj(f.obj(invoice, "parent", required=False), "subscription_details", required=False)
    sub_id = f.text(invoice, "subscription") or f.text(parent, "subscription")
    metadata = details.get("metadata") or parent.get("metadata") or {}
    return sub_id, metadata if isinstance(metadata, dict) else {}


# An invoice's payment when the invoice was not paid (the amount is the amount due).
_INVOICE_UNPAID = {
    "invoice.payment_failed": (TxnStatus.FAILED, "invoice_payment_failed"),
    # The card asks the customer to authenticate (3-D Secure), as a renewal often does: the payment waits
    # on them, and the invoice's page is where they do it. Not a failure: they are asked to act.
    "invoice.payment_action_required": (TxnStatus.REQUIRES_ACTION, "invoice_payment_action_required"),
    # No longer owed: a payment that was attempted (and failed, or waits) ends cancelled.
    "invoice.voided": (TxnStatus.CANCELLED, "invoice_voided"),
}


def _invoice(event_type: str, invoice: dict[str, Any], at: datetime) -> Facts:
    sub_id, sub_metadata = _invoice_subscription(invoice)
    invoice_id = f.text(invoice, "id", required=True)
    common = dict(
        ref=_ref(f.text(invoice, "payment_intent"), invoice=invoice_id),
        at=at,
        owner=f.owner(invoice.get("metadata"), sub_metadata),
        currency=f.currency(invoice, required=True),  # both kinds below state an amount
        customer_email=f.text(invoice, "customer_email"),
        customer_name=f.text(invoice, "customer_name"),
        email_rank=CONTACT_ACCOUNT,
        name_rank=CONTACT_ACCOUNT,
        invoice_url=f.text(invoice, "hosted_invoice_url"),
        subscription=SubRef(Provider.STRIPE, sub_id) if sub_id else None,
    )
    unpaid = _INVOICE_UNPAID.get(event_type)
    if unpaid is not None:
        status, provider_status = unpaid
        if event_type == "invoice.voided" and invoice.get("attempted") is not True:
            return []  # voided before any attempt: it names no payment, and records none
        failure = Failure(provider_status, None) if status is TxnStatus.FAILED else None
        page = f.text(invoice, "hosted_invoice_url")
        action = CustomerAction(page, _AUTHENTICATE) if status is TxnStatus.REQUIRES_ACTION and page else None
        return [PaymentFact(**common, amount=f.amount(invoice, "amount_due", required=True), status=status,
                            provider_status=provider_status, failure=failure, action=action)]
    paid = f.amount(invoice, "amount_paid", required=True)
    if paid == 0:
        # A trial's first invoice, or one a coupon covered: Stripe marks it paid, but no money moved,
        # so there is no payment to record nor a receipt to send.
        return []
    transitions = f.obj(invoice, "status_transitions", required=False)
    return [
        PaymentFact(
            **common,
            amount=paid,
            status=TxnStatus.SUCCEEDED,
            provider_status="invoice_paid",
            paid_at=f.timestamp(transitions, "paid_at") or at,
        )
    ]


def _subscription(event_type: str, sub: dict[str, Any], at: datetime) -> Facts:
    raw_status = f.text(sub, "status", required=True)
    if event_type == "customer.subscription.deleted":
        raw_status = "canceled"
    status = f.known(_SUB_STATUS, raw_status, "subscription status")
    items = f.obj(sub, "items", required=False).get("data")
    item = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    price = f.obj(item, "price", required=False) or f.obj(sub, "plan", required=False)
    ended = None
    if status is SubStatus.CANCELLED:
        ended = f.timestamp(sub, "canceled_at") or f.timestamp(sub, "ended_at") or at
    period_end = f.timestamp(sub, "current_period_end") or f.timestamp(item, "current_period_end")
    # A cancellation asked for at the period's end (or for a set date): still active until then.
    cancel_at = f.timestamp(sub, "cancel_at") or (period_end if sub.get("cancel_at_period_end") is True else None)
    price_amount, price_currency = _recurring_price(sub)
    return [
        SubscriptionFact(
            ref=SubRef(Provider.STRIPE, f.text(sub, "id", required=True)),
            at=at,
            status=status,
            provider_status=raw_status,
            owner=f.owner(sub.get("metadata")),
            plan=f.text(price, "lookup_key") or f.text(price, "nickname") or f.text(price, "id"),
            plan_id=f.text(price, "id"),
            plan_nickname=f.text(price, "nickname"),
            current_period_start=f.timestamp(sub, "current_period_start")
            or f.timestamp(item, "current_period_start"),
            current_period_end=period_end,
            cancelled_at=ended,
            cancel_at=cancel_at,
            price_amount=price_amount,
            price_currency=price_currency,
            # During a trial its period is the trial: its end is the trial's, where trial_end is not given.
            trial_ends=(f.timestamp(sub, "trial_end") or period_end)
            if event_type == "customer.subscription.trial_will_end" else None,
        )
    ]


def _recurring_price(sub: dict[str, Any]) -> tuple[int | None, str | None]:
    """What each period costs as the subscription's fixed prices state it: its items' unit amounts times
    their quantities, in one currency. None where no one figure tells what the customer pays: a metered
    or tiered price, items the event does not all list, a discount. The price is what the email and the
    API show of the plan, so one it cannot read leaves it out rather than failing the event."""
    items = f.obj(sub, "items", required=False)
    data = items.get("data")
    if sub.get("discount") or sub.get("discounts") or items.get("has_more") or not isinstance(data, list) or not data:
        return None, None
    total, currencies = 0, set()
    try:
        for item in data:
            if not isinstance(item, dict):
                return None, None
            price = f.obj(item, "price", required=False) or f.obj(item, "plan", required=False)
            unit = f.amount(price, "unit_amount" if "unit_amount" in price else "amount")
            quantity = 1 if item.get("quantity") is None else item["quantity"]
            recurring = price.get("recurring", {})
            if not isinstance(recurring, dict):  # no way to know whether it is metered
                return None, None
            metered = recurring.get("usage_type", price.get("usage_type")) == "metered"
            if (unit is None or metered or price.get("billing_scheme") == "tiered"
                    or isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0):
                return None, None
            total += unit * quantity
            currencies.add(f.currency(price, required=True))
    except InvalidEvent:
        return None, None
    return (total, currencies.pop()) if len(currencies) == 1 else (None, None)


# A Checkout paid by a delayed method (bank debits, vouchers) completes unpaid; days later the outcome
# comes as async_payment_succeeded (paid) or async_payment_failed. Stripe's fulfilment guide subscribes an
# endpoint to these checkout events alone, so they may be the only word of the payment. A session that
# expires after an attempt cancels the intent it made (sessions never tried name none).
_CHECKOUT_ENDS = {
    "checkout.session.async_payment_failed": (TxnStatus.FAILED, "checkout_async_payment_failed"),
    "checkout.session.expired": (TxnStatus.CANCELLED, "checkout_expired"),
}


def _checkout_session(event_type: str, session: dict[str, Any], at: datetime) -> Facts:
    details = f.obj(session, "customer_details", required=False)
    email = f.text(details, "email") or f.text(session, "customer_email")
    owner = f.owner(session.get("metadata"))
    if owner is not None and owner.locale is None:  # the checkout's language, where the platform set one
        owner = replace(owner, locale=f.locale(session.get("locale")))  # "auto" is no locale
    mode = f.text(session, "mode")
    if mode == "subscription":
        sub_id = f.text(session, "subscription")
        if not sub_id:
            return []
        # Links the subscription to its tenant; its state comes from customer.subscription.* events.
        return [SubscriptionFact(ref=SubRef(Provider.STRIPE, sub_id), at=at, owner=owner, customer_email=email,
                                 customer_name=f.text(details, "name"))]
    pi = f.text(session, "payment_intent")
    if mode != "payment" or not pi:
        return []
    payment_status = f.text(session, "payment_status")
    if event_type in _CHECKOUT_ENDS:
        status, provider_status = _CHECKOUT_ENDS[event_type]
    elif payment_status == "paid":
        status, provider_status = TxnStatus.SUCCEEDED, "checkout_paid"
    else:
        status, provider_status = TxnStatus.PENDING, f"checkout_{payment_status or 'unknown'}"
    return [
        PaymentFact(
            ref=_ref(pi),
            at=at,
            status=status,
            provider_status=provider_status,
            owner=owner,
            amount=(total := f.amount(session, "amount_total")),
            currency=f.currency(session, required=total is not None),
            paid_at=at if status is TxnStatus.SUCCEEDED else None,
            customer_email=email,
            customer_name=f.text(details, "name"),
            email_rank=CONTACT_ACCOUNT,
            name_rank=CONTACT_ACCOUNT,
        )
    ]


def _invoice_payment(payment: dict[str, Any], at: datetime) -> Facts:
    """invoice_payment.paid (API versions from 2025-03-31, where invoices and payment intents no longer
    name each other): the one event that says which payment paid which invoice."""
    paid_by = f.obj(payment, "payment")
    transitions = f.obj(payment, "status_transitions", required=False)
    paid = f.amount(payment, "amount_paid", required=True)
    if paid == 0:
        return []  # nothing was charged (see _invoice)
    return [
        PaymentFact(
            ref=_ref(f.text(paid_by, "payment_intent"), invoice=f.text(payment, "invoice", required=True),
                     charge=f.text(paid_by, "charge")),
            at=at,
            status=TxnStatus.SUCCEEDED,
            provider_status="invoice_paid",
            amount=paid,
            currency=f.currency(payment, required=paid is not None),
            paid_at=f.timestamp(transitions, "paid_at") or at,
        )
    ]


def _handlers() -> dict[str, Callable[[str, dict[str, Any], datetime], Facts]]:
    table: dict[str, Callable[[str, dict[str, Any], datetime], Facts]] = {}
    for name in _PI_STATUS:
        table[name] = _payment_intent
    # With manual capture, charge.captured and charge.expired are the capture, or the end, of an
    # authorisation (the only report of it for a charge made without a payment intent).
    for name in ("charge.succeeded", "charge.captured", "charge.expired", "charge.failed", "charge.refunded"):
        table[name] = _charge
    for name in ("charge.refund.updated", "refund.updated", "refund.failed"):
        table[name] = lambda _t, obj, at: _refund(obj, at)
    # Each reports the dispute's status at that time (needs_response, under_review, then won, lost or
    # warning_closed); the latest wins.
    for name in ("charge.dispute.created", "charge.dispute.updated", "charge.dispute.funds_withdrawn",
                 "charge.dispute.funds_reinstated", "charge.dispute.closed"):
        table[name] = lambda _t, obj, at: _dispute(obj, at)
    # payment_action_required and voided: without them a renewal waiting for the customer's authentication,
    # or no longer owed, shows only what its payment intent says (from API version 2025-03-31, an intent
    # that names no invoice).
    for name in ("invoice.payment_succeeded", "invoice.paid", "invoice.payment_failed",
                 "invoice.payment_action_required", "invoice.voided"):
        table[name] = _invoice
    table["invoice_payment.paid"] = lambda _t, obj, at: _invoice_payment(obj, at)
    for suffix in ("created", "updated", "deleted", "paused", "resumed", "trial_will_end"):
        table[f"customer.subscription.{suffix}"] = _subscription
    # A checkout's bank-debit outcome and its expiry end its payment (see _CHECKOUT_ENDS).
    for suffix in ("completed", "async_payment_succeeded", "async_payment_failed", "expired"):
        table[f"checkout.session.{suffix}"] = _checkout_session
    return table


HANDLERS = _handlers()


# Money is kept in ISO 4217 minor units. Stripe states two currencies otherwise: ISK in hundredths (for
# backwards compatibility: the króna has no minor unit, and Stripe has taken only whole krónur since
# April 2023), and MGA in whole ariary (zero-decimal at Stripe; ISO 4217 gives it two decimals).
_STRIPE_TO_ISO = {"ISK": Fraction(1, 100), "MGA": Fraction(100)}


def _in_iso_units(fact: PaymentFact | SubscriptionFact) -> PaymentFact | SubscriptionFact:
    if isinstance(fact, SubscriptionFact):
        scale = _STRIPE_TO_ISO.get(fact.price_currency or "")
        if scale is None or fact.price_amount is None:
            return fact
        converted = fact.price_amount * scale  # a price no whole amount in ISO units tells is left out
        return replace(fact, price_amount=int(converted) if converted.denominator == 1 else None,
                       price_currency=fact.price_currency if converted.denominator == 1 else None)
    scale = _STRIPE_TO_ISO.get(fact.currency) if fact.currency else None
    if scale is None:
        return fact

    def iso(value: int | None) -> int | None:
        if value is None:
            return None
        converted = value * scale
        if converted.denominator != 1:
            raise InvalidEvent(f"{value} {fact.currency} at Stripe is no whole amount in ISO 4217 minor units")
        return int(converted)

    return replace(fact, amount=iso(fact.amount), amount_refunded=iso(fact.amount_refunded),
                   refunds=tuple(replace(r, amount=iso(r.amount)) for r in fact.refunds))


def interpret(event_type: str, event: dict[str, Any]) -> Facts | None:
    """The facts a Stripe event states, or None for a type billing does not act on."""
    handler = HANDLERS.get(event_type)
    if handler is None:
        return None
    at = f.timestamp(event, "created", required=True)
    data_object = f.obj(f.obj(event, "data"), "object")
    return [_in_iso_units(fact) for fact in handler(event_type, data_object, at)]
