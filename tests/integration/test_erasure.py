"""Erasing a customer's personal data on real PostgreSQL: the data goes, money, ids and keys stay, and
nothing is applied or sent twice afterwards."""

from __future__ import annotations

import hashlib

import pytest
from billing.adapters.postgres import PostgresEventStore, create_pool
from billing.adapters.reader import PostgresBillingReader
from billing.domain.api_types import EventSelection
from billing.domain.errors import InvalidRequest
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.internal_api import InternalApi
from notifier.adapters.postgres import PostgresEmailLog
from notifier.domain.accept import AcceptEmail, EmailFactory, InlineEmails
from notifier.domain.contents import EmailKind
from notifier.domain.erasure import EraseRecipient
from notifier.domain.model import EmailStatus
from notifier.domain.operations import NotRetryable, RequeueFailedEmails
from notifier.domain.render import Renderer
from notifier.domain.samples import sample
from trigger.events import StripeScenario
from trigger.flows import FLOWS

from tests.support import incoming

BUYER = "buyer@example.com"


@pytest.fixture
async def pool(database_url):
    pool = await create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _holding(db, address: str) -> dict[str, int]:
    """Where the address is still stored, anywhere billing keeps data."""
    needle = address.lower()
    return {
        "transactions": await db.fetchval("SELECT count(*) FROM billing.transactions t "
                                          "WHERE strpos(lower(t::text), $1) > 0", needle),
        "subscriptions": await db.fetchval("SELECT count(*) FROM billing.user_subscriptions s "
                                           "WHERE strpos(lower(s::text), $1) > 0", needle),
        "events": await db.fetchval("SELECT count(*) FROM billing.webhook_events e WHERE strpos(lower(e::text), $1) > 0 "
                                    "OR strpos(lower(convert_from(coalesce(body, ''), 'UTF8')), $1) > 0", needle),
        "outbox": await db.fetchval("SELECT count(*) FROM billing.email_outbox o "
                                    "WHERE position(convert_to($1, 'UTF8') IN coalesce(content, '')) > 0", needle),
        "erasures": await db.fetchval("SELECT count(*) FROM billing.erasures r WHERE strpos(lower(r::text), $1) > 0",
                                      needle),
    }


async def test_a_customers_data_leaves_billing_and_their_money_ids_and_keys_stay(pool, db):
    ingest = IngestEvents(PostgresEventStore(pool))
    events = [incoming("stripe", e) for e in FLOWS["stripe-subscription"].build("acme", "u1")]
    someone_else = StripeScenario(tenant_id="acme", email="someone.else@example.com")
    other = [incoming("stripe", someone_else.event(t)) for t in ("payment_intent.succeeded", "charge.succeeded")]
    for event in events + other:
        await ingest.execute([event])
    assert all(count > 0 for table, count in (await _holding(db, BUYER)).items() if table != "erasures")
    money = [tuple(r) for r in await db.fetch("SELECT id, amount, currency, status, amount_refunded, tenant_id "
                                              "FROM billing.transactions ORDER BY id")]
    others_before = await db.fetch("SELECT payload, body FROM billing.webhook_events WHERE event_id = ANY($1) "
                                   "ORDER BY event_id", [e.event_id for e in other])
    api = InternalApi.wired(PostgresBillingReader(pool), ingest)

    erased = await api.erasure.execute(" Buyer@Example.COM ", "GDPR request #42", requested_by="ops@example")

    assert await _holding(db, BUYER) == {"transactions": 0, "subscriptions": 0, "events": 0, "outbox": 0,
                                         "erasures": 0}
    assert (erased.subscriptions, erased.events) == (1, len(events))
    assert erased.transactions >= 2 and erased.outbox_emails >= 1
    assert [tuple(r) for r in await db.fetch("SELECT id, amount, currency, status, amount_refunded, tenant_id "
                                             "FROM billing.transactions ORDER BY id")] == money
    assert await db.fetch("SELECT payload, body FROM billing.webhook_events WHERE event_id = ANY($1) "
                          "ORDER BY event_id", [e.event_id for e in other]) == others_before
    record = await db.fetchrow("SELECT * FROM billing.erasures")
    assert (record["requested_by"], record["reason"], bytes(record["email_sha256"])) == (
        "ops@example", "GDPR request #42", hashlib.sha256(BUYER.encode()).digest())
    assert record["events"] == len(events)

    # Redelivered, an erased event is a duplicate: nothing applied again, no email asked for again.
    outbox = await db.fetchval("SELECT count(*) FROM billing.email_keys")
    results = await ingest.execute(events)
    assert {r.outcome for r in results} == {Outcome.DUPLICATE}
    assert await db.fetchval("SELECT count(*) FROM billing.email_keys") == outbox
    assert await _holding(db, BUYER) == {"transactions": 0, "subscriptions": 0, "events": 0, "outbox": 0,
                                         "erasures": 0}
    # An erased event is not replayed: its payload is gone.
    chosen = await PostgresBillingReader(pool).select_events(
        EventSelection(event_ids=tuple(e.event_id for e in events)), 100)
    assert chosen == []
    # Asked again, nothing more is found; that run is recorded too.
    again = await api.erasure.execute(BUYER, "GDPR request #42, again", requested_by="ops@example")
    assert (again.transactions, again.subscriptions, again.events, again.outbox_emails) == (0, 0, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM billing.erasures") == 2


@pytest.mark.parametrize(("email", "reason", "field"), [("", "r", "email"), ("not-an-address", "r", "email"),
                                                         (BUYER, " ", "reason")])
async def test_an_erasure_without_an_address_or_a_reason_is_refused_and_changes_nothing(pool, db, email, reason,
                                                                                        field):
    api = InternalApi.wired(PostgresBillingReader(pool), IngestEvents(PostgresEventStore(pool)))
    with pytest.raises(InvalidRequest) as refused:
        await api.erasure.execute(email, reason, requested_by="ops")
    assert refused.value.field == field
    assert await db.fetchval("SELECT count(*) FROM billing.erasures") == 0


async def test_a_recipients_emails_keep_their_record_lose_their_data_and_unsent_ones_are_not_sent(database_url, db):
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        email_log = PostgresEmailLog(pool)
        accept = AcceptEmail(email_log, InlineEmails(EmailFactory(Renderer(), "boxcostpro.com")))
        queued, _ = await accept.execute("k-queued", sample(EmailKind.PAYMENT_RECEIVED))
        sent, _ = await accept.execute("k-sent", sample(EmailKind.PAYMENT_FAILED))
        await db.execute("UPDATE notifier.email_logs SET status = 'sent', sent_at = now() WHERE id = $1::uuid", sent.id)

        erased = await EraseRecipient(email_log).execute("ASHA@example.com", "ticket 7", requested_by="ops")

        assert erased.emails == 2
        rows = {r["idempotency_key"]: r for r in await db.fetch("SELECT * FROM notifier.email_logs")}
        for row in rows.values():
            assert (row["to_email"], row["to_name"], row["subject"], row["html"], row["body_text"]) == ("",) * 5
            assert row["erased_at"] is not None
        assert (rows["k-sent"]["status"], rows["k-queued"]["status"]) == ("sent", "failed")
        assert rows["k-queued"]["next_attempt_at"] is None  # never picked up for sending
        assert "erased" in rows["k-queued"]["error_message"]
        # The sender's retry finds its key: the first email, not a new one.
        record, created = await accept.execute("k-queued", sample(EmailKind.PAYMENT_RECEIVED))
        assert (record.id, created, record.status) == (queued.id, False, EmailStatus.FAILED)
        with pytest.raises(NotRetryable, match="erased"):
            await RequeueFailedEmails(email_log).execute(queued.tenant_id, [queued.id], None)
        assert await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE status = 'queued'") == 0
        audit = await db.fetchrow("SELECT * FROM notifier.erasures")
        assert (audit["emails"], bytes(audit["email_sha256"])) == (2, hashlib.sha256(b"asha@example.com").digest())
    finally:
        await pool.close()
