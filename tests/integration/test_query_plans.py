"""Billing plans each statement once per connection (generic plans), typically while its tables are still
empty: a fresh deployment, or a fresh database under `make bench`; the notifier may settle on generic plans
too. Those plans then serve for the life of the connection, so each lookup must go through the index of
the key it looks up. A plan that matched
on a shared leading column and filtered the rest made every ingest read all of a provider's events:
ingestion slowed from the first minute as the table grew."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from billing.adapters.outbox import PostgresOutbox
from billing.adapters.postgres import PostgresEventStore, create_pool
from billing.adapters.reader import PostgresBillingReader
from billing.domain.dispatch import DispatchResult
from billing.domain.ingest import IngestEvents
from billing.domain.model import Provider
from billing.domain.api_types import EventFilter, PendingPayment
from notifier.adapters.postgres import PostgresEmailLog
from notifier.domain.accept import AcceptEmail, EmailFactory, InlineEmails
from notifier.domain.deliver import DeliverEmails, RetryPolicy
from notifier.domain.contents import EmailKind
from notifier.domain.render import Renderer
from notifier.domain.samples import sample
from pgkit import pool as pgkit_pool
from trigger.flows import FLOWS

from tests.support import incoming

# Indexes for listing and filtering pages (by tenant, by time, by status): never the way to find a row
# by its key.
LISTING_INDEXES = ("tenant", "recent", "status", "type")


def _scans(node: dict, found: list[tuple[str, str, str]], parents: dict[str, str]) -> list[tuple[str, str, str]]:
    """Each scan of the plan, a partition's index or table named by its partitioned table's."""
    if node["Node Type"] == "Seq Scan":
        found.append(("Seq Scan", parents.get(node["Relation Name"], node["Relation Name"]), ""))
    elif "Index Name" in node:
        found.append((node["Node Type"], parents.get(node["Index Name"], node["Index Name"]),
                      node.get("Index Cond", "")))
    for child in node.get("Plans", []):
        _scans(child, found, parents)
    return found


async def _generic_plans(conn, schema: str) -> dict[str, list[tuple[str, str, str]]]:
    """The plan of every statement this connection prepared on `schema`, by its text. Scans of the
    partitions of a table come one per partition, in order, each named as its table's."""
    parents = {r["child"]: r["parent"] for r in await conn.fetch(
        "SELECT c.relname AS child, p.relname AS parent FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent")}
    plans = {}
    statements = await conn.fetch("SELECT name, statement, cardinality(parameter_types) AS arity "
                                  "FROM pg_prepared_statements WHERE statement LIKE $1", f"%{schema}%")
    for s in statements:
        arguments = f"({', '.join(['NULL'] * s['arity'])})" if s["arity"] else ""
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {s['name']}{arguments}")
        scans = _scans(json.loads(plan)[0]["Plan"], [], parents)
        plans[" ".join(s["statement"].split())] = list(dict.fromkeys(scans))
    return plans


def _assert_lookups_by_key(plans: dict[str, list[tuple[str, str, str]]], exercised: tuple[str, ...]) -> None:
    """The statements named by `exercised` were planned, and no plan scans a table or a listing index."""
    texts = " ".join(plans)
    for expected in exercised:
        assert expected in texts, f"the test no longer exercises {expected!r}"
    wrong = {sql[:120]: scans for sql, scans in plans.items()
             if any(kind == "Seq Scan" or any(word in index for word in LISTING_INDEXES) for kind, index, _ in scans)}
    assert wrong == {}


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
        await outbox.record_outcomes([DispatchResult(i.id, "retry", "x", datetime.now(UTC)) for i in items])
        await outbox.next_due_in()
        reader = PostgresBillingReader(pool)  # the internal API's lookups by key
        pending, _, _ = await reader.create_pending(PendingPayment("order-1", "t1", "u1", Provider.STRIPE, 4999,
                                                                   "USD", "pi_plan_test", ""))
        await reader.get_transaction("t1", pending.row.id)
        await reader.get_transaction("t1", "00000000-0000-0000-0000-000000000000")  # merged? no
        await reader.get_subscription("t1", "00000000-0000-0000-0000-000000000000")
        await reader.get_event(Provider.STRIPE, "evt_unknown")
        await reader.refused_emails(10, requeue=False)  # operators' lists and the gauges' counts
        await reader.refused_emails(10, requeue=True)
        await reader.unattributed_payments(10)
        await reader.unattributed_subscriptions(10)
        await reader.backlog()

        async with pool.acquire() as conn:
            plans = await _generic_plans(conn, "billing.")
    finally:
        await pool.close()

    _assert_lookups_by_key(plans, exercised=(
        "JOIN billing.event_ids", "SELECT * FROM billing.transactions WHERE stripe_payment_intent_id",
        "UPDATE billing.email_outbox", "WHERE idempotency_key = $1",
        "FROM billing.user_subscriptions WHERE", "WHERE provider = $1 AND event_id = $2",
        "INSERT INTO billing.transaction_merges", "FROM billing.transaction_merges WHERE merged_id = $1",
        "WHERE status = 'dead' ORDER BY created_at", "AS outbox_refused",
        "WHERE tenant_id IS NULL AND paid_at IS NOT NULL ORDER BY paid_at", "AS unattributed_payments",
        "user_subscriptions WHERE tenant_id IS NULL ORDER BY created_at"))
    # Payments without a tenant are found through the index of just those, not every ownerless attempt.
    unattributed = [scans for sql, scans in plans.items() if "tenant_id IS NULL AND paid_at IS NOT NULL" in sql]
    assert len(unattributed) == 2
    assert all(any(index == "transactions_unattributed_idx" for _, index, _ in scans)
               for scans in unattributed), unattributed
    [subscriptions] = [scans for sql, scans in plans.items() if "user_subscriptions WHERE tenant_id IS NULL" in sql]
    assert any(index == "user_subscriptions_unattributed_idx" for _, index, _ in subscriptions), subscriptions
    # A Razorpay body is looked up by its digest alone, never through the events of every Razorpay delivery.
    [read] = [scans for sql, scans in plans.items() if "AS bodies" in sql]
    bodies = [(kind, index, cond) for kind, index, cond in read if "payload_sha256" in cond or "razorpay_bodies" in index]
    assert bodies and all(index == "razorpay_bodies_pkey" for _, index, _ in bodies), read
    assert not any(cond == "(provider = 'razorpay'::text)" for _, _, cond in read), read
    # A batch's amendments of emails waiting in the outbox find them by key, not by reading every pending
    # email (which, with the notifier away for a while, grows with every batch).
    [write] = [scans for sql, scans in plans.items() if "amended AS" in sql]
    outbox = [(kind, index, cond) for kind, index, cond in write if index.startswith("email_outbox")]
    assert outbox and all(index == "email_outbox_key_idx" and "idempotency_key" in cond
                          for _, index, cond in outbox), outbox


class _Accepting:
    async def send(self, message) -> None:
        """An SMTP server that takes everything: this test is about the notifier's statements."""


async def test_notifier_statements_planned_on_empty_tables_look_rows_up_by_their_keys(database_url):
    # The notifier lets PostgreSQL choose between custom and generic plans; the generic one is checked.
    pool = await pgkit_pool.create_pool(database_url, min_size=1, max_size=1, application_name="plan-test",
                                        settings={"enable_seqscan": "off"})
    try:
        email_log = PostgresEmailLog(pool)
        accept = AcceptEmail(email_log, InlineEmails(EmailFactory(Renderer(), "boxcostpro.com")))
        record, _ = await accept.execute("k-1", sample(EmailKind.PAYMENT_RECEIVED))
        await accept.execute("k-1", sample(EmailKind.PAYMENT_RECEIVED))  # the key's second use: a lookup
        deliver = DeliverEmails(email_log, _Accepting(), RetryPolicy(), clock=lambda: datetime.now(UTC))
        await deliver.run_once()
        await email_log.next_due_in()
        await email_log.get(record.tenant_id, record.id)
        await email_log.requeue(record.tenant_id, [record.id])
        await email_log.requeue_failed_since(datetime.now(UTC), None, 100)
        async with pool.acquire() as conn:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            plans = await _generic_plans(conn, "notifier.")
    finally:
        await pool.close()

    _assert_lookups_by_key(plans, exercised=(
        "INSERT INTO notifier.email_logs", "WHERE idempotency_key = ANY", "UPDATE notifier.email_logs SET attempts",
        "UPDATE notifier.email_logs AS e", "erased_at FROM notifier.email_logs WHERE", "WITH wanted AS",
        "WHERE status = 'failed' AND updated_at >= $1"))


async def test_operators_lists_of_failed_events_walk_the_failed_events_index(database_url):
    # Failed events are a few among millions: a page of them must not be filled by walking every event.
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        reader = PostgresBillingReader(pool)
        for status in ("failed", "dead_letter"):
            await reader.list_events(EventFilter(status=status), 10, None)
        await reader.claim_due_retries(10, timedelta(minutes=2))
        async with pool.acquire() as conn:
            plans = await _generic_plans(conn, "billing.")
    finally:
        await pool.close()

    failed = {sql: [index for _, index, _ in scans] for sql, scans in plans.items() if "status = 'failed'" in sql}
    lists = {sql: indexes for sql, indexes in failed.items() if not sql.startswith("UPDATE")}
    assert len(lists) == 2 and all(indexes == ["webhook_events_failed_idx"] for indexes in lists.values())
    # The retry worker's claim walks the index of failed events by due time, and takes rows by their key.
    [claim] = [indexes for sql, indexes in failed.items() if sql.startswith("UPDATE")]
    assert claim == ["webhook_events_retry_idx", "webhook_events_pkey"]
