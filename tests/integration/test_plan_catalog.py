"""The plan catalog on real PostgreSQL: set by operators over gRPC, read from Stripe's and Razorpay's
APIs (stand-ins on real sockets), and the names subscription emails take when handed to the notifier."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from aiohttp import web
from billing.adapters.email_messages import as_sent
from billing.adapters.outbox import PostgresOutbox
from billing.adapters.plan_sources import RazorpayPlans, StripePlans
from billing.adapters.postgres import create_pool
from billing.adapters.reader import PostgresBillingReader
from billing.domain.dispatch import DispatchEmails
from billing.domain.model import Provider
from billing.domain.plans import PlanCatalog
from boxcost.billing.v1 import billing_pb2
from trigger.events import RazorpayScenario, StripeScenario

from tests.fakes import TakingNotifier
from tests.support import expect_code, incoming

STRIPE, RAZORPAY = billing_pb2.PROVIDER_STRIPE, billing_pb2.PROVIDER_RAZORPAY


def _plan(**fields) -> billing_pb2.SetPlanRequest:
    return billing_pb2.SetPlanRequest(plan=billing_pb2.Plan(**{"provider": STRIPE, "plan_id": "price_pro_monthly",
                                                               "name": "Pro", **fields}))


async def test_an_operator_names_a_plan_and_reads_the_catalog_back(billing):
    stub, _ = billing
    stored = (await stub.SetPlan(_plan(interval="month", interval_count=1,
                                       amount=billing_pb2.Money(amount_minor=249900, currency="inr")))).plan
    assert (stored.name, stored.source, stored.amount.currency, stored.updated_by) == (
        "Pro", "operator", "INR", "a caller without a certificate (plaintext)")
    await stub.SetPlan(_plan(provider=RAZORPAY, plan_id="plan_gold", name="Gold yearly", interval="year"))
    listed = (await stub.ListPlans(billing_pb2.ListPlansRequest())).plans
    assert [(p.plan_id, p.name) for p in listed] == [("plan_gold", "Gold yearly"), ("price_pro_monthly", "Pro")]
    only = (await stub.ListPlans(billing_pb2.ListPlansRequest(provider=STRIPE))).plans
    assert [p.plan_id for p in only] == ["price_pro_monthly"]


@pytest.mark.parametrize(("request_", "field"), [
    (_plan(name=""), "name"), (_plan(name="Pro\nBcc: x"), "name"), (_plan(plan_id=""), "plan_id"),
    (_plan(provider=0), "plan.provider"), (_plan(interval="fortnight"), "interval"),
    (_plan(interval_count=400), "interval_count"),
    (_plan(amount=billing_pb2.Money(amount_minor=-5, currency="INR")), "amount"),
    (_plan(amount=billing_pb2.Money(amount_minor=5, currency="rupees")), "amount"),
])
async def test_a_wrong_plan_is_refused_by_field_and_nothing_is_stored(billing, db, request_, field):
    stub, _ = billing
    details = await expect_code(stub.SetPlan(request_), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(field), details
    assert await db.fetchval("SELECT count(*) FROM billing.plans") == 0


@pytest.fixture
def providers(serve):
    """Stripe's GET /v1/prices/:id (product expanded) and Razorpay's GET /v1/plans/:id, counting calls;
    `down` makes them answer 500."""
    calls: Counter = Counter()
    state = {"down": False, "product": "BoxCostPro Pro"}

    async def price(request: web.Request) -> web.Response:
        calls[request.match_info["id"]] += 1
        if state["down"]:
            return web.json_response({"error": {"message": "try later"}}, status=500)
        if request.match_info["id"] != "price_pro_monthly" or request.query.get("expand[0]") != "product":
            return web.json_response({"error": {"type": "invalid_request_error", "message": "No such price"}},
                                     status=404)
        return web.json_response({"id": "price_pro_monthly", "object": "price", "nickname": "Pro monthly",
                                  "unit_amount": 4999, "currency": "usd",
                                  "recurring": {"interval": "month", "interval_count": 1},
                                  "product": {"id": "prod_1", "object": "product", "name": state["product"]}})

    async def plan(request: web.Request) -> web.Response:
        calls[request.match_info["id"]] += 1
        return web.json_response({"id": request.match_info["id"], "entity": "plan", "period": "monthly",
                                  "interval": 1, "item": {"name": "Cartons Unlimited", "amount": 24990000,
                                                          "currency": "INR"}})

    async def start():
        app = web.Application()
        app.router.add_get("/v1/prices/{id}", price)
        app.router.add_get("/v1/plans/{id}", plan)
        return calls, state, await serve(app)

    return start


async def _dispatch(pool, catalog, db) -> dict:
    await db.execute("UPDATE billing.email_outbox SET next_attempt_at = now()")
    notifier = TakingNotifier()
    dispatch = DispatchEmails(PostgresOutbox(pool), notifier, clock=lambda: datetime.now(UTC), plans=catalog)
    while await dispatch.run_once():
        pass
    return {(i.kind, i.tenant_id): as_sent(i.content, i.profile, i.plan_name) for i in notifier.sent}


def _subscription(s: StripeScenario, **price) -> list:
    """A subscription's checkout and creation, its price changed by `price`."""
    s.checkout_mode = "subscription"
    events = [s.event(t) for t in ("checkout.session.completed", "customer.subscription.created")]
    for item in events[1]["data"]["object"]["items"]["data"]:
        item["price"].update(price)
    return [incoming("stripe", e) for e in events]


@dataclass
class _Catalog:
    """The plan catalog on real PostgreSQL, reading Stripe's and Razorpay's stand-ins, and the dispatch
    that hands emails over through it: what each email went as, by kind and tenant."""

    calls: Counter
    state: dict
    pool: asyncpg.Pool
    catalog: PlanCatalog
    db: asyncpg.Connection

    async def dispatched(self) -> dict:
        return await _dispatch(self.pool, self.catalog, self.db)


@pytest.fixture
async def plans(database_url, db, providers):
    calls, state, base = await providers()
    pool = await create_pool(database_url, min_size=1, max_size=2)
    sources = {Provider.STRIPE: StripePlans("sk_test_x", api_base=base),
               Provider.RAZORPAY: RazorpayPlans("rzp_test_x", "secret", api_base=base)}
    yield _Catalog(calls, state, pool, PlanCatalog(PostgresBillingReader(pool), sources), db)
    for source in sources.values():
        await source.close()
    await pool.close()


async def test_subscription_emails_name_the_plan_as_the_provider_calls_it_read_once_and_kept(billing, db, plans):
    _, ingest = billing
    await ingest.execute(_subscription(StripeScenario(tenant_id="t1")))
    r = RazorpayScenario(tenant_id="t3")
    await ingest.execute([incoming("razorpay", r.event(t))
                          for t in ("subscription.authenticated", "subscription.activated", "subscription.charged")])
    sent = await plans.dispatched()
    # Stripe's product name, not the price's nickname; Razorpay's plan item's name.
    assert sent[("subscription_activated", "t1")].subscription_activated.plan == "BoxCostPro Pro"
    assert sent[("subscription_activated", "t3")].subscription_activated.plan == "Cartons Unlimited"
    kept = {r["plan_id"]: (r["name"], r["source"], r["amount"])
            for r in await db.fetch("SELECT plan_id, name, source, amount FROM billing.plans")}
    assert kept["price_pro_monthly"] == ("BoxCostPro Pro", "provider", 4999)
    # Read once: the next subscription on the same plans asks neither provider again.
    before = sum(plans.calls.values())
    await ingest.execute(_subscription(StripeScenario(tenant_id="t2")))
    again = await plans.dispatched()
    assert again[("subscription_activated", "t2")].subscription_activated.plan == "BoxCostPro Pro"
    assert sum(plans.calls.values()) == before
    # A day on, the product renamed: the next email needing the plan reads it again.
    plans.state["product"] = "BoxCostPro Professional"
    await db.execute("UPDATE billing.plans SET updated_at = updated_at - interval '25 hours'")
    await ingest.execute(_subscription(StripeScenario(tenant_id="t4")))
    renamed = await plans.dispatched()
    assert renamed[("subscription_activated", "t4")].subscription_activated.plan == "BoxCostPro Professional"
    assert plans.calls["price_pro_monthly"] == 2


async def test_an_operators_name_wins_and_a_provider_that_cannot_answer_leaves_the_email_as_it_was(
        billing, db, plans):
    stub, ingest = billing
    plans.state["down"] = True
    await ingest.execute(_subscription(StripeScenario(tenant_id="t1")))
    [email] = (await plans.dispatched()).values()
    assert email.subscription_activated.plan == "Pro monthly"  # the event's nickname
    assert await db.fetchval("SELECT count(*) FROM billing.plans") == 0  # nothing kept: asked again after a pause
    await stub.SetPlan(_plan(name="Pro (monthly)"))
    plans.state["down"] = False
    await ingest.execute(_subscription(StripeScenario(tenant_id="t2")))
    [email] = (await plans.dispatched()).values()
    assert email.subscription_activated.plan == "Pro (monthly)"
    assert await db.fetchval("SELECT source FROM billing.plans") == "operator"


async def test_a_plan_the_provider_does_not_have_is_kept_nameless_and_not_asked_for_again(billing, db, plans):
    _, ingest = billing
    for tenant in ("t1", "t2"):
        await ingest.execute(_subscription(StripeScenario(tenant_id=tenant), id="price_retired", nickname=None))
        [email] = (await plans.dispatched()).values()
        assert email.subscription_activated.plan == ""  # no name anywhere: the email names none
    assert plans.calls["price_retired"] == 1
    assert await db.fetchval("SELECT name FROM billing.plans WHERE plan_id = 'price_retired'") == ""
