"""`make bench`: start the stack on a fresh database, drive it from a separate load process, print figures.

Durability is real (the local PostgreSQL runs with fsync on), and the benchmark confirms that every event
acknowledged 2xx is in billing.webhook_events. With `--stored N` (`make bench STORED=N`) the database
starts with N events already stored (devstack.fill): filled once into a template database, copied per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import asyncpg

from devstack.cpumeter import CpuMeter
from devstack.localpg import recreate_database, with_database
from devstack.mailsink import MailSink
from devstack.stack import DEV_RAZORPAY_SECRET, DEV_STRIPE_SECRET, Stack, free_port

BENCH_DB = "boxcostpro_bench"


_APPLIED = ("SELECT 'billing/' || version FROM billing.schema_migrations UNION ALL "
            "SELECT 'notifier/' || version FROM notifier.schema_migrations")


def _migrations() -> set[str]:
    """Today's migrations, as the schemas record them once applied."""
    from billing.adapters.migrations import DEFAULT_DIRECTORY
    from notifier.adapters.postgres import MIGRATIONS

    return ({f"billing/{p.name}" for p in DEFAULT_DIRECTORY.glob("*.sql")}
            | {f"notifier/{p.name}" for p in MIGRATIONS.glob("*.sql")})


async def _stored_copy(admin_url: str, events: int) -> str:
    """A fresh copy of a database holding `events` stored events, filled once. Migrations made since are
    applied to the template, as an upgrade applies them to a production database; one holding migrations
    this code no longer has is filled again."""
    from billing.adapters.migrations import migrate as billing_migrate
    from notifier.adapters.postgres import migrate as notifier_migrate

    from devstack.fill import fill

    template = f"boxcostpro_stored_{events}"
    url = with_database(admin_url, template)
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", template)
    finally:
        await conn.close()
    if exists:
        conn = await asyncpg.connect(url)
        try:
            exists = {r[0] for r in await conn.fetch(_APPLIED)} <= _migrations()
        finally:
            await conn.close()
    if exists:
        await billing_migrate(url)
        await notifier_migrate(url)
    else:
        print(f"filling a template database with {events:,} stored events (once) ...", flush=True)
        url = await recreate_database(admin_url, template)
        await billing_migrate(url)
        await notifier_migrate(url)
        await fill(url, events, weeks=12)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        # Copied as files: the default strategy writes the whole copy through the WAL, and the run would
        # start during the checkpoints it calls for.
        await conn.execute(f'CREATE DATABASE "{BENCH_DB}" TEMPLATE "{template}" STRATEGY = FILE_COPY')
    finally:
        await conn.close()
    url = with_database(admin_url, BENCH_DB)
    await _warm(url)
    return url


# The relations a server running for weeks holds in memory: every index of the tables that are not
# partitions (ids and keys, probed and written at random) and the current week's partitions, whole.
_HOT = """
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index x ON x.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = x.indrelid
WHERE n.nspname IN ('billing', 'notifier') AND c.relkind IN ('r', 'i')
  AND (CASE WHEN c.relkind = 'i' THEN NOT t.relispartition ELSE false END
       OR coalesce(t.relname, c.relname) ~ ('_p' || to_char(date_trunc('week', now() AT TIME ZONE 'UTC'), 'YYYYMMDD') || '$'))
"""


async def _warm(database_url: str) -> None:
    """A copied database starts with nothing in PostgreSQL's buffers: read into them what a long-running
    server holds there, when the server has pg_prewarm."""
    conn = await asyncpg.connect(database_url)
    try:
        if not await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_prewarm'"):
            print("pg_prewarm is not available: the stored database starts cold", flush=True)
            return
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        for relation in [r[0] for r in await conn.fetch(_HOT)]:
            await conn.execute("SELECT pg_prewarm($1::regclass)", relation)
    finally:
        await conn.close()


async def _missing(database_url: str, acknowledged: list[list[str]]) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            """
            SELECT count(*) FROM unnest($1::text[], $2::text[]) AS a(provider, event_id)
            WHERE NOT EXISTS (SELECT 1 FROM billing.webhook_events e
                              WHERE e.provider = a.provider AND e.event_id = a.event_id)
            """,
            [p for p, _ in acknowledged], [e for _, e in acknowledged],
        )
    finally:
        await conn.close()


async def _now(database_url: str, checkpoint: bool = False) -> datetime:
    conn = await asyncpg.connect(database_url)
    try:
        if checkpoint:
            await conn.execute("CHECKPOINT")
        return await conn.fetchval("SELECT now()")
    finally:
        await conn.close()


async def _drain(database_url: str, since: datetime, timeout: float = 600.0) -> dict[str, float]:
    """Wait (polling, with a deadline) until every outbox email made since `since` (the run's, not those
    stored before it) is logged sent by the notifier.

    The rate is taken from the notifier's own log, first email accepted to last email sent: the pipeline
    at work, without the seconds billing's dispatcher waits before probing a notifier that was away.
    """
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM billing.email_outbox WHERE created_at >= $1", since)
        started = time.perf_counter()
        # Polls count what is still to do, through the partial indexes of pending and due emails: counting
        # what was sent would read every email of the week, and the observer's reads count as PostgreSQL's.
        while time.perf_counter() - started < timeout:
            waiting = await conn.fetchval(
                "SELECT (SELECT count(*) FROM billing.email_outbox WHERE status = 'pending')"
                " + (SELECT count(*) FROM notifier.email_logs WHERE status IN ('queued', 'retrying'))")
            if waiting == 0:
                break
            await asyncio.sleep(0.5)
        sent = await conn.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent AND created_at >= $1", since)
        seconds = await conn.fetchval(
            "SELECT extract(epoch FROM max(sent_at) - min(created_at))::float8 FROM notifier.email_logs "
            "WHERE created_at >= $1", since)
        return {"count": count, "sent": sent, "seconds": seconds or float("nan")}
    finally:
        await conn.close()


def _cpu_lines(cpu: dict[str, float], count: int, unit: str) -> list[str]:
    """CPU per unit of work (an event, an email) in each part, and the rate the machine's cores could give
    at most if fully used: where the time goes when everything shares one box."""
    per_unit = {name: 1000 * seconds / count for name, seconds in cpu.items()}
    total = sum(per_unit.values())
    cores = len(os.sched_getaffinity(0))
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in per_unit.items())
    return [f"  CPU per {unit:<12}{total:.2f} ms ({parts})",
            f"  bound by {cores} cores    at most {cores * 1000 / total:.0f} {unit}s/s with every core busy"]


def main(argv: list[str]) -> int:
    from devstack.__main__ import LOCAL, local_postgres

    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--stored", type=int, default=0, help="events stored before the run (devstack.fill)")
    args = parser.parse_args(argv)
    replicas = int(os.environ.get("REPLICAS", "1"))  # processes of each service

    pg = local_postgres()
    pg.start()
    database_url = (asyncio.run(_stored_copy(pg.url(), args.stored)) if args.stored
                    else asyncio.run(recreate_database(pg.url(), BENCH_DB)))
    log_dir = LOCAL / "bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    sink = MailSink(free_port(), fast=True).start()
    stack = Stack({"DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": DEV_STRIPE_SECRET,
                   "RAZORPAY_WEBHOOK_SECRET": DEV_RAZORPAY_SECRET, "LOG_LEVEL": "WARNING",
                   "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_TLS": "none"}, log_dir=log_dir,
                  replicas=replicas)
    stack.migrate()
    stack.start()
    try:
        asyncio.run(stack.wait_ready())
        # Phase 1 measures ingestion alone: the notifier is stopped, so the receipts each event asks
        # for wait in billing's outbox. Phase 2 starts it and measures how fast the outbox drains
        # to the SMTP sink.
        notifiers = [s for s in stack.services if s.name.startswith("notifier")]
        for notifier in notifiers:
            notifier.signal()
        for notifier in notifiers:
            notifier.wait(30)
        # Each run starts with no checkpoint under way (one the database's creation asked for, say).
        since = asyncio.run(_now(database_url, checkpoint=True))
        print(f"driving {stack.gateway_url} with {args.events} distinct signed events, "
              f"{args.concurrency} concurrent connections ...", flush=True)
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        measured_cpu = {s.name.replace("webhook-", ""): s.process.pid for s in stack.services
                        if not s.name.startswith("notifier")}
        measured_cpu["PostgreSQL"] = postmaster
        out = subprocess.run(
            [sys.executable, "-m", "devstack.loadgen", "--url", stack.gateway_url, "--events", str(args.events),
             "--concurrency", str(args.concurrency), "--stripe-secret", DEV_STRIPE_SECRET,
             "--razorpay-secret", DEV_RAZORPAY_SECRET,
             *(f"--cpu-of={name}={pid}" for name, pid in measured_cpu.items())],
            check=True, capture_output=True, text=True,
        )
        result = json.loads(out.stdout)
        missing = asyncio.run(_missing(database_url, result["acknowledged"]))
        print("draining the email outbox through the notifier to the SMTP sink ...", flush=True)
        for notifier in notifiers:
            notifier.start()
        asyncio.run(stack.wait_ready())
        meter = CpuMeter({**{n.name: n.process.pid for n in notifiers},
                          **{name: pid for name, pid in measured_cpu.items() if name.startswith("billing")},
                          "PostgreSQL": postmaster})
        meter.start()
        own = time.process_time()
        emails = asyncio.run(_drain(database_url, since))
        # This process alone (the services are its children): the sink's aiosmtpd thread, and the drain's
        # polls, which cost next to nothing.
        email_cpu = {**meter.stop(), "mail sink (bench)": time.process_time() - own}
        received = sink.count
    finally:
        codes = stack.stop()
        sink.stop()
    measured = result["sent"]
    accepted = len(result["acknowledged"]) - (args.events - measured)
    print(f"webhook ingestion (gateway -> billing -> PostgreSQL, fsync on), {replicas} process(es) of each service, "
          f"{measured} measured events, {args.stored:,} events stored before:")
    print(f"  accepted events/s   {accepted / result['elapsed']:.0f}")
    print(f"  latency p50         {result['p50_ms']:.1f} ms")
    print(f"  latency p99         {result['p99_ms']:.1f} ms")
    print(f"  latency max         {result['max_ms']:.1f} ms")
    print(f"  errors              {sum(result['errors'].values())} {result['errors'] or ''}")
    print(f"  acknowledged, not in webhook_events: {missing}")
    for line in _cpu_lines(result["cpu_seconds"], measured, "event"):
        print(line)
    print(f"emails (billing outbox -> notifier -> SMTP sink), {emails['count']} receipts:")
    print(f"  delivered emails/s  {emails['count'] / emails['seconds']:.0f}")
    print(f"  received by the sink {received}, logged sent {emails['sent']}")
    for line in _cpu_lines(email_cpu, emails["count"], "email"):
        print(line)
    print(f"  services exited     {codes}  (logs in {Path(log_dir).relative_to(Path.cwd())})")
    ok = missing == 0 and received == emails["count"] == emails["sent"]
    return 0 if ok and all(c == 0 for c in codes.values()) else 1
