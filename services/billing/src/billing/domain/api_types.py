"""What billing's internal API takes and answers: rows with their times, stored events, filters, pages,
and the checks every use case applies to what a caller sends."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from billing.domain.errors import InvalidRequest
from billing.domain.events import IngestResult
from billing.domain.ingest import Preview
from billing.domain.model import Provider, SubStatus, TxnStatus

T = TypeVar("T")
MAX_PAGE = 100
MAX_TEXT = 255  # ids, keys and names: the providers' ids are far shorter
MAX_REPLAYED = 1000  # failed events one "replay all" applies, the earliest received first
MAX_REFUSED = 1000  # refused emails one call lists or queues again
MAX_UNATTRIBUTED = 1000  # payments, or subscriptions, without a tenant one call lists
CURRENCY = re.compile(r"^[A-Z]{3}$")
REPLAYABLE_STATUSES = ("processed", "ignored", "failed")


@dataclass(frozen=True)
class Stamped(Generic[T]):
    """A row with when it was written."""

    row: T
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Evidence:
    """What was kept of an event's delivery, and what it changed."""

    body: bytes  # exactly as signed; empty for events stored before bodies were kept
    body_sha256: str
    headers: dict[str, str]  # the delivery's signature and ids; empty for recovered events
    client_address: str
    transaction_ids: tuple[str, ...]
    subscription_ids: tuple[str, ...]


@dataclass(frozen=True)
class StoredEvent:
    id: str
    provider: Provider
    event_id: str
    event_type: str
    status: str
    error: str | None
    attempts: int
    received_at: datetime
    processed_at: datetime | None
    request_id: str | None
    next_retry_at: datetime | None = None
    payload: str = ""
    evidence: Evidence | None = None  # one event's read only
    erased_at: datetime | None = None  # its payload, body and headers erased at a customer's request

    @property
    def dead_letter(self) -> bool:
        return self.status == "failed" and self.next_retry_at is None


@dataclass(frozen=True)
class RefusedEmail:
    """An email the notifier refused, kept in the outbox with the refusal."""

    id: str
    idempotency_key: str
    kind: str
    refusal: str
    created_at: datetime


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_token: str | None


@dataclass(frozen=True)
class PendingPayment:
    idempotency_key: str
    tenant_id: str
    user_id: str
    provider: Provider | None
    amount: int
    currency: str
    stripe_payment_intent_id: str
    razorpay_order_id: str

    def validated(self) -> PendingPayment:
        for name in ("idempotency_key", "tenant_id"):
            text(name, getattr(self, name))
        text("user_id", self.user_id, required=False)
        if self.provider is None:
            raise InvalidRequest("provider", "must be STRIPE or RAZORPAY")
        if self.amount <= 0:
            raise InvalidRequest("amount.amount_minor", "must be a positive amount in minor units")
        if not CURRENCY.match(self.currency):
            raise InvalidRequest("amount.currency", "must be an ISO-4217 code")
        wanted = "stripe_payment_intent_id" if self.provider is Provider.STRIPE else "razorpay_order_id"
        other = "razorpay_order_id" if self.provider is Provider.STRIPE else "stripe_payment_intent_id"
        if not getattr(self, wanted):
            raise InvalidRequest(wanted, f"is required for {self.provider.value}")
        text(wanted, getattr(self, wanted))
        if getattr(self, other):
            raise InvalidRequest(other, f"does not apply to {self.provider.value}")
        return self


@dataclass(frozen=True)
class TxnFilter:
    tenant_id: str
    user_id: str | None = None
    status: str | None = None
    provider: Provider | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class SubFilter:
    tenant_id: str
    user_id: str | None = None
    status: str | None = None
    provider: Provider | None = None


@dataclass(frozen=True)
class EventFilter:
    provider: Provider | None = None
    status: str | None = None
    event_type: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None


@dataclass(frozen=True)
class EventSelection:
    """Stored events an operator replays: every condition given must hold."""

    provider: Provider | None = None
    event_ids: tuple[str, ...] = ()
    event_type: str | None = None
    tenant_id: str | None = None
    statuses: tuple[str, ...] = ()  # of REPLAYABLE_STATUSES; none: every status
    received_after: datetime | None = None
    received_before: datetime | None = None


@dataclass(frozen=True)
class ReplayReport:
    replay_id: str
    results: list[IngestResult]
    preview: Preview | None = None  # a dry run's


def checked_page_size(size: int) -> int:
    if size < 0 or size > MAX_PAGE:
        raise InvalidRequest("page_size", f"must be between 0 and {MAX_PAGE}")
    return size or 20


def text(name: str, value: str, *, required: bool = True) -> str:
    if required and not value:
        raise InvalidRequest(name, "is required")
    if len(value) > MAX_TEXT:  # also keeps error messages that quote it short
        raise InvalidRequest(name, f"must be at most {MAX_TEXT} characters")
    return value


def tenant(tenant_id: str) -> str:
    return text("tenant_id", tenant_id)


TXN_STATUSES = tuple(s.value for s in TxnStatus)
SUB_STATUSES = tuple(s.value for s in SubStatus)
EVENT_STATUSES = ("processed", "ignored", "failed", "dead_letter")


def check_status(status: str | None, allowed: Sequence[str]) -> None:
    """A misspelt status must not read as "nothing has that status"."""
    if status is not None and status not in allowed:
        raise InvalidRequest("status", f"must be one of {', '.join(allowed)}")


def operator_limit(limit: int, most: int) -> int:
    """How many an operator's list holds: 0 means 100."""
    if limit < 0 or limit > most:
        raise InvalidRequest("limit", f"must be between 0 and {most}")
    return limit or 100
