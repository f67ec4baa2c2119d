"""How long the notifier keeps its email log: weekly partitions, dropped whole past retention (with the
rendered bodies and addresses they hold); idempotency keys deleted row by row past theirs."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg
from pgkit.partitions import PartitionedTable, Retention, delete_older, ensure_weeks, maintain

log = logging.getLogger(__name__)

# An email still to be sent keeps its week's partition until it is sent or fails.
EMAIL_LOGS = PartitionedTable("notifier", "email_logs", "created_at", keep_while="status IN ('queued', 'retrying')")


async def prepare(pool: asyncpg.Pool, retention: Retention, now: datetime) -> None:
    """The weeks ahead, at start-up; a failure is logged, not fatal (the DEFAULT partition takes the rows)."""
    try:
        async with pool.acquire() as conn:
            await ensure_weeks(conn, EMAIL_LOGS, now, now + retention.ahead)
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("partitions ahead not made at start-up", extra={"fields": {"error": str(exc)}})


async def apply_retention(pool: asyncpg.Pool, retention: Retention, now: datetime) -> dict[str, Any]:
    """Make the weeks ahead, drop those past retention, delete keys past theirs; what was done."""
    async with pool.acquire() as conn:
        done = {EMAIL_LOGS.qualified: asdict(await maintain(conn, EMAIL_LOGS, now, retention.ahead, retention.rows))}
        done["notifier.email_keys"] = {"deleted": await delete_older(conn, "notifier.email_keys", "created_at",
                                                                      now - retention.keys)}
    return done
