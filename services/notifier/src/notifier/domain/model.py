"""An email request, how it is validated, and the email log's records."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any

from email_validator import EmailNotValidError, validate_email

from notifier.domain.contents import EmailContent, EmailKind, InvalidEmailRequest, Money, check_line


class EmailStatus(str, Enum):
    QUEUED = "queued"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different email."""


MAX_ID = 255


@dataclass(frozen=True)
class EmailRequest:
    tenant_id: str
    to_email: str
    to_name: str
    tenant_name: str
    content: EmailContent
    user_id: str = ""

    @property
    def kind(self) -> EmailKind:
        return self.content.kind

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
                "data": {k: encode(v) for k, v in sorted(self.content.values().items())}}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def validate(request: EmailRequest) -> EmailRequest:
    """The request, its address normalised, or InvalidEmailRequest naming the field."""
    check_line("content.tenant_id", request.tenant_id, MAX_ID)
    check_line("content.user_id", request.user_id, MAX_ID, required=False)
    check_line("content.to.email", request.to_email, 254)
    try:
        address = validate_email(request.to_email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidEmailRequest("content.to.email", str(exc)) from None
    check_line("content.to.name", request.to_name, required=False)
    check_line("content.tenant_name", request.tenant_name)
    request.content.check()
    return replace(request, to_email=address)


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
    erased_at: datetime | None = None  # when its recipient's data was erased at their request

    @property
    def sent(self) -> bool:
        return self.status is EmailStatus.SENT
