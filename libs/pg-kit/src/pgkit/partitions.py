"""Tables partitioned by time: one range partition per week (Monday 00:00 UTC), named by its first day,
created ahead of time and dropped whole once past retention.

Each table also has a DEFAULT partition, so that a write never fails for want of a partition (the job did
not run, a clock was far off). Rows that land there move into their week's partition when it is created,
and rows past retention are deleted from it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from pgkit.migrations import lock_id

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)
# DDL waits this long for a lock held by a long transaction, then gives up until the next run, rather than
# queue every write of the table behind it.
LOCK_TIMEOUT = "5s"
# A queue's partitions: each row is updated once its work is done, and the partial index the workers poll
# fills with dead entries until vacuum clears them; and the planner must know how many rows wait, or it
# sorts them all to claim the first hundred. PostgreSQL's defaults wait until a fifth (vacuum) or a tenth
# (analyze) of the partition has changed: in a week holding a few hundred thousand rows, hours of work.
QUEUE_VACUUM = ("autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=5000",
                "autovacuum_analyze_scale_factor=0", "autovacuum_analyze_threshold=5000")


@dataclass(frozen=True)
class PartitionedTable:
    schema: str
    table: str
    column: str  # the partition key, a timestamptz the row never changes
    # SQL condition on a row: a partition holding such a row is not dropped (work not yet done, such as an
    # email not yet sent); it goes at a later run.
    keep_while: str = ""
    # Storage parameters ("name=value") of each partition from the current week on, and of DEFAULT.
    storage: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def default(self) -> str:
        return f"{self.schema}.{self.table}_default"

    def name(self, week: datetime) -> str:
        return f"{self.table}_p{week:%Y%m%d}"


@dataclass(frozen=True)
class Retention:
    """How long rows are kept. Payloads and bodies go with their partition `days` after their week ends;
    idempotency keys and event ids are kept `key_days`, and never less long than the rows they guard."""

    days: int = 90
    key_days: int = 35
    ahead_weeks: int = 8  # partitions made ready ahead of time

    @property
    def rows(self) -> timedelta:
        return timedelta(days=self.days)

    @property
    def keys(self) -> timedelta:
        return timedelta(days=max(self.days, self.key_days))

    @property
    def ahead(self) -> timedelta:
        return self.ahead_weeks * WEEK


@dataclass(frozen=True)
class Maintenance:
    created: list[str]
    dropped: list[str]
    kept: list[str]  # past retention, but holding rows still to be worked on
    deleted_from_default: int


def week_of(at: datetime) -> datetime:
    """The Monday 00:00 UTC that starts the week holding `at`."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


async def weeks(conn: asyncpg.Connection, table: PartitionedTable) -> list[datetime]:
    """The first days of the table's weekly partitions, oldest first."""
    names = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass", table.qualified)
    prefix = f"{table.table}_p"
    return sorted(datetime.strptime(r["relname"][len(prefix):], "%Y%m%d").replace(tzinfo=UTC)
                  for r in names if r["relname"].startswith(prefix))


async def _create(conn: asyncpg.Connection, table: PartitionedTable, week: datetime) -> None:
    """The week's partition, with the rows the default partition holds for it. Attached rather than created
    as a partition: attaching locks the parent in a mode that lets writes go on."""
    name, until = f"{table.schema}.{table.name(week)}", week + WEEK
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"CREATE TABLE {name} (LIKE {table.qualified} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                           "INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION)")
        columns = ", ".join(await conn.fetchval(
            "SELECT array_agg(quote_ident(attname) ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''",
            table.qualified))
        moved = await conn.execute(
            f"WITH moved AS (DELETE FROM {table.default} WHERE {table.column} >= $1 AND {table.column} < $2 "
            f"RETURNING {columns}) INSERT INTO {name} ({columns}) SELECT {columns} FROM moved", week, until)
        # The range as a CHECK first, so that attaching need not scan the rows to prove it.
        await conn.execute(f"ALTER TABLE {name} ADD CONSTRAINT {table.name(week)}_range "
                           f"CHECK ({table.column} >= '{week.isoformat()}' AND {table.column} < '{until.isoformat()}')")
        await conn.execute(f"ALTER TABLE {table.qualified} ATTACH PARTITION {name} "
                           f"FOR VALUES FROM ('{week.isoformat()}') TO ('{until.isoformat()}')")
        await conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {table.name(week)}_range")
        if table.storage:
            await conn.execute(f"ALTER TABLE {name} SET ({', '.join(table.storage)})")
    if moved != "INSERT 0 0":
        log.warning("rows of the default partition moved into their week's", extra={"fields": {
            "table": table.qualified, "partition": name, "rows": int(moved.split()[-1])}})


async def ensure_weeks(conn: asyncpg.Connection, table: PartitionedTable, start: datetime,
                       end: datetime) -> list[str]:
    """Create the missing weekly partitions from the week of `start` through the week of `end`."""
    have = set(await weeks(conn, table))
    created, week = [], week_of(start)
    while week <= end:
        if week not in have:
            await _create(conn, table, week)
            created.append(table.name(week))
        week += WEEK
    await _set_storage(conn, table, [f"{table.schema}.{table.name(w)}" for w in have if w >= week_of(start)]
                       + [table.default])
    return created


async def _set_storage(conn: asyncpg.Connection, table: PartitionedTable, names: list[str]) -> None:
    """The table's storage parameters on partitions made before they were declared (or changed)."""
    if not table.storage:
        return
    for name in names:
        have = await conn.fetchval("SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass", name)
        if not set(table.storage) <= set(have):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                await conn.execute(f"ALTER TABLE {name} SET ({', '.join(table.storage)})")


async def drop_before(conn: asyncpg.Connection, table: PartitionedTable,
                      cutoff: datetime) -> tuple[list[str], list[str], int]:
    """Drop every partition whose week ended by `cutoff`, but one holding rows to keep; delete the default
    partition's rows older than `cutoff`. What was dropped, what was kept, rows deleted."""
    dropped, kept = [], []
    for week in await weeks(conn, table):
        if week + WEEK > cutoff:
            break
        name = f"{table.schema}.{table.name(week)}"
        if table.keep_while and await conn.fetchval(f"SELECT EXISTS (SELECT FROM {name} WHERE {table.keep_while})"):
            kept.append(table.name(week))
            continue
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await conn.execute(f"DROP TABLE {name}")
        dropped.append(table.name(week))
    keep = f" AND NOT ({table.keep_while})" if table.keep_while else ""
    deleted = await conn.execute(f"DELETE FROM {table.default} WHERE {table.column} < $1{keep}", cutoff)
    return dropped, kept, int(deleted.split()[-1])


async def maintain(conn: asyncpg.Connection, table: PartitionedTable, now: datetime, ahead: timedelta,
                   retention: timedelta | None) -> Maintenance:
    """Partitions from this week to `ahead`, and, with a retention, none older than it. Replicas and jobs
    running this together take turns."""
    await conn.execute("SELECT pg_advisory_lock($1)", lock_id(f"{table.qualified}:partitions"))
    try:
        created = await ensure_weeks(conn, table, now, now + ahead)
        dropped, kept, deleted = (await drop_before(conn, table, now - retention) if retention is not None
                                  else ([], [], 0))
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_id(f"{table.qualified}:partitions"))
    return Maintenance(created, dropped, kept, deleted)


async def delete_older(conn: asyncpg.Connection, table: str, column: str, cutoff: datetime,
                       batch: int = 10_000) -> int:
    """Delete the rows of an unpartitioned table older than `cutoff`, a batch per transaction, so that no
    lock is held for long."""
    deleted = 0
    while True:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))",
            cutoff, batch)
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            return deleted


async def prepare(pool: asyncpg.Pool, tables: tuple[PartitionedTable, ...], retention: Retention,
                  now: datetime) -> None:
    """The weeks ahead, at a service's start-up. A failure is logged, not fatal: rows outside the prepared
    weeks go to the DEFAULT partition, and the next run of the retention job moves them."""
    try:
        async with pool.acquire() as conn:
            for table in tables:
                await ensure_weeks(conn, table, now, now + retention.ahead)
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("partitions ahead not made at start-up", extra={"fields": {"error": str(exc)}})


async def apply_retention(pool: asyncpg.Pool, tables: tuple[PartitionedTable, ...],
                          keys: tuple[tuple[str, str], ...], retention: Retention, now: datetime) -> dict:
    """Make the weeks ahead, drop those past retention, and delete the rows of the key tables (table, time
    column) past the keys' retention; what was done, by table."""
    async with pool.acquire() as conn:
        done: dict = {t.qualified: asdict(await maintain(conn, t, now, retention.ahead, retention.rows))
                      for t in tables}
        for table, column in keys:
            done[table] = {"deleted": await delete_older(conn, table, column, now - retention.keys)}
    return done
