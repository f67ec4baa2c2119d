"""Background workers idle when there is nothing to do: "nothing waits" must not read as "due now"
(which once kept billing and the notifier polling the database in a tight loop)."""

from __future__ import annotations

import asyncpg
import pytest
from billing.adapters.outbox import PostgresOutbox
from billing.adapters.reader import PostgresBillingReader
from notifier.adapters.postgres import PostgresEmailLog


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_nothing_waiting_means_no_next_round(pool):
    assert await PostgresOutbox(pool).next_due_in() is None
    assert await PostgresBillingReader(pool).next_retry_in() is None
    assert await PostgresEmailLog(pool).next_due_in() is None


async def test_overdue_work_is_due_now_and_future_work_later(pool):
    await pool.execute("""INSERT INTO billing.email_outbox (id, idempotency_key, kind, request, next_attempt_at)
                          VALUES (gen_random_uuid(), 'k1', 'payment_received', '{}', now() - interval '1 hour')""")
    assert await PostgresOutbox(pool).next_due_in() == 0.0
    await pool.execute("UPDATE billing.email_outbox SET next_attempt_at = now() + interval '1 hour'")
    assert 3500 < await PostgresOutbox(pool).next_due_in() <= 3600
