"""The notifier's ports: the email log it keeps, and the mail server it sends through."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from notifier.domain.model import (
    EmailRecord,
    EmailRequest,
    EmailStatus,
    RenderedEmail,
)

log = logging.getLogger(__name__)


class TransientSendError(Exception):
    """Worth trying again later: connection trouble, timeouts, 4xx replies."""


class PermanentSendError(Exception):
    """The server refused for good (5xx); the message is the server's reply."""


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: str
    to_email: str
    to_name: str
    sender_name: str
    subject: str
    html: str
    text: str
    reply_to: str = ""


class MailSender(Protocol):
    async def send(self, message: OutgoingMessage) -> None: ...


@dataclass(frozen=True)
class NewEmail:
    request: EmailRequest
    rendered: RenderedEmail
    idempotency_key: str
    fingerprint: str
    message_id: str


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt came to: sent, retry at `next_attempt_at`, or failed for good."""

    email_id: str
    created_at: datetime  # the email's, with its id its key in the log
    status: EmailStatus
    error: str | None = None
    next_attempt_at: datetime | None = None
    email_type: str = ""
    attempted: bool = True  # False: given back unsent, and its claim does not count as an attempt


@dataclass(frozen=True)
class ListFilter:
    tenant_id: str
    user_id: str | None = None
    email_type: str | None = None
    status: EmailStatus | None = None


class EmailLog(Protocol):
    async def insert_many(self, emails: Sequence[NewEmail]) -> list[tuple[EmailRecord | None, bool, str]]:
        """Store the emails whose key is new; for each, in order: the stored email, whether this call
        created it, and the fingerprint of the request that did. An email whose key is kept but whose log
        was purged (past retention) is None."""
        ...
    async def get(self, tenant_id: str, email_id: str) -> EmailRecord | None: ...
    async def list(self, where: ListFilter, limit: int, after: str | None) -> tuple[list[EmailRecord], str | None]: ...
    async def claim_due(self, limit: int, lease: timedelta) -> list[EmailRecord]: ...
    async def record_outcomes(self, outcomes: list[DeliveryResult]) -> None: ...
    async def requeue(self, tenant_id: str, ids: Sequence[str]) -> list[str]:
        """Queue the tenant's emails again if every one exists and has failed, else none; the ids queued."""
        ...
    async def requeue_failed_since(self, since: datetime, tenant_id: str | None, limit: int) -> list[str]:
        """Queue again up to `limit` emails failed since then, the earliest failures first."""
        ...
