"""Emails: what kinds there are, what data each needs, and how a request is validated."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from email_validator import EmailNotValidError, validate_email


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


class EmailStatus(str, Enum):
    QUEUED = "queued"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"


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


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different email."""


# Per kind: the data fields and their types. "url" and "line" are strings with extra rules.
_SPEC: dict[EmailKind, dict[str, str]] = {
    EmailKind.QUOTE_CREATED: {"quote_number": "line", "total": "money", "view_url": "url", "valid_until": "date?"},
    EmailKind.INVOICE_GENERATED: {"invoice_number": "line", "amount": "money", "due_date": "date",
                                  "pay_url": "url"},
    EmailKind.PAYMENT_RECEIVED: {"transaction_id": "line", "amount": "money", "payment_method": "line?",
                                 "payment_date": "date", "receipt_url": "url?"},
    EmailKind.PAYMENT_FAILED: {"amount": "money", "reason": "line?", "retry_url": "url?"},
    EmailKind.PAYMENT_REFUNDED: {"transaction_id": "line", "refunded": "money", "original": "money?",
                                 "full": "bool"},
    EmailKind.TICKET_CREATED: {"ticket_number": "line", "subject": "line", "ticket_url": "url"},
    EmailKind.TICKET_UPDATED: {"ticket_number": "line", "subject": "line", "old_status": "line",
                               "new_status": "line", "ticket_url": "url"},
    EmailKind.SUBSCRIPTION_ACTIVATED: {"plan": "line?", "price": "money?", "next_billing_date": "date?"},
    EmailKind.SUBSCRIPTION_CANCELLED: {"plan": "line?", "effective_date": "date", "reactivation_url": "url?",
                                      "ended": "bool"},
    EmailKind.PAYMENT_REFUND_FAILED: {"transaction_id": "line", "amount": "money", "reason": "line?"},
    EmailKind.SUBSCRIPTION_TRIAL_ENDING: {"plan": "line?", "trial_end": "date", "price": "money?"},
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_LINE = 200
MAX_ID = 255


@dataclass(frozen=True)
class EmailRequest:
    kind: EmailKind
    tenant_id: str
    to_email: str
    to_name: str
    tenant_name: str
    data: dict[str, Any] = field(default_factory=dict)
    user_id: str = ""

    def fingerprint(self) -> str:
        """A digest of the content, to tell a retried request from a different one with the same key."""
        def encode(value: Any) -> Any:
            if isinstance(value, Money):
                return [value.amount_minor, value.currency]
            if isinstance(value, datetime):
                return value.isoformat()
            return value
        body = {"kind": self.kind.value, "tenant": self.tenant_id, "user": self.user_id, "to": self.to_email,
                "name": self.to_name, "tenant_name": self.tenant_name,
                "data": {k: encode(v) for k, v in sorted(self.data.items())}}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _line(name: str, value: Any, limit: int = MAX_LINE) -> str:
    if not isinstance(value, str):
        raise InvalidEmailRequest(name, "must be text")
    if _CONTROL.search(value):
        # CR/LF in a name or subject is a header injection attempt.
        raise InvalidEmailRequest(name, "must be one line without control characters")
    if len(value) > limit:
        raise InvalidEmailRequest(name, f"must be at most {limit} characters")
    return value


def validate(request: EmailRequest) -> EmailRequest:
    """The request, normalised, or InvalidEmailRequest naming the field."""
    if not request.tenant_id:
        raise InvalidEmailRequest("content.tenant_id", "is required")
    _line("content.tenant_id", request.tenant_id, MAX_ID)
    _line("content.user_id", request.user_id, MAX_ID)
    if not request.to_email:
        raise InvalidEmailRequest("content.to.email", "is required")
    _line("content.to.email", request.to_email, 254)
    try:
        address = validate_email(request.to_email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidEmailRequest("content.to.email", str(exc)) from None
    _line("content.to.name", request.to_name)
    if not request.tenant_name:
        raise InvalidEmailRequest("content.tenant_name", "is required")
    _line("content.tenant_name", request.tenant_name)
    spec = _SPEC[request.kind]
    unknown = set(request.data) - set(spec)
    if unknown:
        raise InvalidEmailRequest(f"content.{request.kind.value}.{sorted(unknown)[0]}", "is not a field of this kind")
    for name, kind in spec.items():
        path = f"content.{request.kind.value}.{name}"
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        value = request.data.get(name)
        if value in (None, "") and kind != "bool":
            if not optional:
                raise InvalidEmailRequest(path, "is required")
            continue
        if kind in ("line", "url"):
            _line(path, value, 2000 if kind == "url" else MAX_LINE)
            if kind == "url" and not value.startswith(("https://", "http://")):
                raise InvalidEmailRequest(path, "must be an http(s) URL")
        elif kind == "money":
            if not isinstance(value, Money) or value.amount_minor < 0 or not _CURRENCY.match(value.currency):
                raise InvalidEmailRequest(path, "must be a non-negative amount with an ISO-4217 currency")
        elif kind == "date":
            if not isinstance(value, datetime):
                raise InvalidEmailRequest(path, "must be a timestamp")
        elif kind == "bool" and not isinstance(value, bool):
            raise InvalidEmailRequest(path, "must be true or false")
    return EmailRequest(request.kind, request.tenant_id, address, request.to_name, request.tenant_name,
                        dict(request.data), request.user_id)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class EmailRecord:
    """A row of the email log."""

    id: str
    tenant_id: str
    user_id: str
    to_email: str
    to_name: str
    subject: str
    email_type: str
    status: EmailStatus
    attempts: int
    idempotency_key: str
    message_id: str
    created_at: datetime
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    error_message: str | None = None
    tenant_name: str = ""
    html: str = ""
    text: str = ""
    requeued_at: datetime | None = None  # when an operator last queued it again after it failed

    @property
    def sent(self) -> bool:
        return self.status is EmailStatus.SENT
