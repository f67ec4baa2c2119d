"""The plan catalog's reads from a provider: a plan read long ago is read again (a product renamed since),
and they never hold emails back for long: a provider that failed is left alone for a minute (the emails
name no plan, or the one read before, meanwhile), and the plans one round needs are read together, a few
at a time."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from billing.domain.model import Provider
from billing.domain.plans import (PROVIDER_PAUSE, PROVIDER_READS, PROVIDER_REREAD, Plan, PlanCatalog,
                                  PlanUnavailable)


class MemoryPlans:
    def __init__(self, clock) -> None:
        self.saved: dict[tuple[str, str], Plan] = {}
        self._clock = clock

    async def plans(self, keys):
        return {k: self.saved[k] for k in keys if k in self.saved}

    async def save_plan(self, plan, *, keep_operators):
        key = (plan.provider.value, plan.plan_id)
        if keep_operators and key in self.saved and self.saved[key].source == "operator":
            return self.saved[key]
        self.saved[key] = replace(plan, updated_at=self._clock())
        return self.saved[key]

    async def list_plans(self, provider, limit):
        return list(self.saved.values())


class ProviderApi:
    """A provider's API: down or up, counting calls, each call held until `hold` is set when given."""

    def __init__(self) -> None:
        self.down = False
        self.names: dict[str, str] = {}
        self.calls: list[str] = []
        self.hold: asyncio.Event | None = None
        self.waiting = 0

    async def fetch(self, plan_id):
        self.calls.append(plan_id)
        if self.hold is not None:
            self.waiting += 1
            await self.hold.wait()
        if self.down:
            raise PlanUnavailable("503 from the provider")
        if plan_id not in self.names:
            return None
        return Plan(Provider.STRIPE, plan_id, self.names[plan_id], source="provider")


def _catalog():
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    stripe = ProviderApi()
    store = MemoryPlans(lambda: now[0])
    return now, stripe, store, PlanCatalog(store, {Provider.STRIPE: stripe}, clock=lambda: now[0])


async def test_a_provider_that_failed_is_not_asked_again_for_a_minute_and_then_is():
    now, stripe, _, catalog = _catalog()
    stripe.names = {"price_a": "Pro", "price_b": "Team"}
    stripe.down = True
    assert await catalog.names(["stripe:price_a"]) == {}
    assert stripe.calls == ["price_a"]
    now[0] += PROVIDER_PAUSE - timedelta(seconds=1)
    assert await catalog.names(["stripe:price_a", "stripe:price_b"]) == {}  # paused: no call, no wait
    assert stripe.calls == ["price_a"]
    stripe.down = False
    now[0] += timedelta(seconds=1)
    assert await catalog.names(["stripe:price_a", "stripe:price_b"]) == {"stripe:price_a": "Pro",
                                                                         "stripe:price_b": "Team"}
    assert sorted(stripe.calls) == ["price_a", "price_a", "price_b"]


async def test_a_name_read_a_day_ago_is_read_again_and_kept_while_the_provider_cannot_say():
    now, stripe, store, catalog = _catalog()
    stripe.names = {"price_a": "Pro"}
    assert await catalog.names(["stripe:price_a"]) == {"stripe:price_a": "Pro"}
    stripe.names = {"price_a": "Pro 2027"}  # the product renamed
    now[0] += PROVIDER_REREAD - timedelta(seconds=1)
    assert await catalog.names(["stripe:price_a"]) == {"stripe:price_a": "Pro"}
    assert stripe.calls == ["price_a"]
    now[0] += timedelta(seconds=1)
    assert await catalog.names(["stripe:price_a"]) == {"stripe:price_a": "Pro 2027"}
    # Down, or no longer having the plan: the name read before stays.
    now[0] += PROVIDER_REREAD
    stripe.down = True
    assert await catalog.names(["stripe:price_a"]) == {"stripe:price_a": "Pro 2027"}
    stripe.down, stripe.names = False, {}
    now[0] += PROVIDER_PAUSE
    assert await catalog.names(["stripe:price_a"]) == {"stripe:price_a": "Pro 2027"}
    assert len(stripe.calls) == 4
    # An operator's name is never read again from the provider.
    await catalog.set(Plan(Provider.STRIPE, "price_a", "Professional"), updated_by="ops")
    now[0] += 10 * PROVIDER_REREAD
    assert await catalog.names(["stripe:price_a"]) == {"stripe:price_a": "Professional"}
    assert len(stripe.calls) == 4 and store.saved[("stripe", "price_a")].source == "operator"


async def test_the_plans_a_round_needs_are_read_at_the_same_time_a_few_at_a_time():
    _, stripe, _, catalog = _catalog()
    wanted = [f"price_{i}" for i in range(PROVIDER_READS + 3)]
    stripe.names = {p: f"Plan {p}" for p in wanted}
    stripe.hold = asyncio.Event()
    lookup = asyncio.create_task(catalog.names([f"stripe:{p}" for p in wanted]))
    async with asyncio.timeout(5):
        while stripe.waiting < PROVIDER_READS:  # as many asked as may be, before any answered
            await asyncio.sleep(0.01)
    for _ in range(20):
        await asyncio.sleep(0)
    assert stripe.waiting == PROVIDER_READS
    stripe.hold.set()
    assert set((await lookup).values()) == {f"Plan {p}" for p in wanted}
    assert sorted(stripe.calls) == sorted(wanted)
