"""What the schema itself guarantees, whatever code writes to it."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from billing.adapters.email_messages import email_content
from billing.adapters.outbox import PostgresOutbox
from billing.adapters.migrations import DEFAULT_DIRECTORY, migrate
from notifier.adapters.postgres import MIGRATIONS as NOTIFIER_MIGRATIONS
from notifier.adapters.postgres import migrate as notifier_migrate
from billing.adapters.postgres import EventRetryPolicy, PostgresEventStore, PostgresUnit, create_pool
from billing.domain.email_contents import Money, PaymentReceived
from billing.domain.ingest import IngestEvents
from billing.domain.notifications import EmailAmendment, EmailIntent
from billing.domain.working_set import WorkingSet
from devstack.localpg import recreate_database
from trigger.events import StripeScenario

from tests.support import incoming

_INSERT = ("INSERT INTO billing.transactions (id, provider, status, status_at, idempotency_key) "
           "VALUES (gen_random_uuid(), 'stripe', 'pending', now(), $1)")


async def test_an_idempotency_key_names_one_transaction_and_rows_without_a_key_are_many(db):
    await db.execute(_INSERT, "checkout-1")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(_INSERT, "checkout-1")
    for _ in range(3):  # webhook-made payments carry no key
        await db.execute(_INSERT, None)
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 4


async def test_invoice_pages_kept_as_receipts_move_to_invoice_url(postgres_admin_url, tmp_path):
    # Before 009 the first of a charge's receipt and its invoice's page filled receipt_url. The migration
    # moves invoice pages to their own column and leaves charge receipts where they are.
    async with _scratch_database(postgres_admin_url) as url:
        rows = await _rows_after_009(url, tmp_path)
    assert [tuple(r) for r in rows] == [
        ("in_1", None, "https://invoice.stripe.com/i/acct_1/test_abc?s=ap"),
        ("in_2", "https://pay.stripe.com/receipts/payment/ch_2", None),
        (None, "https://pay.stripe.com/receipts/payment/ch_3", None),
    ]


async def test_rows_stored_before_the_requested_amount_and_contact_ranks_keep_their_meaning(postgres_admin_url,
                                                                                            tmp_path):
    # 011: a row made ahead of its payment asked for the amount it holds. 014: an address already stored
    # came from an unknown source, so it reads as the top rank and no later source replaces it; rows
    # written afterwards start at no rank.
    async with _scratch_database(postgres_admin_url) as url:
        await migrate(url, _migrations_before(tmp_path, "011"))
        conn = await asyncpg.connect(url)
        try:
            insert = ("INSERT INTO billing.transactions (id, provider, status, status_at, amount, currency, "
                      "idempotency_key, customer_email) VALUES (gen_random_uuid(), 'stripe', $1, now(), 4999, 'USD', $2, $3)")
            await conn.execute(insert, "pending", "checkout-1", None)
            await conn.execute(insert, "succeeded", None, "buyer@example.com")
            await migrate(url)
            await conn.execute(insert, "succeeded", None, "later@example.com")
            rows = await conn.fetch("SELECT idempotency_key, requested_amount, requested_currency, customer_email, "
                                    "customer_email_rank FROM billing.transactions ORDER BY created_at, customer_email")
        finally:
            await conn.close()
    assert [tuple(r) for r in rows] == [
        ("checkout-1", 4999, "USD", None, 3),
        (None, None, None, "buyer@example.com", 3),
        (None, None, None, "later@example.com", 0),
    ]


async def test_a_refund_stored_before_refunds_were_kept_by_id_is_undone_when_it_fails(postgres_admin_url, tmp_path):
    # Before 015 a row knew only the cumulative amount refunded. It reads as that amount reported, so the
    # failure of the refund it counted, named by an id the row never saw, brings it back to paid.
    s = StripeScenario(amount=1000, refund_parts=1)
    s.event("charge.refunded")
    failed = s.event("refund.failed")
    async with _scratch_database(postgres_admin_url) as url:
        await migrate(url, _migrations_before(tmp_path, "015"))
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO billing.transactions (id, provider, status, status_at, provider_status, amount, currency, "
                "amount_refunded, stripe_payment_intent_id, stripe_charge_id) VALUES "
                "(gen_random_uuid(), 'stripe', 'refunded', now(), 'refunded', 1000, 'USD', 1000, $1, $2)",
                s.pi, s.charge)
            await migrate(url)
            pool = await create_pool(url, min_size=1, max_size=1)
            try:
                await IngestEvents(PostgresEventStore(pool)).execute([incoming("stripe", failed)])
            finally:
                await pool.close()
            row = await conn.fetchrow("SELECT status, provider_status, amount_refunded, refunds_reported, "
                                      "refunds->0->>'state' AS state FROM billing.transactions")
        finally:
            await conn.close()
    assert tuple(row) == ("succeeded", "refund_failed", 0, 1000, "failed")


_RECEIPT_AS_STORED_BEFORE_025 = {
    "kind": "payment_received", "tenant_id": "acme", "user_id": "u1", "tenant_name": "BoxCostPro",
    "to": {"email": "asha@example.com", "name": "Asha"},
    "data": {"transaction_id": "txn-9", "amount": {"amount_minor": 4999, "currency": "USD"},
             "payment_method": "Card", "payment_date": "2026-11-28T09:00:00+00:00"}}
_RECEIPT = EmailIntent("txn:9:payment_received", "acme", "u1", "asha@example.com", "Asha", PaymentReceived(
    transaction_id="txn-9", amount=Money(4999, "USD"), payment_method="Card",
    payment_date=datetime(2026, 11, 28, 9, tzinfo=UTC)))


async def test_emails_waiting_in_the_outbox_across_the_upgrade_are_sent_as_they_were_asked_for(
        postgres_admin_url, tmp_path):
    # Rows written before 025 (and by replicas of the previous release during the upgrade) keep their JSON.
    # A waiting receipt is still sent with its content, and its link, added after the upgrade, goes into it.
    link = "https://pay.stripe.com/receipts/payment/ch_9"
    async with _scratch_database(postgres_admin_url) as url:
        await migrate(url, _migrations_before(tmp_path, "025"))
        conn = await asyncpg.connect(url)
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            await conn.execute("INSERT INTO billing.email_outbox (id, idempotency_key, kind, request, next_attempt_at) "
                               "VALUES (gen_random_uuid(), $1, 'payment_received', $2, now() + interval '1 minute')",
                               _RECEIPT.idempotency_key, json.dumps(_RECEIPT_AS_STORED_BEFORE_025))
            await migrate(url)
            amended = WorkingSet()
            amended.amendments = [EmailAmendment(_RECEIPT.idempotency_key, "payment_received", "receipt_url", link)]
            async with conn.transaction():
                await PostgresUnit(conn, EventRetryPolicy()).write(amended, [])
            [item] = await PostgresOutbox(pool).claim_due(10, timedelta(minutes=1))  # due at once, with its link
        finally:
            await pool.close()
            await conn.close()
    assert item.content == email_content(replace(_RECEIPT, content=replace(_RECEIPT.content, receipt_url=link)))


async def test_partitioning_keeps_every_stored_event_email_and_key(postgres_admin_url, tmp_path):
    # 026 (billing) and 004 (notifier) copy the tables into weekly partitions: each row is kept, in its
    # week's partition, and each event id and email key goes on being unique.
    weeks_ago = [0, 3, 20]
    async with _scratch_database(postgres_admin_url) as url:
        await migrate(url, _migrations_before(tmp_path, "026"))
        await notifier_migrate(url, _migrations_before(tmp_path, "004", NOTIFIER_MIGRATIONS))
        conn = await asyncpg.connect(url)
        try:
            for n in weeks_ago:
                await conn.execute(
                    "INSERT INTO billing.webhook_events (id, provider, event_id, event_type, payload, received_at, "
                    "status) VALUES (gen_random_uuid(), 'stripe', $1, 'charge.succeeded', '{}', "
                    "now() - make_interval(weeks => $2), 'processed')", f"evt_{n}", n)
                await conn.execute(
                    "INSERT INTO billing.email_outbox (id, idempotency_key, kind, request, status, created_at) "
                    "VALUES (gen_random_uuid(), $1, 'payment_received', '{}', 'delivered', "
                    "now() - make_interval(weeks => $2))", f"key_{n}", n)
                await conn.execute(
                    "INSERT INTO notifier.email_logs (id, tenant_id, to_email, tenant_name, subject, email_type, html, "
                    "body_text, status, idempotency_key, request_fingerprint, message_id, created_at) VALUES "
                    "(gen_random_uuid(), 't1', 'a@example.com', 'T', 's', 'payment_received', '<p>', 'p', 'sent', "
                    "$1, 'f', '<m@x>', now() - make_interval(weeks => $2))", f"key_{n}", n)
            before = {table: sorted(tuple(r) for r in await conn.fetch(f"SELECT * FROM {table}"))
                      for table in ("billing.webhook_events", "billing.email_outbox", "notifier.email_logs")}
            await migrate(url, _migrations_before(tmp_path, "027"))
            await notifier_migrate(url, _migrations_before(tmp_path, "005", NOTIFIER_MIGRATIONS))
            for table, rows in before.items():
                assert sorted(tuple(r) for r in await conn.fetch(f"SELECT * FROM {table}")) == rows, table
                assert await conn.fetchval(f"SELECT count(*) FROM {table}_default") == 0, table
                partitions = await conn.fetchval(f"SELECT count(DISTINCT tableoid) FROM {table}")
                assert partitions == len(weeks_ago), table
            assert await conn.fetchval("SELECT count(*) FROM billing.event_ids") == len(weeks_ago)
            assert await conn.fetchval("SELECT count(*) FROM billing.email_keys") == len(weeks_ago)
            assert await conn.fetchval("SELECT count(*) FROM notifier.email_keys") == len(weeks_ago)
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("INSERT INTO billing.event_ids (provider, event_id, id, received_at) "
                                   "VALUES ('stripe', 'evt_3', gen_random_uuid(), now())")
        finally:
            await conn.close()


async def _rows_after_009(url: str, tmp_path) -> list[asyncpg.Record]:
    """Migrate to 008, write rows as the old code did, apply 009; the rows then."""
    await migrate(url, _migrations_before(tmp_path, "009"))
    conn = await asyncpg.connect(url)
    try:
        insert = ("INSERT INTO billing.transactions (id, provider, status, status_at, stripe_invoice_id, receipt_url) "
                  "VALUES (gen_random_uuid(), 'stripe', 'succeeded', now(), $1, $2)")
        await conn.execute(insert, "in_1", "https://invoice.stripe.com/i/acct_1/test_abc?s=ap")
        await conn.execute(insert, "in_2", "https://pay.stripe.com/receipts/payment/ch_2")
        await conn.execute(insert, None, "https://pay.stripe.com/receipts/payment/ch_3")
        assert await migrate(url, _migrations_before(tmp_path, "010")) == ["009_invoice_url.sql"]
        return await conn.fetch("SELECT stripe_invoice_id, receipt_url, invoice_url FROM billing.transactions "
                                "ORDER BY stripe_invoice_id NULLS LAST")
    finally:
        await conn.close()


def _migrations_before(tmp_path, version: str, source=DEFAULT_DIRECTORY):
    """A directory of the migrations older than `version`."""
    directory = tmp_path / f"before_{version}"
    directory.mkdir()
    for path in sorted(source.glob("*.sql")):
        if path.name < version:
            shutil.copy(path, directory)
    return directory


@asynccontextmanager
async def _scratch_database(postgres_admin_url: str) -> AsyncIterator[str]:
    """A new empty database for a migration test, dropped afterwards; its URL."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    url = await recreate_database(postgres_admin_url, name)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(postgres_admin_url)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
