"""Retention on real PostgreSQL: weekly partitions made ahead and dropped whole, keys kept past them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from billing.adapters import retention as billing_retention
from billing.adapters.outbox import PostgresOutbox
from billing.adapters.postgres import PostgresEventStore, create_pool
from billing.domain.dispatch import DispatchResult
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from notifier.adapters import retention as notifier_retention
from notifier.adapters.postgres import PostgresEmailLog
from notifier.domain.accept import AcceptEmail, EmailFactory, InlineEmails
from notifier.domain.contents import EmailKind
from notifier.domain.model import IdempotencyConflict
from notifier.domain.render import Renderer
from notifier.domain.samples import sample
from pgkit.partitions import Retention, apply_retention, week_of, weeks
from trigger.events import StripeScenario

from tests.support import incoming, run_module

NOW = datetime.now(UTC)
# Payloads a week, keys the five weeks a provider may still deliver an event again.
SHORT = Retention(days=7, key_days=35, ahead_weeks=2)
TLS_FILES = ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE")


@pytest.fixture
async def pool(database_url):
    pool = await create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _billing(pool, now: datetime) -> dict:
    return await apply_retention(pool, billing_retention.TABLES, billing_retention.KEYS, SHORT, now)


async def _notifier(pool, now: datetime) -> dict:
    return await apply_retention(pool, notifier_retention.TABLES, notifier_retention.KEYS, SHORT, now)


async def _weeks(pool, table) -> list[datetime]:
    async with pool.acquire() as conn:
        return await weeks(conn, table)


async def test_partitions_are_made_for_the_weeks_ahead_and_each_row_lands_in_its_week(pool, db):
    await _billing(pool, NOW + timedelta(weeks=10))
    have = await _weeks(pool, billing_retention.EVENTS)
    assert all(w in have for w in (week_of(NOW + timedelta(weeks=n)) for n in range(10, 13)))
    assert await _weeks(pool, billing_retention.OUTBOX) == have
    event = incoming("stripe", StripeScenario(tenant_id="acme").event("payment_intent.succeeded"))
    await IngestEvents(PostgresEventStore(pool)).execute([replace(event, received_at=NOW + timedelta(weeks=11))])
    where = await db.fetchval("SELECT tableoid::regclass::text FROM billing.webhook_events")
    assert where == f"billing.webhook_events_p{week_of(NOW + timedelta(weeks=11)):%Y%m%d}"


async def test_queue_partitions_are_vacuumed_after_a_fixed_number_of_updates_not_a_fifth_of_the_week(pool, db):
    # Partitions made by the migration, before the setting existed, take it too.
    await db.execute("ALTER TABLE billing.email_outbox_default RESET (autovacuum_vacuum_scale_factor)")
    await _billing(pool, NOW)
    await _notifier(pool, NOW)
    options = {r["relname"]: set(r["reloptions"] or ()) for r in await db.fetch(
        "SELECT c.relname, c.reloptions FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent IN ('billing.email_outbox'::regclass, 'notifier.email_logs'::regclass, "
        "'billing.webhook_events'::regclass)")}
    current = f"{week_of(NOW):%Y%m%d}"
    for table in ("email_outbox", "email_logs"):
        for name in (f"{table}_p{current}", f"{table}_p{week_of(NOW + timedelta(weeks=2)):%Y%m%d}", f"{table}_default"):
            assert {"autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=5000",
                    "autovacuum_analyze_scale_factor=0", "autovacuum_analyze_threshold=5000"} <= options[name], name
    # Events are written once, never updated in bulk: PostgreSQL's defaults serve them.
    assert options[f"webhook_events_p{current}"] == set()


async def test_rows_outside_the_prepared_weeks_wait_in_the_default_partition_and_move_into_theirs(pool, db):
    # No write fails for want of a partition: a week nobody made yet takes the row in DEFAULT, and making
    # the week moves it there.
    far = NOW + timedelta(weeks=30)
    event = incoming("stripe", StripeScenario(tenant_id="acme").event("payment_intent.succeeded"))
    [result] = await IngestEvents(PostgresEventStore(pool)).execute([replace(event, received_at=far)])
    assert result.outcome is Outcome.PROCESSED
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events_default") == 1
    await _billing(pool, far)
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events_default") == 0
    assert await db.fetchval("SELECT tableoid::regclass::text FROM billing.webhook_events") == (
        f"billing.webhook_events_p{week_of(far):%Y%m%d}")
    assert (await db.fetchrow("SELECT event_id, status FROM billing.webhook_events"))["event_id"] == event.event_id


async def test_an_event_whose_partition_was_dropped_is_still_a_duplicate_while_its_id_is_kept(pool, db):
    s = StripeScenario(tenant_id="acme")
    paid = incoming("stripe", s.event("payment_intent.succeeded"))
    ingest = IngestEvents(PostgresEventStore(pool))
    await ingest.execute([paid])
    receipts = await db.fetchval("SELECT count(*) FROM billing.email_outbox")
    await db.execute("UPDATE billing.email_outbox SET status = 'delivered'")

    three_weeks_on = NOW + timedelta(weeks=3)
    done = await _billing(pool, three_weeks_on)
    assert f"webhook_events_p{week_of(NOW):%Y%m%d}" in done["billing.webhook_events"]["dropped"]
    assert f"email_outbox_p{week_of(NOW):%Y%m%d}" in done["billing.email_outbox"]["dropped"]
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 0  # the payload is gone
    assert await db.fetchval("SELECT count(*) FROM billing.event_ids") == 1  # its id is not
    before = [tuple(r) for r in await db.fetch("SELECT * FROM billing.transactions")]

    [again] = await ingest.execute([paid])  # Stripe redelivers, or recovery lists it again
    assert again.outcome is Outcome.DUPLICATE
    assert [tuple(r) for r in await db.fetch("SELECT * FROM billing.transactions")] == before
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == 0  # no second receipt
    assert receipts == 1

    # Past the key retention the id goes too: the provider can no longer send the event.
    await _billing(pool, NOW + timedelta(days=36))
    assert await db.fetchval("SELECT count(*) FROM billing.event_ids") == 0


async def test_an_outbox_email_not_yet_handed_over_keeps_its_partition_until_it_is(pool, db):
    await IngestEvents(PostgresEventStore(pool)).execute(
        [incoming("stripe", StripeScenario(tenant_id="acme").event("payment_intent.succeeded"))])
    later = NOW + timedelta(weeks=3)
    done = await _billing(pool, later)
    week = f"email_outbox_p{week_of(NOW):%Y%m%d}"
    assert week in done["billing.email_outbox"]["kept"] and week not in done["billing.email_outbox"]["dropped"]
    outbox = PostgresOutbox(pool)
    await db.execute("UPDATE billing.email_outbox SET next_attempt_at = now()")
    [item] = await outbox.claim_due(10, timedelta(minutes=1))
    await outbox.record_outcomes([DispatchResult(item.id, "delivered", None, None)])
    done = await _billing(pool, later)
    assert week in done["billing.email_outbox"]["dropped"]
    assert await db.fetchval("SELECT count(*) FROM billing.email_keys") == 1  # its key stays 35 days


async def test_the_notifier_drops_sent_emails_past_retention_and_refuses_their_key_again(database_url, db):
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        accept = AcceptEmail(PostgresEmailLog(pool), InlineEmails(EmailFactory(Renderer(), "boxcostpro.com")))
        await accept.execute("k-queued", sample(EmailKind.PAYMENT_RECEIVED))
        await accept.execute("k-sent", sample(EmailKind.PAYMENT_FAILED))
        await db.execute("UPDATE notifier.email_logs SET status = 'sent' WHERE idempotency_key = 'k-sent'")
        later = NOW + timedelta(weeks=3)
        done = await _notifier(pool, later)
        week = f"email_logs_p{week_of(NOW):%Y%m%d}"
        assert week in done["notifier.email_logs"]["kept"]  # an email still to send keeps its week
        await db.execute("UPDATE notifier.email_logs SET status = 'sent'")
        done = await _notifier(pool, later)
        assert week in done["notifier.email_logs"]["dropped"]
        assert await db.fetchval("SELECT count(*) FROM notifier.email_logs") == 0  # bodies and addresses gone
        with pytest.raises(IdempotencyConflict, match="purged"):  # the sender's retry sends nothing
            await accept.execute("k-sent", sample(EmailKind.PAYMENT_FAILED))
        assert await db.fetchval("SELECT count(*) FROM notifier.email_logs") == 0
        # An email stamped outside the prepared weeks waits in DEFAULT and moves into its week when made.
        far = NOW + timedelta(weeks=30)
        await accept.execute("k-far", sample(EmailKind.PAYMENT_RECEIVED))
        await db.execute("UPDATE notifier.email_logs SET created_at = $1", far)
        assert await db.fetchval("SELECT count(*) FROM notifier.email_logs_default") == 1
        await _notifier(pool, far)
        assert await db.fetchval("SELECT tableoid::regclass::text FROM notifier.email_logs") == (
            f"notifier.email_logs_p{week_of(far):%Y%m%d}")
    finally:
        await pool.close()


@pytest.mark.parametrize("service", ["billing", "notifier"])
async def test_the_retention_command_makes_the_weeks_ahead_and_refuses_a_setting_it_cannot_use(service, database_url,
                                                                                               db, tmp_path):
    # As in its pod: the shared config names TLS files that are not mounted there, and no mail settings.
    env = {"DATABASE_URL": database_url, "PARTITIONS_AHEAD_WEEKS": "12", "SMTP_HOST": "", "GRPC_PLAINTEXT": "",
           **{name: str(tmp_path / "absent" / name) for name in TLS_FILES}}
    code, out = await run_module(service, "migrate", env=env)
    assert code == 0, out
    code, out = await run_module(service, "retention", env=env)
    assert code == 0, out
    assert '"retention applied"' in out or "retention applied" in out
    table = "webhook_events" if service == "billing" else "email_logs"
    names = {r["relname"] for r in await db.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass", f"{service}.{table}")}
    assert f"{table}_p{week_of(NOW + timedelta(weeks=12)):%Y%m%d}" in names
    code, out = await run_module(service, "retention", env={**env, "KEY_RETENTION_DAYS": "7"})
    assert code == 2 and "KEY_RETENTION_DAYS must be at least 35" in out
