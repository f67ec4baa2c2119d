"""What each email billing asks for says, as typed values: one class per kind of the notifier's contract.

Optional text is None when absent, money is minor units with its ISO 4217 currency, dates are aware.
What comes after its email was asked for (a receipt's link, the card) is added with `amended` (see EmailAmendment).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import ClassVar


@dataclass(frozen=True)
class Money:
    amount_minor: int
    currency: str


class _Content:
    kind: ClassVar[str]  # the notifier's name of the kind (the field of its EmailContent)
    amendable: ClassVar[tuple[str, ...]] = ()  # fields a later event may fill in

    def amended(self, name: str, value: str):
        if name not in self.amendable:
            raise ValueError(f"{self.kind} has no field {name!r} to amend")
        return replace(self, **{name: value})  # type: ignore[type-var]


@dataclass(frozen=True)
class PaymentReceived(_Content):
    kind = "payment_received"
    amendable = ("receipt_url", "payment_method")
    transaction_id: str
    amount: Money | None
    payment_date: datetime | None
    payment_method: str | None = None
    receipt_url: str | None = None


@dataclass(frozen=True)
class PaymentFailed(_Content):
    kind = "payment_failed"
    amendable = ("retry_url",)
    amount: Money | None
    reason: str | None = None
    retry_url: str | None = None  # where the customer pays again, or authenticates


@dataclass(frozen=True)
class PaymentActionRequired(_Content):
    kind = "payment_action_required"
    amount: Money | None
    action_url: str  # the provider's page where the customer completes the payment
    instructions: str | None = None  # what that page asks of them, in words for the customer


@dataclass(frozen=True)
class PaymentRefunded(_Content):
    kind = "payment_refunded"
    transaction_id: str
    refunded: Money | None  # refunded so far
    original: Money | None
    full: bool


@dataclass(frozen=True)
class PaymentRefundFailed(_Content):
    kind = "payment_refund_failed"
    transaction_id: str
    amount: Money | None  # the refund that failed
    reason: str | None = None  # in words for the customer


@dataclass(frozen=True)
class SubscriptionActivated(_Content):
    kind = "subscription_activated"
    plan: str | None  # the plan's name as the customer knows it; None: the email names no plan
    price: Money | None
    next_billing_date: datetime | None


@dataclass(frozen=True)
class SubscriptionCancelled(_Content):
    kind = "subscription_cancelled"
    plan: str | None
    effective_date: datetime | None
    ended: bool  # it has ended already, rather than going on until effective_date


@dataclass(frozen=True)
class SubscriptionTrialEnding(_Content):
    kind = "subscription_trial_ending"
    plan: str | None
    trial_end: datetime
    price: Money | None  # what each period then costs


EmailContent = (PaymentReceived | PaymentFailed | PaymentActionRequired | PaymentRefunded | PaymentRefundFailed
                | SubscriptionActivated | SubscriptionCancelled | SubscriptionTrialEnding)
# The kinds billing sends, as tenants name them to turn one off.
EMAIL_KINDS = tuple(c.kind for c in (PaymentReceived, PaymentFailed, PaymentActionRequired, PaymentRefunded,
                                     PaymentRefundFailed, SubscriptionActivated, SubscriptionCancelled,
                                     SubscriptionTrialEnding))
