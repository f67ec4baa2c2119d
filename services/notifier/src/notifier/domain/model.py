"""An email request, how it is validated, and the email log's records."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from notifier.domain import locales
from notifier.domain.contents import EmailContent, EmailKind, InvalidEmailRequest, Money, check_line, check_url


class EmailStatus(str, Enum):
    QUEUED = "queued"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different email."""


MAX_ID = 255


_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Branding:
    """How a tenant's emails look and whom its customers answer; each field optional, "" when not set.
    Unset, the email has BoxCostPro's colour, no logo, no Reply-To, and a footer naming only the tenant."""

    reply_to: str = ""
    support_email: str = ""
    support_url: str = ""
    brand_color: str = ""
    logo_url: str = ""

    def check(self) -> Branding:
        """The branding with its addresses normalised, or InvalidEmailRequest naming the field."""
        addresses = {}
        for name in ("reply_to", "support_email"):
            value = getattr(self, name)
            check_line(f"content.branding.{name}", value, 254, required=False)
            if value:
                try:
                    addresses[name] = validate_email(value, check_deliverability=False).normalized
                except EmailNotValidError as exc:
                    raise InvalidEmailRequest(f"content.branding.{name}", str(exc)) from None
        check_url("content.branding.support_url", self.support_url, required=False)
        check_url("content.branding.logo_url", self.logo_url, required=False)
        if self.logo_url and not self.logo_url.startswith("https://"):
            raise InvalidEmailRequest("content.branding.logo_url", "must be an https URL: mail clients block others")
        if self.brand_color and not _COLOUR.match(self.brand_color):
            raise InvalidEmailRequest("content.branding.brand_color", "must be #rrggbb")
        return replace(self, **addresses)

    def values(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}


@dataclass(frozen=True)
class EmailRequest:
    tenant_id: str
    to_email: str
    to_name: str
    tenant_name: str
    content: EmailContent
    user_id: str = ""
    branding: Branding = Branding()
    locale: str = ""  # BCP 47 (hi-IN); empty: English
    time_zone: str = ""  # IANA (Asia/Kolkata): the day a date falls on for the customer; empty: UTC

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
        # Absent from the digests of emails without them, as before they existed.
        if self.branding.values():
            body["branding"] = self.branding.values()
        if self.locale:
            body["locale"] = self.locale
        if self.time_zone:
            body["time_zone"] = self.time_zone
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
    check_line("content.locale", request.locale, 35, required=False)
    if request.locale:
        try:
            locales.parse(request.locale)
        except ValueError as exc:
            raise InvalidEmailRequest("content.locale", str(exc)) from None
    check_line("content.time_zone", request.time_zone, 64, required=False)
    if request.time_zone:
        try:
            ZoneInfo(request.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidEmailRequest("content.time_zone", "must be an IANA time zone such as Asia/Kolkata") from None
    request.content.check()
    return replace(request, to_email=address, branding=request.branding.check())


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
    reply_to: str = ""  # the Reply-To header; empty: none

    @property
    def sent(self) -> bool:
        return self.status is EmailStatus.SENT
