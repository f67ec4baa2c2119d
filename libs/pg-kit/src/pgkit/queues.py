"""Claiming work from a queue table: the rows due first, read in order from the due index."""

from __future__ import annotations

from typing import Any

import asyncpg


async def claim(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run a claim (an UPDATE of the rows a `... ORDER BY due LIMIT n FOR UPDATE SKIP LOCKED` picks) so that
    it reads the due index in order and stops at the limit. Left to statistics that lag a burst, the
    planner may sort every waiting row, thousands after an outage, to take the first n, on every claim."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_sort = off")
        return await conn.fetch(query, *args)
