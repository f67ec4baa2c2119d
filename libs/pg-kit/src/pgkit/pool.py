"""One way to open a service's connection pool."""

from __future__ import annotations

import asyncpg

from pgkit.reach import reaching


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Our services keep no session state (no LISTEN, no session advisory locks, no SET, no cursors
    outside transactions), so a released connection needs no reset query: that round trip per use
    cost a fifth of the database calls under load. asyncpg still rolls back a transaction left open."""


# No JIT compilation: our statements are lookups and small batches, done in a millisecond or two, and
# compiling one costs about 100 ms. With millions of rows over many partitions, estimates pass
# jit_above_cost, and every outbox claim paid that compile: emails went at half speed.
_SETTINGS = {"jit": "off"}


async def create_pool(dsn: str, *, min_size: int, max_size: int, application_name: str,
                      settings: dict[str, str] | None = None) -> asyncpg.Pool:
    with reaching(dsn):
        return await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, command_timeout=30, reset=_keep_session,
            server_settings={"application_name": application_name, **_SETTINGS, **(settings or {})},
        )
