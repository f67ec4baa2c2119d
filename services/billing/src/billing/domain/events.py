"""What ingest works with: an event as received, its outcome, the row kept for it, and the ports to the
store of events (one database transaction per batch, under locks)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import Protocol

from billing.domain.model import Provider, SubRef, TxnRef
from billing.domain.working_set import WorkingSet


class Outcome(str, Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    FAILED = "failed"


@dataclass(frozen=True)
class IncomingEvent:
    provider: Provider
    event_id: str
    event_type: str
    payload: bytes
    received_at: datetime
    request_id: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # the delivery's evidence headers, by lower-case name
    client_address: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider.value, self.event_id)

    @cached_property
    def body_sha256(self) -> str:
        """The signed body's SHA-256, in hex: kept as evidence, and a Razorpay delivery's identity."""
        return hashlib.sha256(self.payload).hexdigest()

    @property
    def body_identifies(self) -> bool:
        """Razorpay's event id header is outside its signature: a signed body resent under a new id is
        the same delivery. (Razorpay retries with the same body; two events never share one.)"""
        return self.provider is Provider.RAZORPAY


class Attention(str, Enum):
    """What an event made that someone in finance has to act on."""

    DISPUTE_OPENED = "dispute_opened"  # evidence is due at the provider by its deadline
    REFUND_FAILED = "refund_failed"  # the customer is still owed the money, and was emailed so


@dataclass(frozen=True)
class IngestResult:
    event_id: str
    outcome: Outcome
    error: str | None = None
    transaction_ids: tuple[str, ...] = ()
    subscription_ids: tuple[str, ...] = ()
    attention: tuple[Attention, ...] = ()


@dataclass(frozen=True)
class EventRecord:
    """The row kept for an event: inserted when new, updated when a failed one is retried."""

    event: IncomingEvent
    payload_text: str
    status: Outcome
    error: str | None
    transaction_ids: tuple[str, ...]
    subscription_ids: tuple[str, ...]
    retry: bool


@dataclass
class KnownEvents:
    """What the store already holds of a batch's events: the status of each event id, and for Razorpay
    bodies (by SHA-256) the event id they were stored under."""

    statuses: dict[tuple[str, str], str] = field(default_factory=dict)
    bodies: dict[str, str] = field(default_factory=dict)


class TransientStoreError(Exception):
    """The database could not finish the batch for a passing reason (deadlock, lost connection)."""


class BatchUnit(Protocol):
    """One database transaction, as the ingest use case needs it."""

    async def read(
        self, event_keys: Sequence[tuple[str, str]], txn_refs: Sequence[TxnRef], sub_refs: Sequence[SubRef],
        bodies: Sequence[str] = (),
    ) -> tuple[KnownEvents, WorkingSet]:
        """What is stored of these events (and of these Razorpay bodies), and the rows the refs name, with the
        payments without an owner of the subscriptions the sub_refs name, locked for this unit."""

    async def write(self, working_set: WorkingSet, records: Sequence[EventRecord]) -> None:
        """Keep the batch's changed rows, emails and events."""


class EventStore(Protocol):
    def unit(self, lock_keys: Sequence[str]) -> AbstractAsyncContextManager[BatchUnit]:
        """A database transaction holding a lock on each key (given sorted) until it ends."""
