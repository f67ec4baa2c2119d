"""Whole flows as a provider would send them for one customer, in the order they happen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trigger.events import STRIPE_INVOICE_PAYMENTS_VERSION, RazorpayScenario, StripeScenario


@dataclass(frozen=True)
class Flow:
    provider: str
    description: str
    build: Callable[[str, str], list[dict[str, Any]]]


def _stripe_payment(tenant: str, user: str) -> list[dict[str, Any]]:
    s = StripeScenario(tenant_id=tenant, user_id=user)
    return [s.event(t) for t in ("payment_intent.requires_action", "payment_intent.succeeded",
                                 "charge.succeeded", "charge.refunded", "charge.dispute.created")]


def _stripe_refund_failed(tenant: str, user: str) -> list[dict[str, Any]]:
    s = StripeScenario(tenant_id=tenant, user_id=user, refund_parts=1)
    return [s.event(t) for t in ("payment_intent.succeeded", "charge.succeeded", "charge.refunded",
                                 "refund.failed")]


def _stripe_bank_debit(tenant: str, user: str) -> list[dict[str, Any]]:
    # As an endpoint subscribed the way Stripe's Checkout fulfilment guide says: checkout events only.
    s = StripeScenario(tenant_id=tenant, user_id=user, checkout_mode="payment", delayed_payment=True)
    return [s.event(t) for t in ("checkout.session.completed", "checkout.session.async_payment_succeeded")]


def _stripe_card_retry(tenant: str, user: str) -> list[dict[str, Any]]:
    s = StripeScenario(tenant_id=tenant, user_id=user)
    declined = [s.declined("charge.failed"), s.declined("payment_intent.payment_failed")]
    return declined + [s.event(t) for t in ("charge.succeeded", "payment_intent.succeeded", "charge.refunded")]


def _stripe_subscription(tenant: str, user: str) -> list[dict[str, Any]]:
    s = StripeScenario(tenant_id=tenant, user_id=user)
    s.pi = s.invoice_pi  # the first invoice's payment: Stripe tells of it four times
    return [s.event("checkout.session.completed"), s.event("customer.subscription.created"),
            s.event("charge.succeeded"), s.event("payment_intent.succeeded"), s.event("invoice.payment_succeeded"),
            s.event("invoice.paid"), s.event("invoice.payment_failed"), s.past_due(),
            s.event("customer.subscription.deleted")]


def _stripe_subscription_invoice_payments(tenant: str, user: str) -> list[dict[str, Any]]:
    # From API version 2025-03-31 the invoice and its payment intent name each other only through
    # invoice_payment.paid, and the intent and charge Stripe makes for an invoice carry no metadata.
    s = StripeScenario(tenant_id=tenant, user_id=user, api_version=STRIPE_INVOICE_PAYMENTS_VERSION)
    s.pi = s.invoice_pi
    intent, charge = s.event("payment_intent.succeeded"), s.event("charge.succeeded")
    for event in (intent, charge):
        event["data"]["object"]["metadata"] = {}
    return [s.event("checkout.session.completed"), s.event("customer.subscription.created"),
            s.event("invoice.paid"), intent, charge, s.event("invoice_payment.paid"),
            s.event("customer.subscription.deleted")]


def _razorpay_payment(tenant: str, user: str) -> list[dict[str, Any]]:
    r = RazorpayScenario(tenant_id=tenant, user_id=user)
    return [r.event(t) for t in ("payment.failed", "payment.authorized", "payment.captured",
                                 "order.paid", "refund.created", "refund.processed")]


def _razorpay_dispute(tenant: str, user: str) -> list[dict[str, Any]]:
    r = RazorpayScenario(tenant_id=tenant, user_id=user)
    return [r.event(t) for t in ("payment.captured", "payment.dispute.created", "payment.dispute.under_review",
                                 "payment.dispute.lost")]


def _razorpay_subscription(tenant: str, user: str) -> list[dict[str, Any]]:
    r = RazorpayScenario(tenant_id=tenant, user_id=user)
    return [r.event(t) for t in ("subscription.authenticated", "subscription.activated",
                                 "subscription.charged", "subscription.halted", "subscription.cancelled")]


FLOWS: dict[str, Flow] = {
    "stripe-payment": Flow("stripe", "3-D Secure payment -> success -> partial refund -> dispute", _stripe_payment),
    "stripe-bank-debit": Flow("stripe", "checkout paid by bank debit: completed unpaid -> the payment succeeds "
                              "days later", _stripe_bank_debit),
    "stripe-card-retry": Flow("stripe", "card declined -> paid with another card -> partly refunded", _stripe_card_retry),
    "stripe-refund-failed": Flow("stripe", "paid -> refunded in full -> the refund fails (the card was closed)",
                                 _stripe_refund_failed),
    "stripe-subscription": Flow("stripe", "checkout -> subscription created -> invoice paid (charge, intent, "
                                "invoice) -> renewal failed -> past due -> cancelled", _stripe_subscription),
    "stripe-subscription-2025-03-31": Flow("stripe", "the subscription flow as API versions from 2025-03-31 send it: "
                                      "invoice and payment intent linked by invoice_payment.paid",
                                      _stripe_subscription_invoice_payments),
    "razorpay-payment": Flow("razorpay", "order -> payment failed -> retry authorized -> captured -> order paid "
                             "-> partial refund (created, then processed)", _razorpay_payment),
    "razorpay-dispute": Flow("razorpay", "payment captured -> chargeback opened -> contested -> lost",
                             _razorpay_dispute),
    "razorpay-subscription": Flow("razorpay", "subscription authenticated -> activated -> charged -> halted "
                                  "-> cancelled", _razorpay_subscription),
}


def single_event(event_type: str, tenant: str, user: str) -> tuple[str, dict[str, Any]]:
    """One event of any type billing handles, with fresh ids."""
    if event_type in StripeScenario.TYPES:
        return "stripe", StripeScenario(tenant_id=tenant, user_id=user).event(event_type)
    if event_type in RazorpayScenario.TYPES:
        return "razorpay", RazorpayScenario(tenant_id=tenant, user_id=user).event(event_type)
    raise ValueError(f"unknown event type {event_type!r}; see `python -m trigger list`")
