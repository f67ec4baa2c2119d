"""One way to open a service's connection pool."""

from __future__ import annotations

import asyncpg

from pgkit.reach import reaching


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Our services keep no session state (no LISTEN, no session advisory locks, no SET, no cursors
    outside transactions), so a released connection needs no reset query: that round trip per use
    cost a fifth of the database calls under load. asyncpg still rolls back a transaction left open."""


async def create_pool(dsn: str, *, min_size: int, max_size: int, application_name: str,
                      settings: dict[str, str] | None = None) -> asyncpg.Pool:
    with reaching(dsn):
        return await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, command_timeout=30, reset=_keep_session,
            server_settings={"application_name": application_name, **(settings or {})},
        )
