"""Realistic Stripe and Razorpay events, shaped as the providers send them.

A `StripeScenario` / `RazorpayScenario` holds the ids of one customer's payment and subscription, so the
events it builds refer to each other as real ones do (a refund names its charge and payment intent).
Each call to `event(type)` advances the scenario's clock by a second, so a flow's events carry
increasing `created` times even when delivered shuffled.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

STRIPE_API_VERSION = "2024-06-20"
# The first API version whose invoices are linked to their payments by invoice_payment objects.
STRIPE_INVOICE_PAYMENTS_VERSION = "2025-03-31"


def _id(prefix: str, length: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class _Clock:
    now: int = field(default_factory=lambda: int(time.time()) - 3600)

    def tick(self) -> int:
        self.now += 1
        return self.now


# A dispute's status as each of its events shows it: opened, evidence sent, money taken, then won.
_DISPUTE_STATUS = {"created": "needs_response", "funds_withdrawn": "needs_response", "updated": "under_review",
                   "closed": "won", "funds_reinstated": "won"}


def _fail_latest_refund(scenario: StripeScenario | RazorpayScenario, make: str, **failed: Any) -> dict[str, Any]:
    """The scenario's latest refund (made first by event type `make` if there is none), now failed: the
    payment no longer counts it as refunded. A copy, as an event carries it."""
    if not scenario.refunds:
        scenario.event(make)
    refund = scenario.refunds[0]
    if refund["status"] != "failed":
        scenario.refunded -= refund["amount"]
        refund.update(status="failed", **failed)
    return dict(refund)


@dataclass
class StripeScenario:
    tenant_id: str = "tenant_1"
    user_id: str = "user_1"
    amount: int = 4999
    currency: str = "usd"
    email: str = "buyer@example.com"
    clock: _Clock = field(default_factory=_Clock)
    pi: str = field(default_factory=lambda: _id("pi_"))
    charge: str = field(default_factory=lambda: _id("ch_"))
    declined_charge: str = field(default_factory=lambda: _id("ch_"))
    dispute: str = field(default_factory=lambda: _id("dp_"))
    dispute_created: int | None = None  # set by the first dispute event: the dispute's own creation time
    sub: str = field(default_factory=lambda: _id("sub_"))
    invoice: str = field(default_factory=lambda: _id("in_"))
    invoice_pi: str = field(default_factory=lambda: _id("pi_"))
    renewal_invoice: str = field(default_factory=lambda: _id("in_"))
    renewal_pi: str = field(default_factory=lambda: _id("pi_"))
    customer: str = field(default_factory=lambda: _id("cus_", 14))
    session: str = field(default_factory=lambda: _id("cs_test_"))
    refunded: int = 0
    refund_parts: int = 5  # each refund is this share of the amount: 5, a fifth; 1, all of it
    refunds: list[dict[str, Any]] = field(default_factory=list)  # the refunds made, newest first
    # The API version whose shape objects take. From 2025-03-31 an invoice names neither its payment intent
    # nor (at the top) its subscription; invoice_payment.paid links invoice and payment intent.
    api_version: str = STRIPE_API_VERSION
    # What a Checkout Session is for ("subscription", or "payment" of `pi`), and whether it is paid by a
    # delayed method (a bank debit): then it completes unpaid and the outcome comes as an async event.
    checkout_mode: str = "subscription"
    delayed_payment: bool = False

    TYPES = (
        "payment_intent.requires_action", "payment_intent.processing", "payment_intent.payment_failed",
        "payment_intent.succeeded", "payment_intent.canceled", "payment_intent.amount_capturable_updated",
        "charge.succeeded", "charge.captured",
        "charge.expired", "charge.failed",
        "charge.refunded", "charge.refund.updated", "refund.updated", "refund.failed",
        "charge.dispute.created", "charge.dispute.updated", "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated", "charge.dispute.closed", "checkout.session.completed",
        "checkout.session.async_payment_succeeded", "checkout.session.async_payment_failed",
        "checkout.session.expired", "invoice_payment.paid",
        "customer.subscription.created", "customer.subscription.updated", "customer.subscription.paused",
        "customer.subscription.resumed", "customer.subscription.trial_will_end",
        "customer.subscription.deleted", "invoice.payment_succeeded", "invoice.paid",
        "invoice.payment_failed", "invoice.payment_action_required", "invoice.voided",
    )

    @property
    def invoice_payments(self) -> bool:
        return self.api_version >= STRIPE_INVOICE_PAYMENTS_VERSION

    @property
    def metadata(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "user_id": self.user_id}

    def envelope(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": _id("evt_"),
            "object": "event",
            "api_version": self.api_version,
            "created": self.clock.tick(),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": _id("req_", 14), "idempotency_key": None},
            "type": event_type,
        }

    def payment_intent(self, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.pi, "object": "payment_intent", "amount": self.amount,
            "amount_received": self.amount if status == "succeeded" else 0, "currency": self.currency,
            "customer": self.customer, "status": status, "metadata": self.metadata,
            "latest_charge": self.charge if status == "succeeded" else None,
            "last_payment_error": None, "payment_method_types": ["card"],
            "receipt_email": self.email, "created": self.clock.now, "livemode": False, **extra,
        }

    def charge_object(self, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.charge, "object": "charge", "amount": self.amount,
            "amount_captured": self.amount if status == "succeeded" else 0, "captured": status == "succeeded",
            "amount_refunded": self.refunded, "currency": self.currency, "customer": self.customer,
            "payment_intent": self.pi, "paid": status == "succeeded", "status": status,
            "refunded": self.refunded >= self.amount, "metadata": self.metadata,
            "billing_details": {"email": self.email, "name": "Asha Rao"},
            "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242"}},
            "receipt_email": self.email,
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{self.charge}",
            "failure_code": None, "failure_message": None, "created": self.clock.now, **extra,
        }

    def subscription(self, status: str, **extra: Any) -> dict[str, Any]:
        start = self.clock.now
        return {
            "id": self.sub, "object": "subscription", "customer": self.customer, "status": status,
            "metadata": self.metadata, "cancel_at_period_end": False, "canceled_at": None,
            "current_period_start": start, "current_period_end": start + 30 * 86400,
            "items": {"object": "list", "data": [{
                "id": _id("si_", 14), "object": "subscription_item",
                "price": {"id": "price_pro_monthly", "object": "price", "lookup_key": "pro_monthly",
                          "nickname": "Pro monthly", "unit_amount": self.amount, "currency": self.currency},
                "current_period_start": start, "current_period_end": start + 30 * 86400,
            }]},
            "created": start, **extra,
        }

    def checkout_session(self, action: str) -> dict[str, Any]:
        paid = action == "async_payment_succeeded" or (action == "completed" and not self.delayed_payment)
        payment = self.checkout_mode == "payment"
        return {
            "id": self.session, "object": "checkout.session", "mode": self.checkout_mode,
            "subscription": None if payment or action == "expired" else self.sub,
            "payment_intent": self.pi if payment else None, "customer": self.customer,
            "amount_total": self.amount, "currency": self.currency, "payment_status": "paid" if paid else "unpaid",
            "status": "expired" if action == "expired" else "complete", "metadata": self.metadata,
            "client_reference_id": self.user_id, "customer_details": {"email": self.email, "name": "Asha Rao"}}

    def invoice_object(self, paid: bool) -> dict[str, Any]:
        # The first invoice is paid; a failed payment is the next period's (renewal) invoice.
        invoice, pi = (self.invoice, self.invoice_pi) if paid else (self.renewal_invoice, self.renewal_pi)
        obj = {
            "id": invoice, "object": "invoice", "customer": self.customer,
            "customer_email": self.email, "subscription": self.sub, "payment_intent": pi,
            "amount_due": self.amount, "amount_paid": self.amount if paid else 0, "currency": self.currency,
            "status": "paid" if paid else "open", "metadata": {}, "attempted": True, "attempt_count": 1,
            "subscription_details": {"metadata": self.metadata},
            "status_transitions": {"paid_at": self.clock.now if paid else None},
            "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice}",
        }
        if self.invoice_payments:
            for key in ("payment_intent", "subscription", "subscription_details"):
                del obj[key]
            obj["parent"] = {"type": "subscription_details",
                             "subscription_details": {"subscription": self.sub, "metadata": self.metadata}}
        return obj

    def event(self, event_type: str) -> dict[str, Any]:
        kind, _, action = event_type.rpartition(".")
        if kind == "payment_intent":
            status = {"requires_action": "requires_action", "processing": "processing",
                      "payment_failed": "requires_payment_method", "succeeded": "succeeded",
                      "canceled": "canceled", "amount_capturable_updated": "requires_capture"}[action]
            extra: dict[str, Any] = {}
            if status == "requires_capture":
                extra.update(amount_capturable=self.amount, capture_method="manual")
            if action == "payment_failed":
                extra["last_payment_error"] = {"type": "card_error", "code": "card_declined",
                                               "decline_code": "insufficient_funds",
                                               "message": "Your card has insufficient funds."}
            return self.envelope(event_type, self.payment_intent(status, **extra))
        if event_type in ("charge.succeeded", "charge.captured"):
            return self.envelope(event_type, self.charge_object("succeeded"))
        if event_type == "charge.expired":  # an authorisation never captured
            return self.envelope(event_type, self.charge_object(
                "succeeded", captured=False, amount_captured=0, amount_refunded=self.amount, refunded=True))
        if event_type == "charge.failed":
            return self.envelope(event_type, self.charge_object(
                "failed", failure_code="card_declined", failure_message="Your card was declined."))
        if event_type == "charge.refunded":
            # Each refund trigger refunds a share more (a fifth unless told); the charge shows the
            # cumulative amount, and lists its refunds as API versions before 2022-11-15 do.
            share = self.amount // self.refund_parts
            self.refunded = min(self.amount, self.refunded + share)
            self.refunds.insert(0, {
                "id": _id("re_"), "object": "refund", "amount": share, "charge": self.charge,
                "payment_intent": self.pi, "currency": self.currency, "created": self.clock.now + 1,
                "status": "succeeded", "reason": "requested_by_customer", "failure_reason": None,
                "metadata": {}})
            return self.envelope(event_type, self.charge_object(
                "succeeded", refunds={"object": "list", "data": [dict(r) for r in self.refunds]}))
        if event_type in ("charge.refund.updated", "refund.updated", "refund.failed"):
            # The card was closed: the money is back with the merchant.
            return self.envelope(event_type, _fail_latest_refund(
                self, "charge.refunded", failure_reason="expired_or_canceled_card"))
        if kind == "charge.dispute":
            if self.dispute_created is None:
                self.dispute_created = self.clock.now + 1
            return self.envelope(event_type, {
                "id": self.dispute, "object": "dispute", "amount": self.amount, "currency": self.currency,
                "charge": self.charge, "payment_intent": self.pi, "reason": "fraudulent",
                "status": _DISPUTE_STATUS[action], "created": self.dispute_created})
        if kind == "checkout.session":
            return self.envelope(event_type, self.checkout_session(action))
        if kind == "customer.subscription":
            status = {"created": "active", "updated": "active", "resumed": "active",
                      "trial_will_end": "trialing", "paused": "paused", "deleted": "canceled"}[action]
            extra = {"canceled_at": self.clock.now, "ended_at": self.clock.now} if action == "deleted" else {}
            if action == "trial_will_end":  # Stripe's notice, three days before the trial ends
                extra = {"trial_start": self.clock.now - 11 * 86400, "trial_end": self.clock.now + 3 * 86400}
            return self.envelope(event_type, self.subscription(status, **extra))
        if kind == "invoice":
            unpaid = action in ("payment_failed", "payment_action_required", "voided")  # the renewal's invoice
            obj = self.invoice_object(paid=not unpaid)
            if action == "voided":
                obj["status"] = "void"
            return self.envelope(event_type, obj)
        if event_type == "invoice_payment.paid":
            return self.envelope(event_type, {
                "id": _id("inpay_"), "object": "invoice_payment", "invoice": self.invoice,
                "amount_paid": self.amount, "amount_requested": self.amount, "currency": self.currency,
                "is_default": True, "payment": {"type": "payment_intent", "payment_intent": self.invoice_pi},
                "status": "paid", "status_transitions": {"paid_at": self.clock.now, "canceled_at": None},
                "created": self.clock.now, "livemode": False})
        raise ValueError(f"unknown Stripe event type {event_type!r}")

    def declined(self, event_type: str) -> dict[str, Any]:
        """An event of an attempt on another card (declined_charge), before the one that pays."""
        paying, self.charge = self.charge, self.declined_charge
        try:
            return self.event(event_type)
        finally:
            self.charge = paying

    def past_due(self) -> dict[str, Any]:
        return self.envelope("customer.subscription.updated", self.subscription("past_due"))


@dataclass
class RazorpayScenario:
    tenant_id: str = "tenant_1"
    user_id: str = "user_1"
    amount: int = 125000
    currency: str = "INR"
    email: str = "buyer@example.in"
    clock: _Clock = field(default_factory=_Clock)
    order: str = field(default_factory=lambda: _id("order_", 14))
    payment: str = field(default_factory=lambda: _id("pay_", 14))
    failed_payment: str = field(default_factory=lambda: _id("pay_", 14))
    sub: str = field(default_factory=lambda: _id("sub_", 14))
    sub_payment: str = field(default_factory=lambda: _id("pay_", 14))
    renewal_payment: str = field(default_factory=lambda: _id("pay_", 14))  # a renewal charge that fails
    sub_invoice: str = field(default_factory=lambda: _id("inv_", 14))  # each subscription charge's invoice
    renewal_invoice: str = field(default_factory=lambda: _id("inv_", 14))
    dispute: str = field(default_factory=lambda: _id("disp_", 14))
    dispute_created: int | None = None
    refunded: int = 0
    refunds: list[dict[str, Any]] = field(default_factory=list)  # refund entities made, newest first

    TYPES = (
        "payment.authorized", "payment.failed", "payment.captured", "order.paid", "refund.created",
        "refund.processed", "refund.failed",
        "subscription.authenticated", "subscription.activated", "subscription.charged",
        "subscription.pending", "subscription.halted", "subscription.cancelled", "subscription.completed",
        "subscription.paused", "subscription.resumed", "subscription.updated",
        "payment.dispute.created", "payment.dispute.under_review", "payment.dispute.action_required",
        "payment.dispute.won", "payment.dispute.lost", "payment.dispute.closed",
    )

    @property
    def notes(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "user_id": self.user_id}

    def envelope(self, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "entity": "event", "account_id": "acc_BoxCostProTest", "event": event_type,
            "contains": list(payload), "payload": payload, "created_at": self.clock.tick(),
        }

    def payment_entity(self, payment_id: str, status: str, **extra: Any) -> dict[str, Any]:
        return {"entity": {
            "id": payment_id, "entity": "payment", "amount": self.amount, "currency": self.currency,
            "status": status, "order_id": self.order, "invoice_id": None, "international": False,
            "method": "upi", "amount_refunded": self.refunded,
            "refund_status": None if not self.refunded else ("full" if self.refunded >= self.amount else "partial"),
            "captured": status in ("captured", "refunded"), "description": "BoxCostPro order",
            "email": self.email, "contact": "+919900000000", "notes": self.notes,
            "error_code": None, "error_description": None, "created_at": self.clock.now, **extra,
        }}

    def subscription_entity(self, status: str) -> dict[str, Any]:
        start = self.clock.now
        return {"entity": {
            "id": self.sub, "entity": "subscription", "plan_id": "plan_pro_monthly",
            "customer_id": "cust_BoxCostPro01", "status": status, "current_start": start,
            "current_end": start + 30 * 86400, "ended_at": start if status in ("cancelled", "completed") else None,
            "quantity": 1, "notes": self.notes, "charge_at": start + 30 * 86400, "total_count": 12,
            "paid_count": 1, "created_at": start, "short_url": f"https://rzp.io/i/{self.sub[4:12]}",
        }}

    def event(self, event_type: str) -> dict[str, Any]:
        if event_type == "payment.failed":
            return self.envelope(event_type, {"payment": self.payment_entity(
                self.failed_payment, "failed", error_code="BAD_REQUEST_ERROR",
                error_description="Payment failed because the bank declined it.")})
        if event_type in ("payment.authorized", "payment.captured"):
            status = event_type.split(".")[1]
            return self.envelope(event_type, {"payment": self.payment_entity(self.payment, status)})
        if event_type == "order.paid":
            order = {"entity": {"id": self.order, "entity": "order", "amount": self.amount,
                                "amount_paid": self.amount, "amount_due": 0, "currency": self.currency,
                                "receipt": "rcpt_1", "status": "paid", "notes": self.notes}}
            return self.envelope(event_type, {"payment": self.payment_entity(self.payment, "captured"),
                                              "order": order})
        if event_type in ("refund.created", "refund.processed"):
            # A refund of a quarter more is made pending; processed, it is the pending one done (or, with
            # none pending, one made and done at once, as instant refunds are).
            if event_type == "refund.created" or not self.refunds or self.refunds[0]["status"] != "pending":
                refund_amount = self.amount // 4
                self.refunded = min(self.amount, self.refunded + refund_amount)
                self.refunds.insert(0, {"id": _id("rfnd_", 14), "entity": "refund", "amount": refund_amount,
                                        "currency": self.currency, "payment_id": self.payment, "notes": [],
                                        "status": "pending", "created_at": self.clock.now + 1})
            if event_type == "refund.processed":
                self.refunds[0]["status"] = "processed"
            return self.envelope(event_type, {"refund": {"entity": dict(self.refunds[0])},
                                              "payment": self.payment_entity(self.payment, "captured")})
        if event_type == "refund.failed":
            refund = _fail_latest_refund(self, "refund.processed")
            return self.envelope(event_type, {"refund": {"entity": refund},
                                              "payment": self.payment_entity(self.payment, "captured")})
        if event_type.startswith("payment.dispute."):
            if self.dispute_created is None:
                self.dispute_created = self.clock.now + 1
            action = event_type.split(".")[2]
            status = "open" if action in ("created", "action_required") else action
            dispute = {"entity": {
                "id": self.dispute, "entity": "dispute", "payment_id": self.payment, "amount": self.amount,
                "currency": self.currency, "amount_deducted": self.amount if status == "lost" else 0,
                "reason_code": "chargeback", "reason_description": "The customer does not recognise the payment.",
                "respond_by": self.dispute_created + 7 * 86400, "status": status, "phase": "chargeback",
                "created_at": self.dispute_created}}
            return self.envelope(event_type, {"payment": self.payment_entity(self.payment, "captured"),
                                              "dispute": dispute})
        if event_type.startswith("subscription."):
            status = {"authenticated": "authenticated", "activated": "active", "charged": "active",
                      "pending": "pending", "halted": "halted", "cancelled": "cancelled",
                      "completed": "completed", "paused": "paused", "resumed": "active",
                      "updated": "active"}[event_type.split(".")[1]]
            payload: dict[str, Any] = {"subscription": self.subscription_entity(status)}
            if event_type == "subscription.charged":
                entity = self.payment_entity(self.sub_payment, "captured", order_id=None,
                                             invoice_id=self.sub_invoice)
                payload["payment"] = entity
            elif event_type in ("subscription.pending", "subscription.halted"):
                # The renewal charge that failed: Razorpay sends it with the subscription it left unpaid.
                payload["payment"] = self.payment_entity(
                    self.renewal_payment, "failed", order_id=None, invoice_id=self.renewal_invoice,
                    error_code="BAD_REQUEST_ERROR",
                    error_description="The UPI mandate was revoked by the customer.")
            return self.envelope(event_type, payload)
        raise ValueError(f"unknown Razorpay event type {event_type!r}")


def new_event_id() -> str:
    """Razorpay sends the event id in the X-Razorpay-Event-Id header, not in the body."""
    return _id("evt_", 14)
