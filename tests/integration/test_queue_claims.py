"""Claims read a queue's due index in order and stop at their limit, whatever the statistics say: after an
outage, thousands of emails wait while the statistics still say none do, and a claim that sorted them all
to take a hundred made draining the backlog quadratic. Nor is a claim compiled: its estimate grows with the
weeks stored, its work does not."""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg
from billing.adapters.outbox import CLAIM, PostgresOutbox
from billing.adapters.postgres import create_pool
from pgkit import pool as pgkit_pool
from pgkit import queues


def _nodes(node: dict) -> list[str]:
    return [node["Node Type"], *(n for child in node.get("Plans", []) for n in _nodes(child))]


async def test_a_backlog_the_statistics_do_not_know_of_is_claimed_in_index_order_a_batch_at_a_time(database_url, db):
    await db.execute("ANALYZE billing.email_outbox")  # the statistics of an empty queue
    await db.execute(
        "INSERT INTO billing.email_outbox (id, idempotency_key, kind, content, next_attempt_at) "
        "SELECT gen_random_uuid(), 'k' || g, 'payment_received', ''::bytea, now() - g * interval '1 ms' "
        "FROM generate_series(1, 3000) g")
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        [plan] = await queues.claim(pool, f"EXPLAIN (FORMAT JSON) {CLAIM}", 100, timedelta(seconds=30))
        nodes = _nodes(json.loads(plan[0])[0]["Plan"])
        assert "Sort" not in nodes and "Merge Append" in nodes, nodes
        claimed = await PostgresOutbox(pool).claim_due(100, timedelta(seconds=30))
    finally:
        await pool.close()
    # The hundred longest due.
    assert sorted(item.idempotency_key for item in claimed) == sorted(f"k{g}" for g in range(3000, 2900, -1))


async def _compiled(conn, query: str, *args) -> bool:
    [plan] = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args))
    return "JIT" in plan


async def test_claims_are_never_jit_compiled_however_costly_their_estimate(database_url, db):
    # Millions of rows over many weeks' partitions put a claim's estimate past jit_above_cost, and the
    # compile (about 100 ms) then cost far more than the claim. Here every statement's estimate is past it.
    await db.execute(f"ALTER DATABASE {database_url.rpartition('/')[2]} SET jit_above_cost = 0")
    await db.execute(
        "INSERT INTO billing.email_outbox (id, idempotency_key, kind, content, next_attempt_at) "
        "SELECT gen_random_uuid(), 'k' || g, 'payment_received', ''::bytea, now() FROM generate_series(1, 10) g")
    plain = await asyncpg.connect(database_url)
    try:
        if await plain.fetchval("SELECT pg_jit_available()"):  # a server built without LLVM never compiles
            async with plain.transaction():
                assert await _compiled(plain, CLAIM, 5, timedelta(seconds=30))
    finally:
        await plain.close()
    billing = await create_pool(database_url, min_size=1, max_size=1)
    notifier = await pgkit_pool.create_pool(database_url, min_size=1, max_size=1, application_name="notifier")
    try:
        for pool in (billing, notifier):
            async with pool.acquire() as conn, conn.transaction():
                assert await conn.fetchval("SHOW jit") == "off"
                assert not await _compiled(conn, CLAIM, 5, timedelta(seconds=30))
    finally:
        await billing.close()
        await notifier.close()
