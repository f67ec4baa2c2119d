"""Forward-only numbered SQL migrations, applied under an advisory lock so that several replicas
starting together apply each file once."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from billing.adapters.postgres import lock_id

log = logging.getLogger(__name__)

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "migrations"


async def migrate(dsn: str, directory: Path = DEFAULT_DIRECTORY) -> list[str]:
    """Apply the migrations not yet applied; returns their names."""
    files = sorted(p for p in directory.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations in {directory}")
    conn = await asyncpg.connect(dsn, timeout=30)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", lock_id("billing:migrations"))
        await conn.execute(
            """
            CREATE SCHEMA IF NOT EXISTS billing;
            CREATE TABLE IF NOT EXISTS billing.schema_migrations (
                version text PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM billing.schema_migrations")}
        for path in files:
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO billing.schema_migrations (version) VALUES ($1)", path.name)
            log.info("applied migration", extra={"fields": {"migration": path.name}})
            applied_now.append(path.name)
    finally:
        await conn.close()
    return applied_now
