"""Billing's ingest on a real PostgreSQL: exactly once under concurrency, group commits, contained failures."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import uuid
from datetime import timedelta

import asyncpg
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from billing.adapters.email_messages import from_stored
from billing.adapters.migrations import migrate
from billing.adapters.postgres import PostgresEventStore
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.notifications import RECEIPT_LINK_WAIT
from trigger.events import StripeScenario
from trigger.flows import FLOWS

from tests.fakes import InMemoryEventStore
from tests.support import assert_same_emails, emails, incoming, state


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
def ingest(pool) -> IngestEvents:
    return IngestEvents(PostgresEventStore(pool))


async def rows(db, table):
    return await db.fetch(f"SELECT * FROM billing.{table}")


@pytest.mark.parametrize("name", sorted(FLOWS))
async def test_postgres_rows_equal_the_rules_for_every_flow(name, ingest, db):
    flow = FLOWS[name]
    events = [incoming(flow.provider, e) for e in flow.build("t1", "u1")]
    expected = InMemoryEventStore()
    for event in events:
        await IngestEvents(expected).execute([event])
    for event in events:
        await ingest.execute([event])
    assert state(await rows(db, "transactions")) == state(expected.transactions.values())
    assert state(await rows(db, "user_subscriptions")) == state(expected.subscriptions.values())
    stored = await db.fetch("SELECT event_id, status, attempts, payload FROM billing.webhook_events")
    assert sorted(r["event_id"] for r in stored) == sorted(e.event_id for e in events)
    assert {(r["status"], r["attempts"]) for r in stored} == {("processed", 1)}


async def test_rows_read_back_keep_their_times_whatever_the_server_time_zone(database_url, db):
    # A batch reads the rows it changes as JSON, times as text with the session's offset.
    await db.execute(f"ALTER DATABASE {await db.fetchval('SELECT current_database()')} SET timezone = 'Asia/Kolkata'")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SHOW timezone") == "Asia/Kolkata"
        flow = FLOWS["stripe-payment"]
        events = [incoming(flow.provider, e) for e in flow.build("t1", "u1")]
        expected = InMemoryEventStore()
        for event in events:
            await IngestEvents(expected).execute([event])
            await IngestEvents(PostgresEventStore(pool)).execute([event])
    finally:
        await pool.close()
    assert state(await rows(db, "transactions")) == state(expected.transactions.values())


async def test_concurrent_duplicates_apply_once(ingest, db):
    event = incoming("stripe", StripeScenario().event("payment_intent.succeeded"))
    results = await asyncio.gather(*(ingest.execute([event]) for _ in range(20)))
    outcomes = sorted(r[0].outcome.value for r in results)
    assert outcomes == ["duplicate"] * 19 + ["processed"]
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 1
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 1


async def test_concurrent_shuffled_batches_converge_to_the_in_order_state(ingest, db):
    flows = [FLOWS[n] for n in sorted(FLOWS)] * 3
    events = [incoming(f.provider, e) for f in flows for e in f.build("t1", "u1")]
    expected = InMemoryEventStore()
    for event in events:
        await IngestEvents(expected).execute([event])
    deliveries = events * 2
    random.Random(3).shuffle(deliveries)
    batches = [deliveries[i:i + 7] for i in range(0, len(deliveries), 7)]
    await asyncio.gather(*(ingest.execute(b) for b in batches))
    assert state(await rows(db, "transactions")) == state(expected.transactions.values())
    assert state(await rows(db, "user_subscriptions")) == state(expected.subscriptions.values())
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == len(events)


def _refused_by_the_database():
    event = StripeScenario().event("payment_intent.succeeded")
    event["data"]["object"]["amount"] = 2**70  # valid JSON, beyond bigint
    return incoming("stripe", event)


async def test_event_the_database_refuses_fails_alone_and_is_kept(ingest, db):
    good = incoming("stripe", StripeScenario().event("payment_intent.succeeded"))
    bad = _refused_by_the_database()
    results = await ingest.execute([bad, good])
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.PROCESSED]
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 1
    kept = await db.fetchrow("SELECT status, error FROM billing.webhook_events WHERE event_id = $1", bad.event_id)
    assert kept["status"] == "failed" and kept["error"]


async def test_refused_batch_is_rolled_back_and_leaves_no_transaction_open(ingest, pool, db):
    await ingest.execute([_refused_by_the_database(), incoming("stripe", StripeScenario().event("charge.failed"))])
    async with pool.acquire() as conn:  # every connection the batches used is back, outside a transaction
        assert not conn.is_in_transaction()
    assert await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'") == 0


async def test_batch_cut_off_by_a_lost_connection_is_retried_and_applied_once(ingest, db):
    # The first attempt's insert stalls (a sequence is outside transactions, so only the first stalls);
    # its server process is then terminated, as a failover or a restart would.
    await db.execute("""
        CREATE SEQUENCE billing.attempts;
        CREATE FUNCTION billing.stall() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN IF nextval('billing.attempts') = 1 THEN PERFORM pg_sleep(60); END IF; RETURN NEW; END $$;
        CREATE TRIGGER stall BEFORE INSERT ON billing.webhook_events FOR EACH ROW EXECUTE FUNCTION billing.stall();
    """)
    event = incoming("stripe", StripeScenario().event("payment_intent.succeeded"))
    ingesting = asyncio.ensure_future(ingest.execute([event]))
    deadline = asyncio.get_running_loop().time() + 20
    while not await db.fetchval("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE wait_event = 'PgSleep' AND pid <> pg_backend_pid()"):
        assert asyncio.get_running_loop().time() < deadline, "the first attempt never reached the stall"
        await asyncio.sleep(0.05)
    [result] = await asyncio.wait_for(ingesting, 30)
    assert result.outcome is Outcome.PROCESSED
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 1
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 1
    assert await db.fetchval("SELECT nextval('billing.attempts')") == 3  # two attempts, then this read


async def test_redelivered_failed_event_is_retried_and_counted(ingest, db):
    event = StripeScenario().event("payment_intent.succeeded")
    event["data"]["object"]["currency"] = "dollars"
    broken = incoming("stripe", event)
    await ingest.execute([broken])
    [again] = await ingest.execute([broken])
    assert again.outcome is Outcome.FAILED
    row = await db.fetchrow("SELECT status, attempts, error FROM billing.webhook_events")
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert "currency" in row["error"]
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0


async def test_ignored_event_is_kept_with_its_payload(ingest, db):
    event = StripeScenario().event("payment_intent.succeeded")
    event["type"] = "customer.created"
    [result] = await ingest.execute([incoming("stripe", event)])
    assert result.outcome is Outcome.IGNORED
    row = await db.fetchrow("SELECT status, payload->>'type' AS type FROM billing.webhook_events")
    assert (row["status"], row["type"]) == ("ignored", "customer.created")


async def test_migrations_apply_once(database_url):
    assert await migrate(database_url) == []


async def test_text_and_times_are_stored_exactly(ingest, db):
    """Rows travel to PostgreSQL as one JSON document: quoting, escapes, non-ASCII and times survive it."""
    tenant = 'Shree "Box" Pack\\aging — ✓ 😀 ' + "x" * 200
    s = StripeScenario(tenant_id=tenant, user_id="42", amount=9_007_199_254_740_993, currency="inr",
                       email="o'brien+tag@example.com")
    event = incoming("stripe", s.event("payment_intent.succeeded"))
    await ingest.execute([event])
    row = await db.fetchrow("SELECT tenant_id, user_id, amount, currency, customer_email, paid_at "
                            "FROM billing.transactions")
    assert (row["tenant_id"], row["user_id"], row["amount"], row["currency"], row["customer_email"]) == (
        tenant, "42", 9_007_199_254_740_993, "INR", "o'brien+tag@example.com")
    created = (await db.fetchval("SELECT payload->>'created' FROM billing.webhook_events"))
    assert row["paid_at"].timestamp() == int(created)


async def test_a_payment_recorded_by_invoice_and_by_intent_becomes_the_invoice_row_when_linked(ingest, db):
    # API versions from 2025-03-31: the invoice's row (with the tenant) and the payment intent's row
    # (without) are one payment once invoice_payment.paid names both. The tenant's row id stays.
    events = {e.event_type: e for e in (incoming("stripe", raw) for raw in FLOWS["stripe-subscription-2025-03-31"].build(
        "t1", "u1"))}
    [by_invoice] = await ingest.execute([events["invoice.paid"]])
    [by_intent] = await ingest.execute([events["payment_intent.succeeded"]])
    assert by_invoice.transaction_ids != by_intent.transaction_ids
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 2
    [linked] = await ingest.execute([events["invoice_payment.paid"]])
    assert linked.transaction_ids == by_invoice.transaction_ids
    [row] = await rows(db, "transactions")
    assert str(row["id"]) == by_invoice.transaction_ids[0] and row["tenant_id"] == "t1"
    assert row["stripe_payment_intent_id"] and row["stripe_invoice_id"] and row["status"] == "succeeded"
    stored = await db.fetchval("SELECT transaction_ids FROM billing.webhook_events WHERE event_id = $1",
                               events["invoice_payment.paid"].event_id)
    assert [str(i) for i in stored] == list(by_invoice.transaction_ids)


async def test_payments_stored_without_an_owner_take_their_subscriptions_and_its_receipt(ingest, db):
    # An invoice without metadata before its subscription: stored without a tenant, so no receipt yet.
    # The subscription, which names no payment, finds the row by subscription, gives it the tenant, and
    # the receipt that waited for one goes into the outbox; the event's row names the payment it changed.
    s = StripeScenario(tenant_id="acme", user_id="7")
    invoice = s.event("invoice.paid")
    invoice["data"]["object"]["subscription_details"] = {"metadata": {}}
    [paid] = await ingest.execute([incoming("stripe", invoice)])
    other = StripeScenario(tenant_id="other")  # another subscription's payment without an owner stays so
    stray = other.event("invoice.paid")
    stray["data"]["object"]["subscription_details"] = {"metadata": {}}
    await ingest.execute([incoming("stripe", stray)])
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == 0
    [owned] = await ingest.execute([incoming("stripe", s.event("customer.subscription.created"))])
    owners = {r["stripe_subscription_id"]: (r["tenant_id"], r["user_id"]) for r in await rows(db, "transactions")}
    assert owners == {s.sub: ("acme", "7"), other.sub: (None, None)}
    assert owned.transaction_ids == paid.transaction_ids
    outbox = await db.fetch("SELECT id, kind, content FROM billing.email_outbox")
    receipts = [from_stored(r["kind"], r["content"]) for r in outbox if r["kind"] == "payment_received"]
    assert [(r.tenant_id, r.payment_received.transaction_id) for r in receipts] == [("acme", paid.transaction_ids[0])]
    assert {uuid.UUID(str(r["id"])).version for r in outbox} == {7}  # time-ordered, like every row billing adds


async def outbox_row(db):
    row = await db.fetchrow("SELECT kind, content, attempts, next_attempt_at - now() AS wait FROM billing.email_outbox")
    told = getattr(from_stored(row["kind"], row["content"]), row["kind"])
    return json_format.MessageToDict(told, preserving_proto_field_name=True), row["attempts"], row["wait"]


async def test_a_stripe_receipt_waits_unsent_for_its_link_and_the_charge_sends_it_at_once(ingest, db):
    s = StripeScenario(tenant_id="acme")
    await ingest.execute([incoming("stripe", s.event("payment_intent.succeeded"))])
    data, attempts, wait = await outbox_row(db)
    assert "receipt_url" not in data and attempts == 0
    assert RECEIPT_LINK_WAIT - timedelta(seconds=10) < wait <= RECEIPT_LINK_WAIT
    await ingest.execute([incoming("stripe", s.event("charge.succeeded"))])
    data, attempts, wait = await outbox_row(db)
    assert data["receipt_url"] == f"https://pay.stripe.com/receipts/payment/{s.charge}"
    assert data["amount"] == {"amount_minor": "4999", "currency": "USD"}  # the rest of the email as it was
    assert data["payment_method"] == "Visa •••• 4242"  # the charge names the card; the intent only its type
    assert wait <= timedelta(0)  # due now


async def test_a_receipt_being_handed_to_the_notifier_keeps_its_lease_when_its_link_comes(ingest, db):
    s = StripeScenario(tenant_id="acme")
    await ingest.execute([incoming("stripe", s.event("payment_intent.succeeded"))])
    # As the dispatcher claims it: one attempt, leased for a while.
    await db.execute("UPDATE billing.email_outbox SET attempts = 1, next_attempt_at = now() + interval '5 minutes'")
    await ingest.execute([incoming("stripe", s.event("charge.succeeded"))])
    data, attempts, wait = await outbox_row(db)
    assert attempts == 1 and wait > timedelta(minutes=4)  # no second claim while the first is in flight
    assert "receipt_url" in data  # should the hand-over fail, the email sent later has it


async def test_a_receipt_the_notifier_refused_takes_its_link_for_when_it_is_queued_again(ingest, db):
    s = StripeScenario(tenant_id="acme")
    await ingest.execute([incoming("stripe", s.event("payment_intent.succeeded"))])
    # As the dispatcher records a refusal: dead, out of the queue until an operator queues it again.
    await db.execute("UPDATE billing.email_outbox SET status = 'dead', attempts = 1, next_attempt_at = now()")
    await ingest.execute([incoming("stripe", s.event("charge.succeeded"))])
    data, attempts, _ = await outbox_row(db)
    assert data["receipt_url"] == f"https://pay.stripe.com/receipts/payment/{s.charge}"
    assert (await db.fetchval("SELECT status FROM billing.email_outbox"), attempts) == ("dead", 1)


async def test_a_razorpay_body_resent_under_new_event_ids_is_stored_and_applied_once(ingest, db):
    from trigger.events import RazorpayScenario

    captured = RazorpayScenario().event("payment.captured")
    first = incoming("razorpay", captured, "evt_original")
    [result] = await ingest.execute([first])
    assert result.outcome is Outcome.PROCESSED
    # The same signed bytes under other ids: one at a time, several in one batch, and several batches at once.
    replays = [dataclasses.replace(first, event_id=f"evt_replay_{i}") for i in range(9)]
    answers = [await ingest.execute([replays[0]]), await ingest.execute(replays[1:4])]
    answers += await asyncio.gather(*(ingest.execute([r]) for r in replays[4:]))
    assert {r.outcome for batch in answers for r in batch} == {Outcome.DUPLICATE}
    stored = await db.fetch("SELECT event_id, encode(payload_sha256, 'hex') AS sha FROM billing.webhook_events")
    assert [(r["event_id"], r["sha"]) for r in stored] == [("evt_original", hashlib.sha256(first.payload).hexdigest())]
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 1
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == 1
    # Razorpay's own retry, same id and body, is the duplicate it always was; another event is new.
    assert [r.outcome for r in await ingest.execute([first])] == [Outcome.DUPLICATE]
    other = incoming("razorpay", RazorpayScenario().event("payment.captured"), "evt_other")
    assert [r.outcome for r in await ingest.execute([other])] == [Outcome.PROCESSED]


async def test_stripe_events_with_identical_bodies_keep_their_own_ids(ingest, db):
    # Stripe signs the event id inside the body: the body does not identify a delivery beyond its id.
    event = StripeScenario().event("payment_intent.succeeded")
    one = incoming("stripe", event)
    twin = dataclasses.replace(one, event_id="evt_same_body_other_id")
    assert [r.outcome for r in await ingest.execute([one, twin])] == [Outcome.PROCESSED, Outcome.PROCESSED]
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 2


async def test_an_event_of_the_other_mode_is_stored_ignored_with_its_reason(pool, db):
    from billing.domain.scope import StripeScope

    event = StripeScenario().event("payment_intent.succeeded")  # a test-mode event
    ingest = IngestEvents(PostgresEventStore(pool), stripe_scope=StripeScope(livemode=True))
    [result] = await ingest.execute([incoming("stripe", event)])
    assert result.outcome is Outcome.IGNORED
    row = await db.fetchrow("SELECT status, error FROM billing.webhook_events")
    assert dict(row) == {"status": "ignored", "error": "a test-mode event, and billing takes live-mode events only"}
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0


BILLING_TABLES = ("webhook_events", "transactions", "user_subscriptions", "email_outbox", "transaction_merges",
                  "razorpay_bodies")
ON_POSTGRES = settings(max_examples=24, deadline=None, derandomize=True,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(FLOWS))
@ON_POSTGRES
@given(data=st.data())
async def test_any_arrival_order_on_postgres_ends_in_the_rules_rows_and_exactly_their_emails(name, ingest, db, data):
    # The property of the rules' own tests, through the real SQL: each example a random order of the flow
    # (drawn, never all built), some events twice, in two batches.
    flow = FLOWS[name]
    events = [incoming(flow.provider, e) for e in flow.build("t1", "u1")]
    expected = InMemoryEventStore()
    for event in events:
        await IngestEvents(expected).execute([event])
    arrival = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events), max_size=3))))
    cut = data.draw(st.integers(0, len(arrival)))
    await db.execute(f"TRUNCATE {', '.join(f'billing.{t}' for t in BILLING_TABLES)}")
    for batch in (arrival[:cut], arrival[cut:]):
        if batch:
            await ingest.execute(batch)
    assert state(await rows(db, "transactions")) == state(expected.transactions.values())
    assert state(await rows(db, "user_subscriptions")) == state(expected.subscriptions.values())
    assert_same_emails(emails(await rows(db, "email_outbox")), emails(expected.outbox.values()),
                       [e.event_type for e in arrival])
    stored = await db.fetch("SELECT event_id FROM billing.webhook_events")
    assert sorted(r["event_id"] for r in stored) == sorted(e.event_id for e in events)
