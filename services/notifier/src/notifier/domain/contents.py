"""What each kind of email says: one typed class per kind, its fields those of the kind's proto message.

Each class checks its own fields; `check` raises InvalidEmailRequest naming the field as the API spells it
(content.<kind>.<field>). Text that is optional is "" when absent, as in proto3; money and dates are None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar


class EmailKind(str, Enum):
    QUOTE_CREATED = "quote_created"
    INVOICE_GENERATED = "invoice_generated"
    PAYMENT_RECEIVED = "payment_received"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_REFUNDED = "payment_refunded"
    TICKET_CREATED = "ticket_created"
    TICKET_UPDATED = "ticket_updated"
    SUBSCRIPTION_ACTIVATED = "subscription_activated"
    SUBSCRIPTION_CANCELLED = "subscription_cancelled"
    SUBSCRIPTION_TRIAL_ENDING = "subscription_trial_ending"
    PAYMENT_REFUND_FAILED = "payment_refund_failed"
    PAYMENT_ACTION_REQUIRED = "payment_action_required"


@dataclass(frozen=True)
class Money:
    amount_minor: int
    currency: str


class InvalidEmailRequest(ValueError):
    """A request that cannot become an email; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message

    def __reduce__(self):  # crosses to and from render worker processes intact
        return (type(self), (self.field, self.reason))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_LINE = 200
MAX_URL = 2000


def check_line(path: str, value: str, limit: int = MAX_LINE, required: bool = True) -> None:
    """One line of text: CR or LF in a name or subject would be a header injection."""
    if not value:
        if required:
            raise InvalidEmailRequest(path, "is required")
        return
    if _CONTROL.search(value):
        raise InvalidEmailRequest(path, "must be one line without control characters")
    if len(value) > limit:
        raise InvalidEmailRequest(path, f"must be at most {limit} characters")


def check_url(path: str, value: str, required: bool = True) -> None:
    check_line(path, value, MAX_URL, required)
    if value and not value.startswith(("https://", "http://")):
        raise InvalidEmailRequest(path, "must be an http(s) URL")


def _money(path: str, value: Money | None, required: bool = True) -> None:
    if value is None:
        if required:
            raise InvalidEmailRequest(path, "is required")
        return
    if value.amount_minor < 0 or not _CURRENCY.match(value.currency):
        raise InvalidEmailRequest(path, "must be a non-negative amount with an ISO-4217 currency")


def _date(path: str, value: datetime | None) -> None:
    if value is None:
        raise InvalidEmailRequest(path, "is required")


class Content:
    """Base of the kinds: `kind` names the kind, `values()` gives the fields to templates and the digest."""

    kind: ClassVar[EmailKind]

    def check(self) -> None:
        raise NotImplementedError

    def at(self, name: str) -> str:
        return f"content.{self.kind.value}.{name}"

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class QuoteCreated(Content):
    kind = EmailKind.QUOTE_CREATED
    quote_number: str
    total: Money | None
    view_url: str
    valid_until: datetime | None = None

    def check(self) -> None:
        check_line(self.at("quote_number"), self.quote_number)
        _money(self.at("total"), self.total)
        check_url(self.at("view_url"), self.view_url)


@dataclass(frozen=True)
class InvoiceGenerated(Content):
    kind = EmailKind.INVOICE_GENERATED
    invoice_number: str
    amount: Money | None
    due_date: datetime | None
    pay_url: str

    def check(self) -> None:
        check_line(self.at("invoice_number"), self.invoice_number)
        _money(self.at("amount"), self.amount)
        _date(self.at("due_date"), self.due_date)
        check_url(self.at("pay_url"), self.pay_url)


@dataclass(frozen=True)
class PaymentReceived(Content):
    kind = EmailKind.PAYMENT_RECEIVED
    transaction_id: str
    amount: Money | None
    payment_date: datetime | None
    payment_method: str = ""
    receipt_url: str = ""

    def check(self) -> None:
        check_line(self.at("transaction_id"), self.transaction_id)
        _money(self.at("amount"), self.amount)
        check_line(self.at("payment_method"), self.payment_method, required=False)
        _date(self.at("payment_date"), self.payment_date)
        check_url(self.at("receipt_url"), self.receipt_url, required=False)


@dataclass(frozen=True)
class PaymentFailed(Content):
    kind = EmailKind.PAYMENT_FAILED
    amount: Money | None
    reason: str = ""
    retry_url: str = ""

    def check(self) -> None:
        _money(self.at("amount"), self.amount)
        check_line(self.at("reason"), self.reason, required=False)
        check_url(self.at("retry_url"), self.retry_url, required=False)


@dataclass(frozen=True)
class PaymentActionRequired(Content):
    kind = EmailKind.PAYMENT_ACTION_REQUIRED
    amount: Money | None
    action_url: str
    instructions: str = ""

    def check(self) -> None:
        _money(self.at("amount"), self.amount)
        check_url(self.at("action_url"), self.action_url)
        check_line(self.at("instructions"), self.instructions, required=False)


@dataclass(frozen=True)
class PaymentRefunded(Content):
    kind = EmailKind.PAYMENT_REFUNDED
    transaction_id: str
    refunded: Money | None  # the amount refunded so far
    original: Money | None = None  # what the payment was
    full: bool = False

    def check(self) -> None:
        check_line(self.at("transaction_id"), self.transaction_id)
        _money(self.at("refunded"), self.refunded)
        _money(self.at("original"), self.original, required=False)


@dataclass(frozen=True)
class PaymentRefundFailed(Content):
    kind = EmailKind.PAYMENT_REFUND_FAILED
    transaction_id: str
    amount: Money | None  # the refund that failed
    reason: str = ""

    def check(self) -> None:
        check_line(self.at("transaction_id"), self.transaction_id)
        _money(self.at("amount"), self.amount)
        check_line(self.at("reason"), self.reason, required=False)


@dataclass(frozen=True)
class TicketCreated(Content):
    kind = EmailKind.TICKET_CREATED
    ticket_number: str
    subject: str
    ticket_url: str

    def check(self) -> None:
        check_line(self.at("ticket_number"), self.ticket_number)
        check_line(self.at("subject"), self.subject)
        check_url(self.at("ticket_url"), self.ticket_url)


@dataclass(frozen=True)
class TicketUpdated(Content):
    kind = EmailKind.TICKET_UPDATED
    ticket_number: str
    subject: str
    old_status: str
    new_status: str
    ticket_url: str

    def check(self) -> None:
        for name in ("ticket_number", "subject", "old_status", "new_status"):
            check_line(self.at(name), getattr(self, name))
        check_url(self.at("ticket_url"), self.ticket_url)


@dataclass(frozen=True)
class SubscriptionActivated(Content):
    kind = EmailKind.SUBSCRIPTION_ACTIVATED
    plan: str = ""  # the plan's name as the customer knows it; "": the email names no plan
    price: Money | None = None
    next_billing_date: datetime | None = None

    def check(self) -> None:
        check_line(self.at("plan"), self.plan, required=False)
        _money(self.at("price"), self.price, required=False)


@dataclass(frozen=True)
class SubscriptionCancelled(Content):
    kind = EmailKind.SUBSCRIPTION_CANCELLED
    effective_date: datetime | None
    plan: str = ""
    reactivation_url: str = ""
    ended: bool = False  # it has ended already, rather than going on until effective_date

    def check(self) -> None:
        check_line(self.at("plan"), self.plan, required=False)
        _date(self.at("effective_date"), self.effective_date)
        check_url(self.at("reactivation_url"), self.reactivation_url, required=False)


@dataclass(frozen=True)
class SubscriptionTrialEnding(Content):
    kind = EmailKind.SUBSCRIPTION_TRIAL_ENDING
    trial_end: datetime | None
    plan: str = ""
    price: Money | None = None  # what each period then costs; None: the email names no amount

    def check(self) -> None:
        check_line(self.at("plan"), self.plan, required=False)
        _date(self.at("trial_end"), self.trial_end)
        _money(self.at("price"), self.price, required=False)


EmailContent = (QuoteCreated | InvoiceGenerated | PaymentReceived | PaymentFailed | PaymentRefunded
                | PaymentRefundFailed | TicketCreated | TicketUpdated | SubscriptionActivated
                | SubscriptionCancelled | SubscriptionTrialEnding | PaymentActionRequired)
