"""Forward-only numbered SQL migrations into one schema, applied under an advisory lock so that
several replicas starting together apply each file once."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import asyncpg

from pgkit.reach import reaching

log = logging.getLogger(__name__)


def lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock id for a key."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


async def migrate(dsn: str, schema: str, directory: Path) -> list[str]:
    """Apply the migrations of `directory` not yet applied to `schema`; returns their names."""
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations in {directory}")
    with reaching(dsn):
        conn = await asyncpg.connect(dsn, timeout=30)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", lock_id(f"{schema}:migrations"))
        await conn.execute(
            f"""
            CREATE SCHEMA IF NOT EXISTS {schema};
            CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                version text PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """
        )
        done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")}
        for path in files:
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(f"INSERT INTO {schema}.schema_migrations (version) VALUES ($1)", path.name)
            log.info("applied migration", extra={"fields": {"schema": schema, "migration": path.name}})
            applied_now.append(path.name)
    finally:
        await conn.close()
    log.info("migrations up to date", extra={"fields": {"schema": schema, "applied": applied_now}})
    return applied_now
