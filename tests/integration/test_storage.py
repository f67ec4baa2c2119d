"""Large values (provider payloads, email bodies) are stored lz4-compressed: about half the CPU of
PostgreSQL's default pglz on every write, on servers built with lz4 (as Debian's and the official images are)."""

from __future__ import annotations

import asyncpg
from billing.adapters.postgres import PostgresEventStore
from billing.domain.ingest import IngestEvents
from notifier.adapters.postgres import PostgresEmailLog
from notifier.domain.accept import AcceptEmail, EmailFactory, InlineEmails
from notifier.domain.contents import EmailKind
from notifier.domain.render import Renderer
from notifier.domain.samples import sample
from trigger.events import StripeScenario

from tests.support import incoming


async def test_payloads_and_email_bodies_are_compressed_with_lz4(database_url, db):
    assert await db.fetchval("SELECT 'lz4' = ANY (enumvals) FROM pg_settings "
                             "WHERE name = 'default_toast_compression'"), "this server has no lz4"
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        event = StripeScenario(tenant_id="acme").event("payment_intent.succeeded")
        event["data"]["object"]["description"] = "Corrugated boxes, 5-ply, 600x400x400 mm. " * 200  # ~8 KB
        await IngestEvents(PostgresEventStore(pool)).execute([incoming("stripe", event)])
        accept = AcceptEmail(PostgresEmailLog(pool), InlineEmails(EmailFactory(Renderer(), "boxcostpro.com")))
        await accept.execute("k-lz4", sample(EmailKind.PAYMENT_RECEIVED))
    finally:
        await pool.close()
    assert await db.fetchval("SELECT pg_column_compression(payload) FROM billing.webhook_events") == "lz4"
    assert await db.fetchval("SELECT pg_column_compression(html) FROM notifier.email_logs") == "lz4"
    stored = await db.fetchval("SELECT payload->'data'->'object'->>'description' FROM billing.webhook_events")
    assert stored == event["data"]["object"]["description"]
