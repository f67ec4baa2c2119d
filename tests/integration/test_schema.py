"""What the schema itself guarantees, whatever code writes to it."""

from __future__ import annotations

import asyncpg
import pytest

_INSERT = ("INSERT INTO billing.transactions (id, provider, status, status_at, idempotency_key) "
           "VALUES (gen_random_uuid(), 'stripe', 'pending', now(), $1)")


async def test_an_idempotency_key_names_one_transaction_and_rows_without_a_key_are_many(db):
    await db.execute(_INSERT, "checkout-1")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(_INSERT, "checkout-1")
    for _ in range(3):  # webhook-made payments carry no key
        await db.execute(_INSERT, None)
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 4
