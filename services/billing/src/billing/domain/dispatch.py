"""Use case: deliver the email outbox to the notifier, retrying while it is unreachable.

One round claims a batch of due items and hands them over in one call. Each request carries its outbox
idempotency key, so a request that reached the notifier but whose answer was lost is harmless to repeat:
the notifier answers with the email it already has. The same holds when the item was amended meanwhile (a
receipt's link came): the notifier keeps the version it took, and the item counts as delivered.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from billing.domain.api_ports import RefusedEmailsPort
from billing.domain.api_types import MAX_REFUSED, RefusedEmail, operator_limit
from billing.domain.tenant_profiles import TenantProfile

log = logging.getLogger(__name__)

# Longest wait between probes of an unreachable notifier: bounds how late emails resume after it returns.
MAX_PAUSE_SECONDS = 10.0


@dataclass(frozen=True)
class OutboxItem:
    id: str  # the outbox's key for it, as its adapter makes it
    idempotency_key: str
    kind: str
    content: Any  # the email, as the notifier's adapter reads and sends it
    attempts: int
    request_id: str = ""
    tenant_id: str = ""
    profile: TenantProfile | None = None  # the tenant's, when it has one: sent with it
    plan_ref: str = ""  # the subscription's plan, for an email about one
    plan_name: str = ""  # the catalog's name of it: the email names the plan so


class Profiles(Protocol):
    async def profiles(self, tenant_ids: list[str]) -> dict[str, TenantProfile]:
        """The profiles of those tenants that have one."""


class PlanNames(Protocol):
    async def names(self, refs: list[str]) -> dict[str, str]:
        """The names the plan catalog knows the plans by."""


class NotifierUnavailable(Exception):
    """Try again later: the notifier is down, slow or overloaded."""


class Notifier(Protocol):
    async def send_emails(self, items: Sequence[OutboxItem]) -> list[str | None]:
        """Hand the items to the notifier in one call. For each item: None when the notifier has it,
        else why it refused it for good. Raises NotifierUnavailable when the call did not go through."""
        ...


class Outbox(Protocol):
    async def claim_due(self, limit: int, lease: timedelta) -> list[OutboxItem]: ...
    async def next_due_in(self) -> float | None: ...
    async def record_outcomes(self, outcomes: list[DispatchResult]) -> None: ...


@dataclass(frozen=True)
class DispatchResult:
    """What handing one outbox email to the notifier came to: delivered, retry (at next_attempt_at), dead, or
    skipped (its tenant turned its kind off)."""

    item_id: str
    status: str
    error: str | None = None
    next_attempt_at: datetime | None = None


class DispatchEmails:
    def __init__(self, outbox: Outbox, notifier: Notifier, *, clock: Callable[[], datetime],
                 profiles: Profiles | None = None, plans: PlanNames | None = None, max_delay: float = 60.0,
                 rng: random.Random | None = None) -> None:
        self._outbox = outbox
        self._profiles = profiles
        self._plans = plans
        self._pause = 0.0
        self._paused_until: datetime | None = None
        self._notifier = notifier
        self._clock = clock
        self._max_delay = max_delay
        self._rng = rng or random.Random()

    async def run_once(self, limit: int = 100) -> int:
        if self._paused_until and self._clock() < self._paused_until:
            return 0
        # While the notifier has been away, probe with one item before claiming many again.
        items = await self._outbox.claim_due(1 if self._pause else limit, timedelta(seconds=30))
        if not items:
            return 0
        items, skipped = await self._with_profiles(items)
        items = await self._with_plan_names(items)
        if not items:
            await self._outbox.record_outcomes(skipped)
            return len(skipped)
        try:
            refusals = await self._notifier.send_emails(items)
        except NotifierUnavailable as exc:
            await self._outbox.record_outcomes([self._retry(item, str(exc)) for item in items] + skipped)
            # Pause the whole dispatcher, not just these items: a dead notifier must not turn the
            # outbox into a busy loop of claims and failed calls.
            self._pause = min(MAX_PAUSE_SECONDS, max(1.0, self._pause * 2))
            self._paused_until = self._clock() + timedelta(seconds=self._pause)
            log.warning("notifier unavailable; pausing email dispatch",
                        extra={"fields": {"seconds": self._pause, "error": str(exc)}})
            return 0
        self._pause, self._paused_until = 0.0, None
        outcomes = skipped
        for item, refusal in zip(items, refusals, strict=True):
            if refusal is None:
                outcomes.append(DispatchResult(item.id, "delivered"))
                continue
            # A refusal is a defect on our side (an invalid request): kept as dead for operators.
            log.error("notifier rejected an email request", extra={"fields": {"key": item.idempotency_key,
                                                                              "error": refusal}})
            outcomes.append(DispatchResult(item.id, "dead", refusal))
        await self._outbox.record_outcomes(outcomes)
        return len(outcomes)

    async def _with_plan_names(self, items: list[OutboxItem]) -> list[OutboxItem]:
        refs = [i.plan_ref for i in items if i.plan_ref]
        if self._plans is None or not refs:
            return items
        names = await self._plans.names(refs)
        return [replace(i, plan_name=names[i.plan_ref]) if i.plan_ref in names else i for i in items]

    async def _with_profiles(self, items: list[OutboxItem]) -> tuple[list[OutboxItem], list[DispatchResult]]:
        """The items to send, each with its tenant's profile, and those of a kind their tenant turned off."""
        if self._profiles is None:
            return items, []
        found = await self._profiles.profiles(sorted({i.tenant_id for i in items if i.tenant_id}))
        send, skipped = [], []
        for item in items:
            profile = found.get(item.tenant_id)
            if profile is not None and not profile.sends(item.kind):
                log.info("email not sent: its tenant turned this kind off", extra={"fields": {
                    "key": item.idempotency_key, "kind": item.kind, "tenant_id": item.tenant_id}})
                skipped.append(DispatchResult(item.id, "skipped", "turned off in the tenant's profile"))
            else:
                send.append(replace(item, profile=profile))
        return send, skipped

    async def next_due_in(self) -> float | None:
        """Seconds until there is dispatch work: the pause, else the outbox's next due item."""
        if self._paused_until:
            remaining = (self._paused_until - self._clock()).total_seconds()
            if remaining > 0:
                return remaining
        return await self._outbox.next_due_in()

    def _retry(self, item: OutboxItem, error: str) -> DispatchResult:
        delay = self._rng.uniform(0.5, min(self._max_delay, 2.0 ** min(item.attempts, 10)))
        return DispatchResult(item.id, "retry", error, self._clock() + timedelta(seconds=delay))


class RefusedEmails:
    """Use case: the emails the notifier refused, listed, or queued for it again once the cause is fixed."""

    def __init__(self, store: RefusedEmailsPort, on_emails_queued: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._on_emails_queued = on_emails_queued

    async def refused_emails(self, limit: int, *, requeue: bool) -> list[RefusedEmail]:
        """List the emails the notifier refused, or queue them for it again once the cause is fixed."""
        emails = await self._store.refused_emails(operator_limit(limit, MAX_REFUSED), requeue=requeue)
        if requeue and emails:
            log.info("refused emails queued again", extra={"fields": {"emails": len(emails)}})
            self._on_emails_queued()
        return emails
