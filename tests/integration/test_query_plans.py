"""Billing plans each statement once per connection (generic plans), typically while its tables are still
empty: a fresh deployment, or a fresh database under `make bench`. Those plans then serve for the life
of the connection, so each lookup must go through the index of the key it looks up. A plan that matched
on a shared leading column and filtered the rest made every ingest read all of a provider's events:
ingestion slowed from the first minute as the table grew."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from billing.adapters.outbox import PostgresOutbox
from billing.adapters.postgres import PostgresEventStore, create_pool
from billing.adapters.queries import PostgresBillingReader
from billing.domain.dispatch import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.model import Provider
from billing.domain.queries import PendingPayment
from trigger.flows import FLOWS

from tests.support import incoming

# Indexes for listing and filtering pages (by tenant, by time, by status): never the way to find a row
# by its key.
LISTING_INDEXES = ("tenant", "recent", "status", "type")


def _scans(node: dict, found: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    if node["Node Type"] == "Seq Scan":
        found.append(("Seq Scan", node["Relation Name"], ""))
    elif "Index Name" in node:
        found.append((node["Node Type"], node["Index Name"], node.get("Index Cond", "")))
    for child in node.get("Plans", []):
        _scans(child, found)
    return found


async def test_hot_path_statements_planned_on_empty_tables_look_rows_up_by_their_keys(database_url):
    # One connection, as billing's pool settings make it (generic plans, no sequential scans): the
    # statements it prepares while the tables are empty are the plans under test.
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        ingest = IngestEvents(PostgresEventStore(pool))
        for flow in FLOWS.values():  # every handler, payments before and after their subscription
            await ingest.execute([incoming(flow.provider, e) for e in flow.build("t1", "u1")])
        outbox = PostgresOutbox(pool)
        items = await outbox.claim_due(10, timedelta(seconds=30))
        await outbox.record_outcomes([Outcome(i.id, "retry", "x", datetime.now(UTC)) for i in items])
        await outbox.next_due_in()
        reader = PostgresBillingReader(pool)  # the internal API's lookups by key
        pending, _, _ = await reader.create_pending(PendingPayment("order-1", "t1", "u1", Provider.STRIPE, 4999,
                                                                   "USD", "pi_plan_test", ""))
        await reader.get_transaction("t1", pending.row.id)
        await reader.get_subscription("t1", "00000000-0000-0000-0000-000000000000")
        await reader.get_event(Provider.STRIPE, "evt_unknown")

        async with pool.acquire() as conn:
            statements = await conn.fetch(
                "SELECT name, statement, cardinality(parameter_types) AS arity FROM pg_prepared_statements "
                "WHERE statement LIKE '%billing.%'")
            plans = {}
            for s in statements:
                arguments = f"({', '.join(['NULL'] * s['arity'])})" if s["arity"] else ""
                plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {s['name']}{arguments}")
                plans[" ".join(s["statement"].split())] = _scans(json.loads(plan)[0]["Plan"], [])
    finally:
        await pool.close()

    texts = " ".join(plans)
    for expected in ("JOIN unnest", "SELECT * FROM billing.transactions WHERE stripe_payment_intent_id",
                     "UPDATE billing.transactions SET tenant_id", "UPDATE billing.email_outbox",
                     "WHERE idempotency_key = $1", "FROM billing.user_subscriptions WHERE",
                     "WHERE provider = $1 AND event_id = $2"):
        assert expected in texts, f"the test no longer exercises {expected!r}"
    wrong = {sql[:120]: scans for sql, scans in plans.items()
             if any(kind == "Seq Scan" or any(word in index for word in LISTING_INDEXES)
                    for kind, index, _ in scans)}
    assert wrong == {}
