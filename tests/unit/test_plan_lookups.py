"""The plan catalog's reads from a provider never hold emails back for long: a provider that failed is
left alone for a minute (the emails name no plan meanwhile), and the plans one round needs are read at
the same time, not one after another."""

from __future__ import annotations

import asyncio

from billing.domain.model import Provider
from billing.domain.plans import PROVIDER_PAUSE_SECONDS, Plan, PlanCatalog, PlanUnavailable


class MemoryPlans:
    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], Plan] = {}

    async def plans(self, keys):
        return {k: self.saved[k] for k in keys if k in self.saved}

    async def save_plan(self, plan, *, keep_operators):
        return self.saved.setdefault((plan.provider.value, plan.plan_id), plan)

    async def list_plans(self, provider, limit):
        return list(self.saved.values())


class ProviderApi:
    """A provider's API: down or up, counting calls, each call held until `release` when `hold` is set."""

    def __init__(self) -> None:
        self.down = False
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
        return Plan(Provider.STRIPE, plan_id, f"Plan {plan_id}", source="provider")


async def test_a_provider_that_failed_is_not_asked_again_for_a_minute_and_then_is():
    now = [1000.0]
    stripe = ProviderApi()
    stripe.down = True
    catalog = PlanCatalog(MemoryPlans(), {Provider.STRIPE: stripe}, clock=lambda: now[0])
    assert await catalog.names(["stripe:price_a"]) == {}
    assert stripe.calls == ["price_a"]
    now[0] += PROVIDER_PAUSE_SECONDS - 1
    assert await catalog.names(["stripe:price_a", "stripe:price_b"]) == {}  # paused: no call, no wait
    assert stripe.calls == ["price_a"]
    stripe.down = False
    now[0] += 1
    assert await catalog.names(["stripe:price_a", "stripe:price_b"]) == {"stripe:price_a": "Plan price_a",
                                                                         "stripe:price_b": "Plan price_b"}
    assert sorted(stripe.calls) == ["price_a", "price_a", "price_b"]


async def test_the_plans_a_round_needs_are_read_at_the_same_time():
    stripe = ProviderApi()
    stripe.hold = asyncio.Event()
    catalog = PlanCatalog(MemoryPlans(), {Provider.STRIPE: stripe})
    lookup = asyncio.create_task(catalog.names(["stripe:price_a", "stripe:price_b", "stripe:price_c"]))
    async with asyncio.timeout(5):
        while stripe.waiting < 3:  # all three asked before any answered
            await asyncio.sleep(0.01)
    stripe.hold.set()
    assert set((await lookup).values()) == {"Plan price_a", "Plan price_b", "Plan price_c"}
