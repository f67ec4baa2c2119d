"""Use cases: the plan catalog, the names customers know each provider plan by.

A subscription's events name its plan by the provider's id (a Stripe price, a Razorpay plan), with at most a
nickname of the merchant's. The catalog holds, for each, the name emails use, its interval and amount: set by
operators, or read from the provider's API (a Stripe price's product name, a Razorpay plan's item name) the
first time an email needs it, kept, and read again when an email needs it a day later (a product renamed
since). An operator's entry is never replaced by what a provider says. A plan with no name anywhere is not
named: an email never shows a provider's id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from billing.domain.api_types import CURRENCY, operator_limit, text
from billing.domain.errors import InvalidRequest
from billing.domain.model import Provider

log = logging.getLogger(__name__)

INTERVALS = ("day", "week", "month", "year")
MAX_PLANS = 1000
MAX_NAME = 100
PROVIDER_PAUSE = timedelta(minutes=1)
PROVIDER_REREAD = timedelta(days=1)
PROVIDER_READS = 8  # a batch's plans read at once, at most: well inside the providers' rate limits


@dataclass(frozen=True)
class Plan:
    provider: Provider
    plan_id: str
    name: str  # empty: none known (the provider has none either)
    interval: str = ""
    interval_count: int | None = None
    amount: int | None = None  # minor units, each interval
    currency: str | None = None
    source: str = "operator"  # or "provider": read from its API
    updated_at: datetime | None = None
    updated_by: str = ""

    @property
    def ref(self) -> str:
        return f"{self.provider.value}:{self.plan_id}"


class PlanStore(Protocol):
    async def plans(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Plan]:
        """The catalog's entries of those (provider, plan id) it has."""

    async def save_plan(self, plan: Plan, *, keep_operators: bool) -> Plan:
        """Store the entry; with keep_operators, an operator's entry for the plan stays as it is."""

    async def list_plans(self, provider: Provider | None, limit: int) -> list[Plan]: ...


class PlanSource(Protocol):
    async def fetch(self, plan_id: str) -> Plan | None:
        """The plan as the provider has it; None when it has no such plan. Raises PlanUnavailable when the
        provider cannot be asked now."""


class PlanUnavailable(Exception):
    pass


def checked(plan: Plan) -> Plan:
    text("plan_id", plan.plan_id)
    name = plan.name.strip()
    if not name:
        raise InvalidRequest("name", "is required: the name customers know the plan by")
    if len(name) > MAX_NAME or not name.isprintable():
        raise InvalidRequest("name", f"one line of at most {MAX_NAME} characters")
    if plan.interval and plan.interval not in INTERVALS:
        raise InvalidRequest("interval", f"one of {', '.join(INTERVALS)}, or empty")
    if plan.interval_count is not None and not 1 <= plan.interval_count <= 365:
        raise InvalidRequest("interval_count", "between 1 and 365")
    if plan.amount is not None and (plan.amount < 0 or not plan.currency or not CURRENCY.match(plan.currency)):
        raise InvalidRequest("amount", "a non-negative amount with its ISO 4217 currency")
    return replace(plan, name=name, source="operator")


class PlanCatalog:
    def __init__(self, store: PlanStore, sources: dict[Provider, PlanSource] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._sources = sources or {}
        self._clock = clock
        self._paused_until: dict[str, datetime] = {}  # provider -> when it may be asked again

    async def set(self, plan: Plan, updated_by: str) -> Plan:
        return await self._store.save_plan(replace(checked(plan), updated_by=updated_by), keep_operators=False)

    async def list(self, provider: Provider | None, limit: int) -> list[Plan]:
        return await self._store.list_plans(provider, operator_limit(limit, MAX_PLANS))

    async def names(self, refs: list[str]) -> dict[str, str]:
        """The names of the plans ("stripe:price_…") the catalog or their provider knows. One the catalog
        lacks is read from its provider and kept; one read from a provider over PROVIDER_REREAD ago is read
        again. Emails rarely wait on a provider that is down: after a failure it is not asked again for
        PROVIDER_PAUSE (the email names the plan as read before, or none), and the plans it is asked for are
        read together, PROVIDER_READS at a time."""
        keys = sorted({tuple(r.split(":", 1)) for r in refs if ":" in r})
        if not keys:
            return {}
        found = await self._store.plans(keys)
        now = self._clock()
        wanted = [(provider_name, plan_id, source) for provider_name, plan_id in keys
                  if self._stale(found.get((provider_name, plan_id)), now)
                  and (source := self._source(provider_name)) is not None
                  and self._paused_until.get(provider_name, now) <= now]
        reads = asyncio.Semaphore(PROVIDER_READS)

        async def read(source: PlanSource, plan_id: str) -> Plan | None:
            async with reads:
                return await source.fetch(plan_id)

        fetched = await asyncio.gather(*(read(source, plan_id) for _, plan_id, source in wanted),
                                       return_exceptions=True)
        for (provider_name, plan_id, _), result in zip(wanted, fetched):
            if isinstance(result, PlanUnavailable):
                self._paused_until[provider_name] = self._clock() + PROVIDER_PAUSE
                log.warning("plan not read from its provider; the email names it as read before, or not at all",
                            extra={"fields": {"provider": provider_name, "plan_id": plan_id, "error": str(result)}})
                continue
            if isinstance(result, BaseException):
                raise result
            # A plan the provider no longer has keeps the name read before; a new one is kept nameless.
            plan = result or found.get((provider_name, plan_id)) or Plan(Provider(provider_name), plan_id, "",
                                                                         source="provider")
            found[(provider_name, plan_id)] = await self._store.save_plan(plan, keep_operators=True)
        return {plan.ref: plan.name for plan in found.values() if plan.name}

    @staticmethod
    def _stale(plan: Plan | None, now: datetime) -> bool:
        return plan is None or (plan.source == "provider"
                                and (plan.updated_at is None or now - plan.updated_at >= PROVIDER_REREAD))

    def _source(self, provider_name: str) -> PlanSource | None:
        return next((s for p, s in self._sources.items() if p.value == provider_name), None)
