"""`python -m billing recover-razorpay-events` as a process: the razorpay SDK making real HTTP calls to a
stand-in for Razorpay's API, on a real PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest
from aiohttp import web
from billing.adapters.postgres import PostgresEventStore
from billing.domain.ingest import IngestEvents
from trigger.events import RazorpayScenario
from trigger.flows import FLOWS

from tests.support import incoming, run_module, state

KEY_ID, KEY_SECRET = "rzp_test_recovery", "secret_recovery"


def entities_of(events: list[dict]) -> dict[str, list[dict]]:
    """The entities a flow's webhooks carried, each as its last event left it, by Razorpay's resource."""
    latest: dict[tuple[str, str], dict] = {}
    for event in events:
        for name, wrapper in event["payload"].items():
            entity = {"created_at": event["created_at"], **wrapper["entity"]}  # as Razorpay's entities all have
            latest[(name, entity["id"])] = entity
    by_resource: dict[str, list[dict]] = {"payments": [], "orders": [], "refunds": [], "subscriptions": [],
                                          "invoices": []}
    for (name, _), entity in latest.items():
        by_resource[{"payment": "payments", "order": "orders", "refund": "refunds",
                     "subscription": "subscriptions"}[name]].append(entity)
    # A subscription's charge is made against an invoice, which names the subscription.
    for event in events:
        if "subscription" in event["payload"] and (payment := event["payload"].get("payment")):
            by_resource["invoices"].append({
                "id": payment["entity"]["invoice_id"], "entity": "invoice", "created_at": event["created_at"],
                "subscription_id": event["payload"]["subscription"]["entity"]["id"],
                "payment_id": payment["entity"]["id"]})
    return by_resource


class FakeRazorpayApi:
    """GET /v1/{payments,orders,refunds,subscriptions,invoices} as Razorpay answers: basic auth with the key
    id and secret, `from`/`to` on created_at, newest first, pages of `count` continued by `skip`; and
    GET /v1/{resource}/{id}, one entity."""

    def __init__(self, entities: dict[str, list[dict]]) -> None:
        self.entities = entities
        self.pages = 0
        self.fetched: list[str] = []

    @staticmethod
    def _refused(request: web.Request) -> web.Response | None:
        expected = "Basic " + base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": {"code": "BAD_REQUEST_ERROR",
                                                "description": "The api key provided is invalid"}}, status=401)
        return None

    async def fetch(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        self.fetched.append(request.match_info["id"])
        found = [e for e in self.entities[request.match_info["resource"]] if e["id"] == request.match_info["id"]]
        if not found:
            return web.json_response({"error": {"code": "BAD_REQUEST_ERROR",
                                                "description": "The id provided does not exist"}}, status=400)
        return web.json_response(found[0])

    async def list(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        self.pages += 1
        q = request.query
        items = [e for e in self.entities[request.match_info["resource"]]
                 if int(q["from"]) <= e["created_at"] <= int(q["to"])]
        items.sort(key=lambda e: e["created_at"], reverse=True)
        skip, count = int(q.get("skip", 0)), int(q.get("count", 10))
        page = items[skip:skip + count]
        return web.json_response({"entity": "collection", "count": len(page), "items": page})


@pytest.fixture
def razorpay_at(serve):
    async def start(entities: dict[str, list[dict]]) -> tuple[FakeRazorpayApi, str]:
        api = FakeRazorpayApi(entities)
        app = web.Application()
        app.router.add_get("/v1/{resource}", api.list)
        app.router.add_get("/v1/{resource}/{id}", api.fetch)
        return api, await serve(app)

    return start


def money(rows) -> list[tuple]:
    return sorted((r["razorpay_payment_id"], r["razorpay_order_id"], r["razorpay_subscription_id"], r["tenant_id"],
                   r["amount"], r["currency"], r["status"], r["amount_refunded"]) for r in rows)


def standing(rows) -> list[tuple]:
    return sorted((r["razorpay_subscription_id"], r["tenant_id"], r["status"], r["plan"]) for r in rows)


async def recover(database_url: str, base: str, secret: str = KEY_SECRET) -> tuple[int, str]:
    return await run_module("billing", "recover-razorpay-events", "--since", "2h", env={
        "DATABASE_URL": database_url, "GRPC_PLAINTEXT": "true", "RAZORPAY_KEY_ID": KEY_ID,
        "RAZORPAY_KEY_SECRET": secret, "RAZORPAY_API_BASE": base, "LOG_LEVEL": "INFO"})


def flow(name: str) -> list[dict]:
    return FLOWS[name].build("acme", "u1")


async def delivered_by_webhooks(database_url: str, events: list[dict]) -> None:
    import asyncpg

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        for event in events:
            await IngestEvents(PostgresEventStore(pool)).execute([incoming("razorpay", event)])
    finally:
        await pool.close()


@pytest.mark.parametrize("name", ["razorpay-payment", "razorpay-subscription"])
async def test_recovery_of_entities_no_webhook_brought_ends_as_their_webhooks_would_and_again_changes_nothing(
        razorpay_at, database_url, db, name, tmp_path):
    events = flow(name)
    api, base = await razorpay_at(entities_of(events))
    code, out = await recover(database_url, base)
    assert code == 0, out
    recovered = state(await db.fetch("SELECT * FROM billing.transactions"))
    emails = await db.fetchval("SELECT count(*) FROM billing.email_outbox")
    assert recovered and emails

    # The same rows as the webhooks would have made (compared on a database they reached).
    admin = db
    other = f"w_{name.replace('-', '_')}"
    await admin.execute(f"CREATE DATABASE {other} TEMPLATE billing_template")
    try:
        other_url = database_url.rsplit("/", 1)[0] + f"/{other}"
        await delivered_by_webhooks(other_url, events)
        import asyncpg

        conn = await asyncpg.connect(other_url)
        try:
            by_webhooks = await conn.fetch("SELECT * FROM billing.transactions")
            subscriptions_by_webhooks = await conn.fetch("SELECT * FROM billing.user_subscriptions")
        finally:
            await conn.close()
        # The money as the webhooks left it, each subscription's charges its own. Times differ (recovery
        # dates a state by its entity, a webhook by its event).
        assert money(await db.fetch("SELECT * FROM billing.transactions")) == money(by_webhooks)
        assert standing(await db.fetch("SELECT * FROM billing.user_subscriptions")) == standing(
            subscriptions_by_webhooks)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {other} WITH (FORCE)")

    # Run again: every event is a duplicate, nothing changes.
    code, out = await recover(database_url, base)
    assert code == 0, out
    [line] = [json.loads(x) for x in out.splitlines() if x.startswith("{") and "entities recovered" in x]
    assert line.get("processed", 0) == 0 and line["duplicate"] == line["listed"]
    assert state(await db.fetch("SELECT * FROM billing.transactions")) == recovered
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == emails


async def test_recovery_after_the_webhooks_did_arrive_changes_no_row_and_asks_no_email(razorpay_at, database_url, db):
    events = flow("razorpay-payment")
    await delivered_by_webhooks(database_url, events)
    before = state(await db.fetch("SELECT * FROM billing.transactions"))
    emails = await db.fetchval("SELECT count(*) FROM billing.email_outbox")
    _, base = await razorpay_at(entities_of(events))
    code, out = await recover(database_url, base)
    assert code == 0, out
    assert state(await db.fetch("SELECT * FROM billing.transactions")) == before
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == emails


async def test_recovery_reads_every_page_and_a_refused_key_says_where_to_resume(razorpay_at, database_url, db):
    payments = [RazorpayScenario(tenant_id="acme").event("payment.captured") for _ in range(230)]
    api, base = await razorpay_at(entities_of(payments))
    code, out = await recover(database_url, base)
    assert code == 0, out
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 230
    assert api.pages >= 3 + 3  # the payments in three pages of 100, and one page of each other resource

    code, out = await recover(database_url, base, secret="revoked")
    assert code == 1 and "resume_from" in out and "invalid" in out, out


async def test_each_recovery_run_pushes_what_it_found_and_applied(razorpay_at, pushgateway, database_url):
    from prometheus_client.parser import text_string_to_metric_families

    pushed, gateway = pushgateway
    _, base = await razorpay_at(entities_of(flow("razorpay-payment")))
    code, out = await run_module("billing", "recover-razorpay-events", "--since", "2h", env={
        "DATABASE_URL": database_url, "GRPC_PLAINTEXT": "true", "RAZORPAY_KEY_ID": KEY_ID,
        "RAZORPAY_KEY_SECRET": KEY_SECRET, "RAZORPAY_API_BASE": base, "METRICS_PUSHGATEWAY": gateway})
    assert code == 0, out
    [(path, text)] = pushed.items()
    assert path == "/metrics/job/billing-recovery/provider/razorpay"
    samples = {(s.name, s.labels.get("outcome")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("billing_recovery_events", "processed")] > 0
    assert samples[("billing_recovery_events", "listed")] == samples[("billing_recovery_events", "processed")]
    assert samples[("billing_recovery_complete", None)] == 1


async def test_a_renewal_whose_subscription_and_invoice_are_older_than_the_range_is_still_that_subscriptions(
        razorpay_at, database_url, db):
    entities = entities_of(flow("razorpay-subscription"))
    for made_earlier in entities["subscriptions"] + entities["invoices"]:
        made_earlier["created_at"] -= 30 * 86400  # outside --since 2h: listed by no page, so fetched
    api, base = await razorpay_at(entities)
    code, out = await recover(database_url, base)
    assert code == 0, out
    [sub] = entities["subscriptions"]
    charges = await db.fetch("SELECT razorpay_payment_id, razorpay_subscription_id, status FROM billing.transactions")
    assert sorted((r["razorpay_subscription_id"], r["status"]) for r in charges) == [
        (sub["id"], "failed"), (sub["id"], "succeeded")]
    assert sorted(api.fetched) == sorted([*(i["id"] for i in entities["invoices"]), sub["id"]])
