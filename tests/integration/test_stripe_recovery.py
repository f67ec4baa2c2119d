"""Recovering missed Stripe events: the stripe SDK against a stand-in for Stripe's events API over HTTP, and
`python -m billing recover-stripe-events` as a process of its own on a real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp import web
from billing.adapters.postgres import PostgresEventStore
from billing.adapters.stripe_api import StripeEventFeed
from billing.domain.ingest import IngestEvents
from billing.domain.recovery import FeedUnavailable
from trigger.flows import FLOWS

from tests.support import incoming, run_module

KEY = "sk_test_recovery"


class FakeStripeApi:
    """GET /v1/events as Stripe answers it: a bearer key, newest first, `created[gte|lt]`, `delivery_success`,
    pages of `limit` continued by `starting_after`, errors as Stripe's JSON error object."""

    def __init__(self, events: list[dict], undelivered: set[str] | None = None) -> None:
        self.events = sorted(events, key=lambda e: e["created"], reverse=True)
        self.undelivered = undelivered
        self.requests: list[dict[str, str]] = []

    async def list_events(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": {"type": "invalid_request_error",
                                                "message": "Invalid API Key provided: sk_test_****"}}, status=401)
        q = request.query
        self.requests.append(dict(q))
        items = [e for e in self.events if int(q["created[gte]"]) <= e["created"] < int(q["created[lt]"])]
        if q.get("delivery_success") == "false":
            items = [e for e in items if self.undelivered is None or e["id"] in self.undelivered]
        if "starting_after" in q:
            items = items[[e["id"] for e in items].index(q["starting_after"]) + 1:]
        limit = int(q.get("limit", 10))
        return web.json_response({"object": "list", "url": "/v1/events", "has_more": len(items) > limit,
                                  "data": items[:limit]})


@pytest.fixture
def stripe_api(serve):
    """Starts a FakeStripeApi for given events; gives (api, base address)."""

    async def start(events: list[dict], undelivered: set[str] | None = None) -> tuple[FakeStripeApi, str]:
        api = FakeStripeApi(events, undelivered)
        app = web.Application()
        app.router.add_get("/v1/events", api.list_events)
        return api, await serve(app)

    return start


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


async def test_feed_reads_every_page_of_a_range_and_gives_its_events_oldest_first(stripe_api):
    base = int(datetime.now(UTC).timestamp()) - 7200
    events = [{"id": f"evt_{i:03}", "object": "event", "type": "charge.succeeded", "created": base + i,
               "data": {"object": {}}} for i in range(260)]
    api, address = await stripe_api(events, undelivered={e["id"] for e in events[5:255]})
    feed = StripeEventFeed(KEY, api_base=address, max_network_retries=0)
    try:
        listed = await feed.events_between(at(base + 3), at(base + 258), undelivered_only=True)
    finally:
        await feed.close()

    assert [e.event_id for e in listed] == [f"evt_{i:03}" for i in range(5, 255)]
    assert json.loads(listed[0].payload) == events[5]
    assert [r.get("starting_after") for r in api.requests] == [None, "evt_155", "evt_055"]
    assert {(r["created[gte]"], r["created[lt]"], r["limit"], r["delivery_success"]) for r in api.requests} == {
        (str(base + 3), str(base + 258), "100", "false")}


async def test_feed_refused_by_stripe_is_unavailable_with_stripes_reason(stripe_api):
    _, address = await stripe_api([])
    feed = StripeEventFeed("sk_test_revoked", api_base=address, max_network_retries=0)
    try:
        with pytest.raises(FeedUnavailable, match=r"Stripe refused the list of events \(401\): Invalid API Key"):
            await feed.events_between(at(0), at(10), undelivered_only=False)
    finally:
        await feed.close()


def flow_events() -> list[dict]:
    events = FLOWS["stripe-payment"].build("t1", "u1") + FLOWS["stripe-subscription"].build("t2", "u2")
    return events + [{**events[0], "id": "evt_balance", "type": "balance.available"}]


def summary(output: str) -> dict:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return next(line for line in lines if line["message"].startswith("stripe event"))


async def recover(database_url: str, address: str, *args: str, key: str = KEY) -> tuple[int, str]:
    return await run_module("billing", "recover-stripe-events", *args, env={
        "DATABASE_URL": database_url, "GRPC_PLAINTEXT": "true", "STRIPE_API_KEY": key, "STRIPE_API_BASE": address,
        "LOG_LEVEL": "INFO"})


async def test_recover_command_takes_in_what_stripe_did_not_deliver_and_is_safe_to_run_again(
        stripe_api, database_url, db):
    events = flow_events()
    delivered = events[:3]  # before the endpoint went down
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await IngestEvents(PostgresEventStore(pool)).execute([incoming("stripe", e) for e in delivered])
    finally:
        await pool.close()
    _, address = await stripe_api(events, undelivered={e["id"] for e in events[3:]})
    since = (datetime.now(UTC) - timedelta(hours=2)).isoformat()

    code, out = await recover(database_url, address, "--since", since)

    assert code == 0, out
    report = summary(out)
    assert (report["listed"], report["skipped_types_not_handled"], report["processed"]) == (
        len(events) - 3, 1, len(events) - 4)
    assert report["level"] == "warning" and "no webhook had delivered" in report["message"]
    stored = await db.fetch("SELECT event_id, status, request_id FROM billing.webhook_events")
    assert {r["event_id"] for r in stored} == {e["id"] for e in events} - {"evt_balance"}
    assert {r["request_id"] for r in stored if r["event_id"] not in {e["id"] for e in delivered}} == {
        report["request_id"]}
    rows = await db.fetch("SELECT tenant_id, status FROM billing.transactions ORDER BY tenant_id, status")
    assert [tuple(r) for r in rows] == [("t1", "disputed"), ("t2", "failed"), ("t2", "succeeded")]
    emails = await db.fetchval("SELECT count(*) FROM billing.email_outbox")
    assert emails > 0

    code, out = await recover(database_url, address, "--since", "3h", "--all")  # as the hourly CronJob names it

    assert code == 0, out
    assert summary(out)["listed"] == len(events) and summary(out)["duplicate"] == len(events) - 1
    assert "processed" not in summary(out)
    assert (summary(out)["level"], summary(out)["message"]) == ("info", "stripe events recovered, none missing")
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == len(stored)
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == emails


async def test_recover_command_refused_by_stripe_stores_nothing_and_says_where_to_resume(
        stripe_api, database_url, db):
    _, address = await stripe_api(flow_events())
    since = datetime.now(UTC) - timedelta(hours=2)

    code, out = await recover(database_url, address, "--since", since.isoformat(), key="sk_test_revoked")

    assert code == 1, out
    report = summary(out)
    assert "(401)" in report["error"] and datetime.fromisoformat(report["resume_from"]) == since
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 0


@pytest.mark.parametrize(("args", "key", "says"), [
    (["--since", "2026-11-20T00:00:00Z"], "", "configuration error: STRIPE_API_KEY is required"),
    (["--since", "2026-11-20T00:00:00"], KEY, "names no time zone"),
    (["--since", "yesterday"], KEY, "is not an ISO 8601 time"),
    ([], KEY, "the following arguments are required: --since"),
    (["--since", "2h", "--until", "2026-01-01T00:00:00Z"], KEY, "nothing to recover"),
])
async def test_recover_command_refuses_what_it_cannot_run_with_and_says_why(args, key, says, database_url):
    code, out = await recover(database_url, "http://127.0.0.1:9", *args, key=key)
    assert code == 2 and says in out, out


async def test_a_stripe_recovery_run_pushes_the_same_figures(stripe_api, database_url, pushgateway):
    from prometheus_client.parser import text_string_to_metric_families

    pushed, gateway = pushgateway
    _, address = await stripe_api(flow_events())
    code, out = await run_module("billing", "recover-stripe-events", "--since", "2h", env={
        "DATABASE_URL": database_url, "GRPC_PLAINTEXT": "true", "STRIPE_API_KEY": KEY, "STRIPE_API_BASE": address,
        "METRICS_PUSHGATEWAY": gateway})
    assert code == 0, out
    [(path, text)] = pushed.items()
    assert path == "/metrics/job/billing-recovery/provider/stripe"
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert {"billing_recovery_events", "billing_recovery_complete",
            "billing_recovery_last_run_timestamp_seconds"} <= names
