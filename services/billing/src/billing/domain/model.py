"""Payment transactions and user subscriptions, and the facts events bring about them: the types every
part of billing's domain speaks in. How facts merge into rows is in merge.py; the rows a batch works on,
in working_set.py."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum


class Provider(str, Enum):
    STRIPE = "stripe"
    RAZORPAY = "razorpay"


class TxnStatus(str, Enum):
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    AUTHORIZED = "authorized"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    DISPUTED = "disputed"


class RefundState(str, Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the money came back to the merchant: the card was closed, the account gone
    CANCELLED = "cancelled"


# How far a refund has gone: one in progress may succeed, one that succeeded may still fail days later
# (the card was closed), and failing or being cancelled is final.
_REFUND_STANDING = {RefundState.PENDING: 0, RefundState.SUCCEEDED: 1, RefundState.FAILED: 2,
                    RefundState.CANCELLED: 2}
_UNDONE = (RefundState.FAILED, RefundState.CANCELLED)


@dataclass(frozen=True)
class Refund:
    """One refund of a payment, as the provider names it (Stripe `re_…`, Razorpay `rfnd_…`)."""

    id: str
    amount: int
    state: RefundState
    failure_reason: str | None = None

    @property
    def undone(self) -> bool:
        """Failed or cancelled: the customer did not get this money back."""
        return self.state in _UNDONE

    def _standing(self) -> tuple[int, str, str, int]:
        return (_REFUND_STANDING[self.state], self.state.value, self.failure_reason or "", self.amount)


class SubStatus(str, Enum):
    PENDING = "pending"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    UNPAID = "unpaid"
    HALTED = "halted"
    PAUSED = "paused"
    EXPIRED = "expired"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Owner:
    """Who a payment or subscription belongs to: opaque platform ids (integers or UUIDs)."""

    tenant_id: str
    user_id: str | None = None
    locale: str | None = None  # the customer's language, where the platform or the provider says it (hi-IN)


@dataclass(frozen=True)
class Failure:
    code: str | None
    message: str | None


@dataclass(frozen=True)
class TxnRef:
    """How an event names the payment it is about."""

    provider: Provider
    stripe_payment_intent_id: str | None = None
    stripe_invoice_id: str | None = None
    stripe_charge_id: str | None = None
    razorpay_order_id: str | None = None
    razorpay_payment_id: str | None = None


@dataclass(frozen=True)
class SubRef:
    provider: Provider
    subscription_id: str


# Where a payment's customer address or name came from, most trusted last: the card's billing details
# (typed by whoever paid), the customer's account (checkout, invoice, Razorpay), the address the
# merchant set for receipts. Sources can disagree; the best wins, then the first in text order, so the
# result never depends on which event came first.
CONTACT_CARD = 1
CONTACT_ACCOUNT = 2
CONTACT_RECEIPT = 3


@dataclass(frozen=True)
class CustomerAction:
    """A step the customer takes on the provider's hosted page before the payment goes through."""

    url: str
    instructions: str | None = None  # in words for the customer


@dataclass(frozen=True)
class PaymentFact:
    """What one event says about one payment. None means the event does not say."""

    ref: TxnRef
    at: datetime
    status: TxnStatus | None = None
    provider_status: str | None = None
    owner: Owner | None = None
    amount: int | None = None
    currency: str | None = None
    amount_refunded: int | None = None
    refunded_at: datetime | None = None
    paid_at: datetime | None = None
    disputed_at: datetime | None = None
    failure: Failure | None = None
    receipt_url: str | None = None  # the receipt of the charge the fact names
    invoice_url: str | None = None  # the invoice's page
    action: CustomerAction | None = None  # what the payment waits on the customer to do, where
    payment_method: str | None = None
    # What the customer knows the method by: a card's brand and last four digits ("visa 4242"), a bank's
    # or wallet's name. Never more of a card number than its last four digits.
    payment_method_detail: str | None = None
    customer_email: str | None = None
    customer_name: str | None = None
    # How much each is to be trusted as the customer's (CONTACT_*): sources disagree, and the best wins.
    email_rank: int = 0
    name_rank: int = 0
    subscription: SubRef | None = None
    refunds: tuple[Refund, ...] = ()  # refunds the event names, each with its state


@dataclass(frozen=True)
class SubscriptionFact:
    """A snapshot of a subscription as one event shows it."""

    ref: SubRef
    at: datetime
    status: SubStatus | None = None
    provider_status: str | None = None
    owner: Owner | None = None
    plan: str | None = None
    plan_id: str | None = None  # the provider's id of the plan (a Stripe price, a Razorpay plan)
    plan_nickname: str | None = None  # the merchant's name for it in the provider, where the event gives one
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_at: datetime | None = None  # a cancellation asked for, taking effect then (the period's end)
    customer_email: str | None = None
    customer_name: str | None = None
    # What each period costs, in minor units, when one fixed price states it (else None: metered or tiered
    # prices, or a discount, make the amount something no single figure tells).
    price_amount: int | None = None
    price_currency: str | None = None
    # Set by the notice a provider sends days before a trial ends (Stripe's trial_will_end): when it ends.
    trial_ends: datetime | None = None


# What one event states: its payments and subscriptions, as each provider's handlers read them.
Facts = list[PaymentFact | SubscriptionFact]


@dataclass(frozen=True)
class Transaction:
    id: str
    provider: Provider
    status: TxnStatus
    status_at: datetime
    tenant_id: str | None = None
    user_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    provider_status: str | None = None
    stripe_payment_intent_id: str | None = None
    stripe_charge_id: str | None = None
    stripe_invoice_id: str | None = None
    stripe_subscription_id: str | None = None
    razorpay_order_id: str | None = None
    razorpay_payment_id: str | None = None
    razorpay_subscription_id: str | None = None
    payment_method: str | None = None
    payment_method_detail: str | None = None
    customer_email: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    failed_at: datetime | None = None
    receipt_url: str | None = None
    paid_at: datetime | None = None
    refunded_at: datetime | None = None
    amount_refunded: int = 0
    disputed_at: datetime | None = None
    customer_name: str | None = None
    invoice_url: str | None = None
    # The provider's page where the customer completes a payment that waits on them, what it asks of
    # them, and when the provider asked (the latest attempt's).
    action_url: str | None = None
    action_instructions: str | None = None
    action_requested_at: datetime | None = None
    customer_locale: str | None = None  # the customer's language (Owner.locale): their emails are in it
    customer_email_rank: int = 0  # the CONTACT_* rank of the source each came from
    customer_name_rank: int = 0
    # What the platform asked for, on a row it created before the payment (CreatePendingTransaction);
    # `amount` is what the provider reports was charged.
    requested_amount: int | None = None
    requested_currency: str | None = None
    idempotency_key: str | None = None  # the platform's key for a row it created before the payment
    # Each refund known by its id, and the largest cumulative amount refunded the provider reported;
    # `amount_refunded` is how much of it is still refunded (a refund that failed no longer counts).
    refunds: tuple[Refund, ...] = ()
    refunds_reported: int = 0

    @property
    def ref(self) -> TxnRef:
        """Every id of the payment the row holds, as an event naming all of them would."""
        return TxnRef(self.provider, self.stripe_payment_intent_id, self.stripe_invoice_id, self.stripe_charge_id,
                      self.razorpay_order_id, self.razorpay_payment_id)

    @property
    def subscription(self) -> SubRef | None:
        """The subscription this payment belongs to, if any."""
        sub_id = self.stripe_subscription_id or self.razorpay_subscription_id
        return SubRef(self.provider, sub_id) if sub_id else None

    def matches(self, ref: TxnRef) -> bool:
        """The row holds the most specific id `ref` names (see `_named_by`)."""
        named = _named_by(ref)
        return ref.provider is self.provider and named is not None and getattr(self, named[0]) == named[1]

    def adoptable_by(self, ref: TxnRef) -> bool:
        """A row started from one id alone that an event naming it and the payment's main id takes
        over: a Razorpay refund seen before its order; a Stripe invoice whose payment intent was not
        named (API versions from 2025-03-31 name it only in invoice_payment.paid)."""
        if ref.provider is not self.provider:
            return False
        if ref.stripe_payment_intent_id and ref.stripe_invoice_id:
            return self.stripe_payment_intent_id is None and self.stripe_invoice_id == ref.stripe_invoice_id
        return (
            bool(ref.razorpay_order_id and ref.razorpay_payment_id)
            and self.razorpay_order_id is None
            and self.razorpay_payment_id == ref.razorpay_payment_id
        )


@dataclass(frozen=True)
class Subscription:
    id: str
    provider: Provider
    status: SubStatus
    status_at: datetime
    tenant_id: str | None = None
    user_id: str | None = None
    plan: str | None = None
    provider_status: str | None = None
    stripe_subscription_id: str | None = None
    razorpay_subscription_id: str | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancelled_at: datetime | None = None
    customer_email: str | None = None
    customer_name: str | None = None
    # A cancellation the customer asked for that takes effect then (the end of the paid period): the
    # subscription stays active until it does. Cleared when a newer snapshot no longer has it.
    cancel_at: datetime | None = None
    # As the newest snapshot states it (SubscriptionFact.price_amount): None when no one figure does.
    price_amount: int | None = None
    price_currency: str | None = None
    # When the trial ends, once a provider has sent its notice: the notice goes out when the address is known.
    trial_ends: datetime | None = None
    plan_id: str | None = None
    plan_nickname: str | None = None
    customer_locale: str | None = None

    @property
    def provider_id(self) -> str:
        return self.stripe_subscription_id or self.razorpay_subscription_id or ""

    def matches(self, ref: SubRef) -> bool:
        return ref.provider is self.provider and self.provider_id == ref.subscription_id


def new_id() -> str:
    """A time-ordered (version 7, RFC 9562) UUID as text: the Unix millisecond, then 74 random bits. A new
    row's key lands at the end of the primary key's index, not on a random one of its many pages, each
    written whole to the WAL at its first change after a checkpoint."""
    b = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    b[6] = b[6] & 0x0F | 0x70  # version 7
    b[8] = b[8] & 0x3F | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The columns a payment is found by: an event names it by one of them (TxnRef, most specific first),
# and a subscription's payments by their subscription.
_REF_KEYS = ("stripe_payment_intent_id", "stripe_invoice_id", "stripe_charge_id", "razorpay_order_id",
             "razorpay_payment_id")


def _named_by(ref: TxnRef) -> tuple[str, str] | None:
    """The column and id a row must hold to be the payment `ref` names: its most specific id."""
    for column in _REF_KEYS:
        if value := getattr(ref, column):
            return column, value
    return None
