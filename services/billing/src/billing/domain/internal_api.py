"""Use cases behind billing's internal API: pending transactions, tenant-scoped reads, event replay."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from billing.domain.errors import AlreadyExists, InvalidRequest, NotAssignable, NotFound, NotReplayable
from billing.domain.events import IncomingEvent, IngestResult
from billing.domain.ingest import IngestEvents, Preview
from billing.domain.model import Owner, Provider, SubRef, SubStatus, Subscription, Transaction, TxnStatus

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PAGE = 100
MAX_TEXT = 255  # ids, keys and names: the providers' ids are far shorter
MAX_REPLAYED = 1000  # failed events one "replay all" applies, the earliest received first
MAX_REFUSED = 1000  # refused emails one call lists or queues again
MAX_UNATTRIBUTED = 1000  # payments, or subscriptions, without a tenant one call lists
RETRY_LEASE = timedelta(minutes=2)  # far longer than a round of retries takes
_CURRENCY = re.compile(r"^[A-Z]{3}$")


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
            _text(name, getattr(self, name))
        _text("user_id", self.user_id, required=False)
        if self.provider is None:
            raise InvalidRequest("provider", "must be STRIPE or RAZORPAY")
        if self.amount <= 0:
            raise InvalidRequest("amount.amount_minor", "must be a positive amount in minor units")
        if not _CURRENCY.match(self.currency):
            raise InvalidRequest("amount.currency", "must be an ISO-4217 code")
        wanted = "stripe_payment_intent_id" if self.provider is Provider.STRIPE else "razorpay_order_id"
        other = "razorpay_order_id" if self.provider is Provider.STRIPE else "stripe_payment_intent_id"
        if not getattr(self, wanted):
            raise InvalidRequest(wanted, f"is required for {self.provider.value}")
        _text(wanted, getattr(self, wanted))
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


REPLAYABLE_STATUSES = ("processed", "ignored", "failed")


class BillingReader(Protocol):
    async def create_pending(self, p: PendingPayment) -> tuple[Stamped[Transaction], bool, dict[str, Any]]: ...
    async def get_transaction(self, tenant_id: str, txn_id: str) -> Stamped[Transaction] | None: ...
    async def list_transactions(self, f: TxnFilter, limit: int, after: str | None) -> Page[Stamped[Transaction]]: ...
    async def get_subscription(self, tenant_id: str, sub_id: str) -> Stamped[Subscription] | None: ...
    async def list_subscriptions(self, f: SubFilter, limit: int, after: str | None) -> Page[Stamped[Subscription]]: ...
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
    async def refused_emails(self, limit: int, *, requeue: bool) -> list[RefusedEmail]:
        """The oldest emails the notifier refused; with `requeue`, each queued for it again."""
        ...
    async def unattributed_payments(self, limit: int) -> list[Stamped[Transaction]]:
        """Payments received that no tenant owns, the earliest paid first."""
        ...
    async def unattributed_subscriptions(self, limit: int) -> list[Stamped[Subscription]]:
        """Subscriptions that no tenant owns, the earliest recorded first."""
        ...
    async def payment_by_id(self, txn_id: str) -> Stamped[Transaction] | None:
        """A payment whoever owns it (the one kept, if it was merged into another)."""
        ...


def _page_size(size: int) -> int:
    if size < 0 or size > MAX_PAGE:
        raise InvalidRequest("page_size", f"must be between 0 and {MAX_PAGE}")
    return size or 20


def _text(name: str, value: str, *, required: bool = True) -> str:
    if required and not value:
        raise InvalidRequest(name, "is required")
    if len(value) > MAX_TEXT:  # also keeps error messages that quote it short
        raise InvalidRequest(name, f"must be at most {MAX_TEXT} characters")
    return value


def _tenant(tenant_id: str) -> str:
    return _text("tenant_id", tenant_id)


TXN_STATUSES = tuple(s.value for s in TxnStatus)
SUB_STATUSES = tuple(s.value for s in SubStatus)
EVENT_STATUSES = ("processed", "ignored", "failed", "dead_letter")


def _status(status: str | None, allowed: Sequence[str]) -> None:
    """A misspelt status must not read as "nothing has that status"."""
    if status is not None and status not in allowed:
        raise InvalidRequest("status", f"must be one of {', '.join(allowed)}")


class BillingApi:
    """The internal API's use cases. Every tenant-scoped read filters by tenant in the query itself."""

    def __init__(self, reader: BillingReader, ingest: IngestEvents,
                 on_emails_queued: Callable[[], None] = lambda: None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._reader = reader
        self._ingest = ingest
        self._on_emails_queued = on_emails_queued
        self._clock = clock

    async def create_pending(self, pending: PendingPayment) -> tuple[Stamped[Transaction], bool]:
        pending = pending.validated()
        stamped, created, stored = await self._reader.create_pending(pending)
        if not created and stored.get("idempotency_key") != pending.idempotency_key:
            raise AlreadyExists("this provider payment is already recorded")
        if not created and (stored.get("tenant_id"), stored.get("amount"), stored.get("currency")) != (
                pending.tenant_id, pending.amount, pending.currency):
            raise AlreadyExists("the idempotency key was used for a different payment")
        return stamped, created

    async def get_transaction(self, tenant_id: str, txn_id: str) -> Stamped[Transaction]:
        found = await self._reader.get_transaction(_tenant(tenant_id), _text("id", txn_id))
        if found is None:
            raise NotFound(f"no transaction {txn_id} for this tenant")
        return found

    async def list_transactions(self, f: TxnFilter, page_size: int, token: str | None) -> Page[Stamped[Transaction]]:
        _tenant(f.tenant_id)
        _status(f.status, TXN_STATUSES)
        return await self._reader.list_transactions(f, _page_size(page_size), token or None)

    async def get_subscription(self, tenant_id: str, sub_id: str) -> Stamped[Subscription]:
        found = await self._reader.get_subscription(_tenant(tenant_id), _text("id", sub_id))
        if found is None:
            raise NotFound(f"no subscription {sub_id} for this tenant")
        return found

    async def list_subscriptions(self, f: SubFilter, page_size: int, token: str | None) -> Page[Stamped[Subscription]]:
        _tenant(f.tenant_id)
        _status(f.status, SUB_STATUSES)
        return await self._reader.list_subscriptions(f, _page_size(page_size), token or None)

    async def list_events(self, f: EventFilter, page_size: int, token: str | None) -> Page[StoredEvent]:
        _status(f.status, EVENT_STATUSES)
        return await self._reader.list_events(f, _page_size(page_size), token or None)

    async def get_event(self, provider: Provider | None, event_id: str) -> StoredEvent:
        if provider is None or not event_id:
            raise InvalidRequest("event_id", "provider and event_id are required")
        found = await self._reader.get_event(provider, _text("event_id", event_id))
        if found is None:
            raise NotFound(f"no {provider.value} event {event_id}")
        event, payload = found
        return replace(event, payload=payload.decode(errors="replace"))

    async def retry_due(self, limit: int = 100) -> int:
        """Automatic retries: apply failed events whose backoff has passed (the worker's round)."""
        due = await self._reader.claim_due_retries(limit, RETRY_LEASE)
        events = [IncomingEvent(e.provider, e.event_id, e.event_type, payload, e.received_at, e.request_id or "")
                  for e, payload in due]
        if events:
            await self._ingest.execute(events)
        return len(events)

    async def next_retry_in(self) -> float | None:
        return await self._reader.next_retry_in()

    async def replay_selection(self, selection: EventSelection, limit: int, *, dry_run: bool, reason: str,
                               requested_by: str) -> ReplayReport:
        """Apply stored events again, whatever their status, through today's handlers (after a handler was
        added or fixed): what their fresh delivery would give, nothing applied twice. A dry run changes
        nothing and says what would change. Each replay is recorded with who asked and why."""
        if not reason.strip():
            raise InvalidRequest("reason", "say why: it is kept with the replay")
        unknown = sorted(set(selection.statuses) - set(REPLAYABLE_STATUSES))
        if unknown:
            raise InvalidRequest("selection.statuses", f"must be among {', '.join(REPLAYABLE_STATUSES)}")
        for name, value in (("event_type", selection.event_type), ("tenant_id", selection.tenant_id),
                            *(("event_ids", e) for e in selection.event_ids)):
            if value is not None:
                _text(f"selection.{name}", value)
        if (selection.received_after and selection.received_before
                and selection.received_after >= selection.received_before):
            raise InvalidRequest("selection.received_before", "must be after received_after")
        chosen = await self._reader.select_events(selection, _operator_limit(limit, MAX_REPLAYED) if limit
                                                  else MAX_REPLAYED)
        events = [IncomingEvent(e.provider, e.event_id, e.event_type, payload, e.received_at, e.request_id or "")
                  for e, payload in chosen]
        preview = await self._ingest.preview(events) if dry_run else None
        results = preview.results if preview is not None else (
            await self._ingest.execute(events, again=True) if events else [])
        replay_id = await self._reader.record_replay(requested_by, reason.strip(), selection, dry_run, results)
        log.info("stored events replayed" if not dry_run else "replay previewed", extra={"fields": {
            "replay_id": replay_id, "requested_by": requested_by, "reason": reason.strip(), "events": len(events),
            "outcomes": {o: sum(1 for r in results if r.outcome.value == o) for o in {r.outcome.value for r in results}}}})
        return ReplayReport(replay_id, results, preview)

    async def replay(self, provider: Provider | None, event_id: str, all_failed: bool) -> list[IngestResult]:
        """Apply failed events again, as if the provider had redelivered them."""
        if all_failed and event_id:
            raise InvalidRequest("all_failed", "replay either all failed events or one event, not both")
        if all_failed:
            targets = list(await self._reader.failed_events(limit=MAX_REPLAYED))
        else:
            if provider is None or not event_id:
                raise InvalidRequest("event_id", "name one event (provider and event_id) or set all_failed")
            found = await self._reader.get_event(provider, _text("event_id", event_id))
            if found is None:
                raise NotFound(f"no {provider.value} event {event_id}")
            if found[0].status != "failed":
                raise NotReplayable(f"the event is {found[0].status}; only failed events are replayed")
            targets = [found]
        events = [IncomingEvent(e.provider, e.event_id, e.event_type, payload, e.received_at, e.request_id or "")
                  for e, payload in targets]
        return await self._ingest.execute(events) if events else []

    async def refused_emails(self, limit: int, *, requeue: bool) -> list[RefusedEmail]:
        """List the emails the notifier refused, or queue them for it again once the cause is fixed."""
        emails = await self._reader.refused_emails(_operator_limit(limit, MAX_REFUSED), requeue=requeue)
        if requeue and emails:
            log.info("refused emails queued again", extra={"fields": {"emails": len(emails)}})
            self._on_emails_queued()
        return emails

    async def assign_tenant(self, txn_id: str, tenant_id: str, user_id: str,
                            request_id: str = "") -> Stamped[Transaction]:
        """Give a payment that no tenant owns its tenant (and user), as finance found it out. A payment that
        has a tenant keeps it: NotAssignable, unless it is already this one's (the call can be repeated).
        The emails that waited for a tenant go out as if an event had brought it now: a receipt only for
        a payment made within a day (see notifications)."""
        _text("transaction_id", txn_id)
        owner = Owner(_tenant(tenant_id), _text("user_id", user_id, required=False) or None)
        found = await self._reader.payment_by_id(txn_id)
        if found is None:
            raise NotFound(f"no transaction {txn_id}")
        row = found.row
        if not row.tenant_id:
            row = await self._ingest.assign_tenant(row, owner, self._clock(), request_id) or row
        if row.tenant_id != tenant_id:
            raise NotAssignable(f"transaction {row.id} belongs to another tenant" if row.tenant_id
                                else f"transaction {row.id} was merged into another since; look it up again")
        return await self._given(self._reader.get_transaction(tenant_id, row.id), f"transaction {txn_id}")

    async def assign_subscription_tenant(self, provider: Provider | None, sub_id: str, tenant_id: str,
                                         user_id: str, request_id: str = "") -> Stamped[Subscription]:
        """As assign_tenant, for a subscription named by the provider's id (a subscription made in the
        provider's dashboard): its payments without a tenant take it too, so its renewals are the tenant's."""
        if provider is None:
            raise InvalidRequest("provider", "is required")
        ref = SubRef(provider, _text("subscription_id", sub_id))
        owner = Owner(_tenant(tenant_id), _text("user_id", user_id, required=False) or None)
        row = await self._ingest.assign_subscription_tenant(ref, owner, self._clock(), request_id)
        if row is None:
            raise NotFound(f"no {provider.value} subscription {sub_id}")
        if row.tenant_id != tenant_id:
            raise NotAssignable(f"subscription {sub_id} belongs to another tenant")
        return await self._given(self._reader.get_subscription(tenant_id, row.id), f"subscription {sub_id}")

    @staticmethod
    async def _given(read: Awaitable[Stamped[T] | None], what: str) -> Stamped[T]:
        """The row just given its tenant, as the tenant now reads it (gone only if merged meanwhile)."""
        stamped = await read
        if stamped is None:
            raise NotFound(f"{what} was merged into another since; look it up again")
        return stamped

    async def unattributed_payments(self, limit: int) -> list[Stamped[Transaction]]:
        """Payments received that no tenant owns: made without the platform's metadata (a payment link, an
        invoice from the provider's dashboard), or whose subscription billing never heard of. No tenant
        sees them, so operators and finance do."""
        return await self._reader.unattributed_payments(_operator_limit(limit, MAX_UNATTRIBUTED))

    async def unattributed_subscriptions(self, limit: int) -> list[Stamped[Subscription]]:
        """Subscriptions that no tenant owns (made in the provider's dashboard): no tenant has their access,
        and one with no payment yet shows in no list of payments."""
        return await self._reader.unattributed_subscriptions(_operator_limit(limit, MAX_UNATTRIBUTED))


def _operator_limit(limit: int, most: int) -> int:
    """How many an operator's list holds: 0 means 100."""
    if limit < 0 or limit > most:
        raise InvalidRequest("limit", f"must be between 0 and {most}")
    return limit or 100
