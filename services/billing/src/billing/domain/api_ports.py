"""What billing's internal API needs of storage, one port per concern; PostgreSQL's adapter implements
them all (adapters/reader.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

from billing.domain.api_types import (
    EventFilter,
    EventSelection,
    Page,
    PendingPayment,
    RefusedEmail,
    Stamped,
    StoredEvent,
    SubFilter,
    TxnFilter,
)
from billing.domain.events import IngestResult
from billing.domain.model import Provider, Subscription, Transaction


class RecordsPort(Protocol):
    async def create_pending(self, p: PendingPayment) -> tuple[Stamped[Transaction], bool, dict[str, Any]]: ...
    async def get_transaction(self, tenant_id: str, txn_id: str) -> Stamped[Transaction] | None: ...
    async def list_transactions(self, f: TxnFilter, limit: int, after: str | None) -> Page[Stamped[Transaction]]: ...
    async def get_subscription(self, tenant_id: str, sub_id: str) -> Stamped[Subscription] | None: ...
    async def list_subscriptions(self, f: SubFilter, limit: int, after: str | None) -> Page[Stamped[Subscription]]: ...


class EventsPort(Protocol):
    async def list_events(self, f: EventFilter, limit: int, after: str | None) -> Page[StoredEvent]: ...
    async def get_event(self, provider: Provider, event_id: str) -> tuple[StoredEvent, bytes] | None: ...
    async def failed_events(self, limit: int) -> Sequence[tuple[StoredEvent, bytes]]: ...

    async def select_events(self, selection: EventSelection, limit: int) -> Sequence[tuple[StoredEvent, bytes]]:
        """The stored events the selection names, the earliest received first."""

    async def record_replay(self, requested_by: str, reason: str, selection: EventSelection, dry_run: bool,
                            results: Sequence[IngestResult]) -> str:
        """Keep the audit record of a replay; its id."""

    async def claim_due_retries(self, limit: int, lease: timedelta) -> Sequence[tuple[StoredEvent, bytes]]:
        """Failed events whose retry is due, taken for `lease`: no other replica takes them meanwhile."""

    async def next_retry_in(self) -> float | None: ...


class RefusedEmailsPort(Protocol):
    async def refused_emails(self, limit: int, *, requeue: bool) -> list[RefusedEmail]:
        """The oldest emails the notifier refused; with `requeue`, each queued for it again."""


class AttributionPort(Protocol):
    async def unattributed_payments(self, limit: int) -> list[Stamped[Transaction]]:
        """Payments received that no tenant owns, the earliest paid first."""

    async def unattributed_subscriptions(self, limit: int) -> list[Stamped[Subscription]]:
        """Subscriptions that no tenant owns, the earliest recorded first."""

    async def payment_by_id(self, txn_id: str) -> Stamped[Transaction] | None:
        """A payment whoever owns it (the one kept, if it was merged into another)."""

    async def get_transaction(self, tenant_id: str, txn_id: str) -> Stamped[Transaction] | None: ...
    async def get_subscription(self, tenant_id: str, sub_id: str) -> Stamped[Subscription] | None: ...
