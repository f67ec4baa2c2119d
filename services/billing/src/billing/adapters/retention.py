"""How long billing keeps what it stores: received events and outbox emails in weekly partitions, dropped
whole past retention; event ids, Razorpay body digests and email keys deleted row by row past theirs.
Transactions and subscriptions are never dropped."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg
from pgkit.partitions import PartitionedTable, Retention, delete_older, ensure_weeks, maintain

log = logging.getLogger(__name__)

EVENTS = PartitionedTable("billing", "webhook_events", "received_at")
# An email not yet handed to the notifier keeps its week's partition until it is.
OUTBOX = PartitionedTable("billing", "email_outbox", "created_at", keep_while="status = 'pending'")
KEYS = (("billing.event_ids", "received_at"), ("billing.razorpay_bodies", "stored_at"),
        ("billing.email_keys", "created_at"))


async def prepare(pool: asyncpg.Pool, retention: Retention, now: datetime) -> None:
    """The weeks ahead, at start-up. A failure is logged, not fatal: rows outside the prepared weeks go to
    the DEFAULT partition, and the next run of the job moves them."""
    try:
        async with pool.acquire() as conn:
            for table in (EVENTS, OUTBOX):
                await ensure_weeks(conn, table, now, now + retention.ahead)
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("partitions ahead not made at start-up", extra={"fields": {"error": str(exc)}})


async def apply_retention(pool: asyncpg.Pool, retention: Retention, now: datetime) -> dict[str, Any]:
    """Make the weeks ahead, drop those past retention, delete keys past theirs; what was done."""
    async with pool.acquire() as conn:
        done: dict[str, Any] = {table.qualified: asdict(await maintain(conn, table, now, retention.ahead,
                                                                        retention.rows))
                                for table in (EVENTS, OUTBOX)}
        for table, column in KEYS:
            done[table] = {"deleted": await delete_older(conn, table, column, now - retention.keys)}
    return done
