"""Billing's internal gRPC API on a real server and PostgreSQL: pending transactions, tenant-scoped
reads with pagination, event operations and replay."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import grpc
import pytest
from billing import cli as billing_cli
from billing.adapters.postgres import EventRetryPolicy, PostgresEventStore, create_pool
from billing.adapters.reader import PostgresBillingReader
from billing.domain.ingest import IngestEvents
from billing.domain import replay
from billing.domain.api_types import EventFilter
from billing.domain.internal_api import InternalApi
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY
from trigger.events import StripeScenario

from tests.support import expect_code, incoming, wait_for

STRIPE = billing_pb2.PROVIDER_STRIPE


def pending(key="k1", tenant="t1", pi="pi_pending_1", amount=4999, **overrides):
    fields = dict(idempotency_key=key, tenant_id=tenant, user_id="u1", provider=STRIPE,
                  amount=billing_pb2.Money(amount_minor=amount, currency="usd"), stripe_payment_intent_id=pi)
    fields.update(overrides)
    return billing_pb2.CreatePendingTransactionRequest(**fields)


async def test_pending_transaction_is_idempotent_and_webhooks_attach_to_it(billing):
    stub, ingest = billing
    first = await stub.CreatePendingTransaction(pending())
    again = await stub.CreatePendingTransaction(pending())
    assert first.created and not again.created and first.transaction.id == again.transaction.id
    assert first.transaction.status == "pending" and first.transaction.amount.currency == "USD"
    assert uuid.UUID(first.transaction.id).version == 7  # time-ordered, as webhooks' transactions are
    s = StripeScenario(pi="pi_pending_1", tenant_id="t1")
    event = s.event("payment_intent.succeeded")
    event["data"]["object"]["metadata"] = {}  # the checkout carried no metadata: the pending row knows the tenant
    await ingest.execute([incoming("stripe", event)])
    got = await stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t1", id=first.transaction.id))
    assert (got.transaction.status, got.transaction.tenant_id, got.transaction.user_id) == ("succeeded", "t1", "u1")


async def test_a_payment_made_ahead_shows_what_was_charged_beside_what_was_asked(billing, db):
    stub, ingest = billing
    asked = await stub.CreatePendingTransaction(pending(amount=4999))
    s = StripeScenario(pi="pi_pending_1", tenant_id="t1", amount=3999)  # a coupon at checkout
    await ingest.execute([incoming("stripe", s.event("payment_intent.succeeded"))])
    got = (await stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t1", id=asked.transaction.id))).transaction
    assert (got.amount.amount_minor, got.amount.currency) == (3999, "USD")
    assert (got.requested_amount.amount_minor, got.requested_amount.currency) == (4999, "USD")
    again = await stub.CreatePendingTransaction(pending(amount=4999))  # the platform's retry is still the same
    assert not again.created and again.transaction.id == asked.transaction.id
    await expect_code(stub.CreatePendingTransaction(pending(amount=3999)), grpc.StatusCode.ALREADY_EXISTS)
    told_first = StripeScenario(tenant_id="t1")  # a payment no one asked for ahead has no requested amount
    [result] = await ingest.execute([incoming("stripe", told_first.event("payment_intent.succeeded"))])
    got = (await stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t1", id=result.transaction_ids[0])))
    assert not got.transaction.HasField("requested_amount")


async def test_a_transaction_merged_into_another_is_answered_with_the_one_kept(billing):
    # API versions from 2025-03-31: an intent carrying the tenant's metadata and its invoice are first
    # two rows, both listed to the tenant; invoice_payment.paid makes them one. The id the tenant saw
    # first still answers, with the row kept, and so does any id an event stored before the merge names.
    stub, ingest = billing
    s = StripeScenario(tenant_id="t_merge", api_version="2025-03-31")
    s.pi = s.invoice_pi
    [by_intent] = await ingest.execute([incoming("stripe", s.event("payment_intent.succeeded"))])
    [by_invoice] = await ingest.execute([incoming("stripe", s.event("invoice.paid"))])
    listed = await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t_merge"))
    assert {t.id for t in listed.transactions} == {*by_intent.transaction_ids, *by_invoice.transaction_ids}
    await ingest.execute([incoming("stripe", s.event("invoice_payment.paid"))])
    [kept] = (await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t_merge"))).transactions
    gone = ({*by_intent.transaction_ids, *by_invoice.transaction_ids} - {kept.id}).pop()
    got = await stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t_merge", id=gone))
    assert (got.transaction.id, got.transaction.stripe_payment_intent_id) == (kept.id, s.pi)
    await expect_code(stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="another", id=gone)),
                      grpc.StatusCode.NOT_FOUND)


async def test_a_payment_made_ahead_and_merged_into_its_invoice_still_answers_its_key(billing):
    # The platform made a row ahead for a subscription invoice's payment intent (API versions from
    # 2025-03-31). invoice_payment.paid merges it into the invoice's row, which is kept: the platform's retry
    # with the same key is still the same payment, and what it asked for stays with the row.
    stub, ingest = billing
    s = StripeScenario(tenant_id="t1", api_version="2025-03-31", amount=3999)
    s.pi = s.invoice_pi
    asked = await stub.CreatePendingTransaction(pending(key="sub-1", pi=s.pi, amount=4999))
    for event_type in ("invoice.paid", "payment_intent.succeeded", "invoice_payment.paid"):
        await ingest.execute([incoming("stripe", s.event(event_type))])
    [kept] = (await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t1"))).transactions
    assert kept.id != asked.transaction.id and kept.stripe_invoice_id == s.invoice
    again = await stub.CreatePendingTransaction(pending(key="sub-1", pi=s.pi, amount=4999))
    assert (again.created, again.transaction.id) == (False, kept.id)
    assert (again.transaction.requested_amount.amount_minor, again.transaction.amount.amount_minor) == (4999, 3999)


async def test_an_id_merged_twice_over_finds_the_row_kept_last(billing, db):
    stub, ingest = billing
    [result] = await ingest.execute([incoming("stripe", StripeScenario(tenant_id="t1").event("charge.succeeded"))])
    kept = result.transaction_ids[0]
    first, second = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
    await db.execute("INSERT INTO billing.transaction_merges (merged_id, kept_id) VALUES ($1, $2), ($2, $3)",
                     first, second, kept)
    got = await stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t1", id=first))
    assert got.transaction.id == kept


async def test_a_subscription_ending_at_its_period_end_shows_when_it_ends(billing):
    stub, ingest = billing
    s = StripeScenario(tenant_id="t_ending")
    [created] = await ingest.execute([incoming("stripe", s.event("customer.subscription.created"))])
    asked = s.event("customer.subscription.updated")
    ends = asked["data"]["object"]["current_period_end"]
    asked["data"]["object"].update(cancel_at_period_end=True, cancel_at=ends, canceled_at=s.clock.now)
    await ingest.execute([incoming("stripe", asked)])
    got = (await stub.GetSubscription(billing_pb2.GetSubscriptionRequest(
        tenant_id="t_ending", id=created.subscription_ids[0]))).subscription
    assert (got.status, got.cancel_at.seconds, got.HasField("cancelled_at")) == ("active", ends, False)
    assert (got.price.amount_minor, got.price.currency) == (s.amount, s.currency.upper())  # stored and served


async def test_a_subscription_whose_price_no_one_figure_states_serves_none(billing):
    stub, ingest = billing
    s = StripeScenario(tenant_id="t_discount")
    created = s.event("customer.subscription.created")
    created["data"]["object"]["discount"] = {"coupon": {"percent_off": 50}}
    [result] = await ingest.execute([incoming("stripe", created)])
    got = (await stub.GetSubscription(billing_pb2.GetSubscriptionRequest(
        tenant_id="t_discount", id=result.subscription_ids[0]))).subscription
    assert not got.HasField("price")


async def test_a_subscription_payment_serves_its_charge_receipt_and_its_invoice_page(billing):
    stub, ingest = billing
    s = StripeScenario(tenant_id="t_invoice")
    s.pi = s.invoice_pi
    # The invoice first: its page must not be taken for the receipt the charge brings later.
    for event_type in ("invoice.paid", "payment_intent.succeeded", "charge.succeeded"):
        await ingest.execute([incoming("stripe", s.event(event_type))])
    listed = await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t_invoice"))
    [txn] = listed.transactions
    assert (txn.status, txn.stripe_charge_id, txn.stripe_invoice_id) == ("succeeded", s.charge, s.invoice)
    assert txn.receipt_url == f"https://pay.stripe.com/receipts/payment/{s.charge}"
    assert txn.invoice_url == f"https://invoice.stripe.com/i/{s.invoice}"


async def test_a_payment_shows_each_refund_and_what_of_them_stands(billing):
    # Finance sees which refund failed and why, and amount_refunded counts only the ones that stand.
    stub, ingest = billing
    s = StripeScenario(tenant_id="t_refunds", amount=1000)
    raw = [s.event(t) for t in ("charge.succeeded", "charge.refunded", "refund.failed", "charge.refunded")]
    for event in raw:
        await ingest.execute([incoming("stripe", event)])
    [txn] = (await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t_refunds"))).transactions
    got = await stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t_refunds", id=txn.id))
    assert got.transaction == txn
    failed, standing = raw[2]["data"]["object"]["id"], raw[3]["data"]["object"]["refunds"]["data"][0]["id"]
    assert (txn.status, txn.amount_refunded) == ("partially_refunded", 200)
    assert sorted((r.id, r.amount.amount_minor, r.amount.currency, r.status, r.failure_reason)
                  for r in txn.refunds) == sorted([(failed, 200, "USD", "failed", "expired_or_canceled_card"),
                                                   (standing, 200, "USD", "succeeded", "")])


async def test_key_reused_for_another_payment_or_known_payment_is_already_exists(billing):
    stub, _ = billing
    await stub.CreatePendingTransaction(pending())
    await expect_code(stub.CreatePendingTransaction(pending(amount=100)), grpc.StatusCode.ALREADY_EXISTS)
    await expect_code(stub.CreatePendingTransaction(pending(key="k2")), grpc.StatusCode.ALREADY_EXISTS)


@pytest.mark.parametrize(
    ("request_", "field"),
    [(pending(key=""), "idempotency_key"), (pending(tenant=""), "tenant_id"),
     (pending(amount=0), "amount.amount_minor"),
     (pending(amount=5, provider=billing_pb2.PROVIDER_UNSPECIFIED), "provider"),
     (pending(pi=""), "stripe_payment_intent_id"), (pending(razorpay_order_id="order_1"), "razorpay_order_id"),
     (pending(pi="pi_" + "x" * 300), "stripe_payment_intent_id: must be at most 255"),
     (pending(user_id="u" * 300), "user_id: must be at most 255"),
     (pending(tenant="t" * 300), "tenant_id: must be at most 255"),
     (billing_pb2.CreatePendingTransactionRequest(idempotency_key="k", tenant_id="t", provider=STRIPE,
                                                  amount=billing_pb2.Money(amount_minor=5, currency="dollars"),
                                                  stripe_payment_intent_id="pi_x"), "amount.currency")],
)
async def test_invalid_pending_requests_name_the_field_and_store_nothing(billing, db, request_, field):
    stub, _ = billing
    details = await expect_code(stub.CreatePendingTransaction(request_), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(field)
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0


async def test_reads_never_cross_tenants(billing):
    stub, ingest = billing
    mine = await stub.CreatePendingTransaction(pending(key="a", tenant="t1", pi="pi_a"))
    await stub.CreatePendingTransaction(pending(key="b", tenant="t2", pi="pi_b"))
    sub_event = StripeScenario(tenant_id="t2").event("customer.subscription.created")
    [result] = await ingest.execute([incoming("stripe", sub_event)])
    await expect_code(stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t2", id=mine.transaction.id)),
                      grpc.StatusCode.NOT_FOUND)
    await expect_code(stub.GetSubscription(billing_pb2.GetSubscriptionRequest(tenant_id="t1",
                                                                              id=result.subscription_ids[0])),
                      grpc.StatusCode.NOT_FOUND)
    assert (await stub.GetSubscription(billing_pb2.GetSubscriptionRequest(
        tenant_id="t2", id=result.subscription_ids[0]))).subscription.status == "active"
    listed = await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t1"))
    assert [t.id for t in listed.transactions] == [mine.transaction.id]
    assert list((await stub.ListSubscriptions(billing_pb2.ListSubscriptionsRequest(tenant_id="t1"))).subscriptions) == []
    await expect_code(stub.ListTransactions(billing_pb2.ListTransactionsRequest()), grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda s: s.GetWebhookEvent(billing_pb2.GetWebhookEventRequest(provider=STRIPE, event_id="e" * 10_000)),
      "event_id"),
     (lambda s: s.ReplayWebhookEvents(billing_pb2.ReplayWebhookEventsRequest(provider=STRIPE, event_id="e" * 10_000)),
      "event_id"),
     (lambda s: s.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t1", id="i" * 10_000)), "id"),
     (lambda s: s.GetSubscription(billing_pb2.GetSubscriptionRequest(tenant_id="t" * 10_000, id="i")), "tenant_id"),
     (lambda s: s.IngestEvents(billing_pb2.IngestEventsRequest(events=[incoming_pb("evt_1", request_id="r" * 300)])),
      "events[0].request_id"),
     (lambda s: s.IngestEvents(billing_pb2.IngestEventsRequest(events=[
         evidenced(headers={"user-agent": "u" * 2_000})])), "events[0].headers"),
     (lambda s: s.IngestEvents(billing_pb2.IngestEventsRequest(events=[
         evidenced(headers={f"x-{i}": "v" for i in range(50)})])), "events[0].headers"),
     (lambda s: s.IngestEvents(billing_pb2.IngestEventsRequest(events=[
         evidenced(client_address="1" * 300)])), "events[0].client_address")],
)
async def test_overlong_ids_are_invalid_argument_with_a_short_message(billing, db, call, field):
    # Quoting a 10,000-character id back would not even fit in gRPC's trailers (RESOURCE_EXHAUSTED).
    stub, _ = billing
    details = await expect_code(call(stub), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(field) and len(details) < 100
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 0


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda s: s.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t1", status="succeded")), "status"),
     (lambda s: s.ListSubscriptions(billing_pb2.ListSubscriptionsRequest(tenant_id="t1", status="live")), "status"),
     (lambda s: s.ListWebhookEvents(billing_pb2.ListWebhookEventsRequest(status="duplicate")), "status"),
     (lambda s: s.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t1", provider=7)), "provider"),
     (lambda s: s.ListWebhookEvents(billing_pb2.ListWebhookEventsRequest(provider=7)), "provider"),
     (lambda s: s.ReplayWebhookEvents(billing_pb2.ReplayWebhookEventsRequest(
         provider=STRIPE, event_id="evt_1", all_failed=True)), "all_failed")],
)
async def test_filters_the_server_does_not_know_are_refused_not_read_as_nothing_or_everything(billing, call, field):
    # A misspelt status answered with an empty list, an unknown provider with every provider's rows.
    stub, _ = billing
    await stub.CreatePendingTransaction(pending())
    details = await expect_code(call(stub), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(field)


async def test_every_known_status_is_a_valid_filter(billing):
    stub, _ = billing
    for status in ("pending", "succeeded", "partially_refunded", "disputed"):
        await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t1", status=status))
    for status in ("active", "past_due", "cancelled"):
        await stub.ListSubscriptions(billing_pb2.ListSubscriptionsRequest(tenant_id="t1", status=status))
    for status in ("processed", "ignored", "failed", "dead_letter"):
        await stub.ListWebhookEvents(billing_pb2.ListWebhookEventsRequest(status=status))


async def test_list_filters_with_timestamps_protobuf_cannot_express_as_dates_name_the_field(billing):
    stub, _ = billing
    details = await expect_code(stub.ListWebhookEvents(billing_pb2.ListWebhookEventsRequest(
        received_before=Timestamp(seconds=-2**40))), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith("received_before")
    details = await expect_code(stub.ListTransactions(billing_pb2.ListTransactionsRequest(
        tenant_id="t1", created_after=Timestamp(seconds=2**40))), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith("created_after")


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda s: s.CreatePendingTransaction(pending(tenant="t\x001")), "tenant_id"),
     (lambda s: s.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t1", id="\x00")), "id"),
     (lambda s: s.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t1", status="paid\x00")), "status"),
     (lambda s: s.ListWebhookEvents(billing_pb2.ListWebhookEventsRequest(event_type="charge\x00")), "event_type"),
     (lambda s: s.IngestEvents(billing_pb2.IngestEventsRequest(events=[
         incoming_pb(f"evt_{i}", request_id="r\x00" if i == 1 else "r") for i in range(2)])), "events[1].request_id")],
)
async def test_strings_with_nul_characters_are_invalid_argument_naming_the_field_and_store_nothing(
        billing, db, call, field):
    stub, _ = billing
    details = await expect_code(call(stub), grpc.StatusCode.INVALID_ARGUMENT)
    assert details == f"{field}: must not contain NUL characters"
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 0
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0


@pytest.mark.parametrize("method", ["IngestEvents", "CreatePendingTransaction", "GetTransaction"])
async def test_bytes_that_are_not_the_request_message_are_invalid_argument_and_store_nothing(
        billing_channel, db, method):
    channel, _ = billing_channel
    call = channel.unary_unary(f"/boxcost.billing.v1.BillingService/{method}")  # bytes in, bytes out
    expected = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].methods_by_name[method].input_type
    for corrupt in (b"\x0a\xff\xff", b"\xff"):  # a length past the end; a field number of 0
        details = await expect_code(call(corrupt, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
        assert details == f"the request is not a valid {expected.full_name}"
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 0
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0


def incoming_pb(event_id: str, request_id: str) -> billing_pb2.WebhookEvent:
    return billing_pb2.WebhookEvent(provider=STRIPE, event_id=event_id, event_type="payment_intent.succeeded",
                                    payload=b"{}", received_at=Timestamp(seconds=1_773_480_600),
                                    request_id=request_id)


def evidenced(**evidence) -> billing_pb2.WebhookEvent:
    event = incoming_pb("evt_1", request_id="r")
    event.MergeFrom(billing_pb2.WebhookEvent(**evidence))
    return event


async def test_pagination_is_stable_while_rows_are_inserted(billing):
    stub, _ = billing
    for i in range(25):
        await stub.CreatePendingTransaction(pending(key=f"k{i}", pi=f"pi_{i}"))
    seen, token, pages = [], "", 0
    while True:
        page = await stub.ListTransactions(billing_pb2.ListTransactionsRequest(
            tenant_id="t1", page_size=10, page_token=token))
        seen += [t.id for t in page.transactions]
        pages += 1
        if pages == 1:  # new rows arrive between pages
            for i in range(5):
                await stub.CreatePendingTransaction(pending(key=f"late{i}", pi=f"pi_late_{i}"))
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 25 and pages == 3
    filtered = await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t1", status="succeeded"))
    assert list(filtered.transactions) == []
    await expect_code(stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="t1", page_token="zz")),
                      grpc.StatusCode.INVALID_ARGUMENT)


async def test_failed_event_is_listed_shown_and_processed_once_its_cause_is_fixed(billing, database_url):
    stub, ingest = billing
    event = incoming("stripe", StripeScenario(pi="pi_blocked").event("payment_intent.succeeded"))
    admin = await asyncpg.connect(database_url)
    try:
        # The cause: the database refuses this payment's row (standing in for an outage or a bad deploy).
        await _blocking_trigger(admin, "pi_blocked")
        [result] = await ingest.execute([event])
        assert result.outcome.value == "failed"
        failed = await stub.ListWebhookEvents(billing_pb2.ListWebhookEventsRequest(status="failed"))
        assert [e.event_id for e in failed.events] == [event.event_id]
        shown = await stub.GetWebhookEvent(billing_pb2.GetWebhookEventRequest(provider=STRIPE, event_id=event.event_id))
        assert shown.event.error and '"pi_blocked"' in shown.event.payload
        await admin.execute("DROP TRIGGER refuse ON billing.transactions")  # the cause is fixed
    finally:
        await admin.close()
    replayed = await stub.ReplayWebhookEvents(billing_pb2.ReplayWebhookEventsRequest(
        provider=STRIPE, event_id=event.event_id))
    assert [r.status for r in replayed.results] == [billing_pb2.INGEST_STATUS_PROCESSED]
    shown = await stub.GetWebhookEvent(billing_pb2.GetWebhookEventRequest(provider=STRIPE, event_id=event.event_id))
    assert (shown.event.status, shown.event.attempts) == ("processed", 2)
    await expect_code(stub.ReplayWebhookEvents(billing_pb2.ReplayWebhookEventsRequest(
        provider=STRIPE, event_id=event.event_id)), grpc.StatusCode.FAILED_PRECONDITION)
    all_failed = await stub.ReplayWebhookEvents(billing_pb2.ReplayWebhookEventsRequest(all_failed=True))
    assert list(all_failed.results) == []


async def test_calls_honour_the_callers_deadline(billing):
    stub, _ = billing
    await expect_code(stub.ListWebhookEvents(billing_pb2.ListWebhookEventsRequest(), timeout=0.000001),
                      grpc.StatusCode.DEADLINE_EXCEEDED)


async def _blocking_trigger(conn, pi: str) -> None:
    await conn.execute(f"""
        CREATE OR REPLACE FUNCTION billing.refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN IF NEW.stripe_payment_intent_id = '{pi}' THEN RAISE EXCEPTION 'refused'; END IF;
           RETURN NEW; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON billing.transactions FOR EACH ROW EXECUTE FUNCTION billing.refuse();
    """)


async def test_failed_events_retry_automatically_then_rest_in_the_dead_letter(database_url):
    pool = await create_pool(database_url, min_size=1, max_size=4)
    admin = await asyncpg.connect(database_url)
    try:
        applied: list[tuple[str, str]] = []  # what metrics hear of: every application, retries included
        ingest = IngestEvents(PostgresEventStore(pool, EventRetryPolicy(max_attempts=3, base_seconds=0.05)),
                              on_applied=lambda events, results: applied.extend(
                                  (e.event_id, r.outcome.value) for e, r in zip(events, results)))
        api = InternalApi.wired(PostgresBillingReader(pool), ingest)
        await _blocking_trigger(admin, "pi_stuck")
        stuck = incoming("stripe", StripeScenario(pi="pi_stuck").event("payment_intent.succeeded"))
        healed = incoming("stripe", StripeScenario(pi="pi_healed").event("payment_intent.succeeded"))
        await ingest.execute([stuck])
        deadline = time.monotonic() + 10
        while True:  # the retry worker's rounds, polled with a deadline
            await api.events.retry_due()
            row = await admin.fetchrow("SELECT status, attempts, next_retry_at FROM billing.webhook_events")
            if row["next_retry_at"] is None:
                break
            assert time.monotonic() < deadline, dict(row)
            await asyncio.sleep(0.02)
        assert (row["status"], row["attempts"]) == ("failed", 3)  # dead letter: failed, no next retry
        dead = await api.events.list_events(EventFilter(status="dead_letter"), 10, None)
        assert [e.event_id for e in dead.items] == [stuck.event_id] and dead.items[0].dead_letter
        # A failure whose cause goes away before the retries run out heals by itself.
        await admin.execute("DROP TRIGGER refuse ON billing.transactions")
        await _blocking_trigger(admin, "pi_healed")
        await ingest.execute([healed])
        await admin.execute("DROP TRIGGER refuse ON billing.transactions")
        deadline = time.monotonic() + 10
        while await admin.fetchval("SELECT status FROM billing.webhook_events WHERE event_id = $1",
                                   healed.event_id) != "processed":
            assert time.monotonic() < deadline
            await api.events.retry_due()
            await asyncio.sleep(0.02)
        assert await admin.fetchval("SELECT status FROM billing.transactions WHERE stripe_payment_intent_id = "
                                    "'pi_healed'") == "succeeded"
        assert [outcome for event_id, outcome in applied if event_id == stuck.event_id] == ["failed"] * 3
        assert [outcome for event_id, outcome in applied if event_id == healed.event_id][-1] == "processed"
    finally:
        await admin.close()
        await pool.close()


async def _retry_schedule(database_url, policy: EventRetryPolicy, pi: str) -> list[float | None]:
    """Seconds from each attempt of an event that keeps failing to its next retry, until none is due."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    admin = await asyncpg.connect(database_url)
    try:
        ingest = IngestEvents(PostgresEventStore(pool, policy))
        api = InternalApi.wired(PostgresBillingReader(pool), ingest)
        await _blocking_trigger(admin, pi)
        await ingest.execute([incoming("stripe", StripeScenario(pi=pi).event("payment_intent.succeeded"))])
        query = ("SELECT attempts, extract(epoch FROM next_retry_at - processed_at)::float8 AS gap "
                 "FROM billing.webhook_events WHERE event_type = 'payment_intent.succeeded' AND status = 'failed' "
                 "AND payload->'data'->'object'->>'id' = $1")
        row = await admin.fetchrow(query, pi)
        gaps = [row["gap"]]
        deadline = time.monotonic() + 10
        while gaps[-1] is not None:  # the retry worker's rounds, polled with a deadline
            assert time.monotonic() < deadline, gaps
            await api.events.retry_due()
            row = await admin.fetchrow(query, pi)
            if row["attempts"] > len(gaps):
                gaps.append(row["gap"])
            else:
                await asyncio.sleep(0.01)
        return gaps
    finally:
        await admin.execute("DROP TRIGGER IF EXISTS refuse ON billing.transactions")
        await admin.close()
        await pool.close()


async def test_retries_of_a_failed_event_back_off_doubling_up_to_the_cap_then_stop(database_url):
    policy = EventRetryPolicy(max_attempts=4, base_seconds=0.05, max_seconds=0.08)
    # After attempts 1, 2, 3: 0.05 s, then 0.1 and 0.2 capped at 0.08; after the 4th, the dead letter.
    assert await _retry_schedule(database_url, policy, "pi_backoff") == pytest.approx([0.05, 0.08, 0.08, None])


async def test_a_single_attempt_policy_puts_a_failed_event_in_the_dead_letter_at_once(database_url):
    policy = EventRetryPolicy(max_attempts=1, base_seconds=0.05)
    assert await _retry_schedule(database_url, policy, "pi_once") == [None]


@pytest.mark.parametrize(
    ("event", "field"),
    [(billing_pb2.WebhookEvent(event_id="e", event_type="t", payload=b"{}"), "events[0].provider"),
     (billing_pb2.WebhookEvent(provider=STRIPE, event_type="t", payload=b"{}"), "events[0].event_id"),
     (billing_pb2.WebhookEvent(provider=STRIPE, event_id="e", payload=b"{}"), "events[0].event_type"),
     (billing_pb2.WebhookEvent(provider=STRIPE, event_id="e", event_type="t", payload=b"{}"), "events[0].received_at"),
     (billing_pb2.WebhookEvent(provider=STRIPE, event_id="e", event_type="t", payload=b"{}",
                               received_at=Timestamp(seconds=2**40)), "events[0].received_at")],
)
async def test_ingest_refuses_malformed_events_naming_the_field_and_stores_nothing(billing, db, event, field):
    stub, _ = billing
    details = await expect_code(stub.IngestEvents(billing_pb2.IngestEventsRequest(events=[event])),
                                grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(field)
    await expect_code(stub.IngestEvents(billing_pb2.IngestEventsRequest()), grpc.StatusCode.INVALID_ARGUMENT)
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 0


async def test_rpc_codes_and_ingested_events_are_counted_for_prometheus(billing):
    stub, _ = billing

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    not_found = sample("grpc_server_handled_total", grpc_method="GetTransaction", grpc_code="NOT_FOUND")
    await expect_code(stub.GetTransaction(billing_pb2.GetTransactionRequest(tenant_id="t1", id="x")),
                      grpc.StatusCode.NOT_FOUND)

    async def counted() -> bool:  # the server counts once its handler has ended: maybe after the answer left
        return sample("grpc_server_handled_total", grpc_method="GetTransaction", grpc_code="NOT_FOUND") > not_found

    await wait_for(counted, timeout=5, what="the NOT_FOUND to be counted")
    assert sample("grpc_server_handled_total", grpc_method="GetTransaction", grpc_code="NOT_FOUND") == not_found + 1
    processed = sample("billing_webhook_events_total", provider="stripe", event_type="payment_intent.succeeded",
                       outcome="processed")
    other = sample("billing_webhook_events_total", provider="stripe", event_type="other", outcome="ignored")
    good = StripeScenario().event("payment_intent.succeeded")
    unknown = StripeScenario().event("payment_intent.succeeded")
    unknown["type"] = "customer.tax_id.created"
    now = billing_pb2.WebhookEvent().received_at
    now.GetCurrentTime()

    def wire(event: dict) -> billing_pb2.WebhookEvent:
        return billing_pb2.WebhookEvent(provider=STRIPE, event_id=event["id"], event_type=event["type"],
                                        payload=json.dumps(event).encode(), received_at=now)

    await stub.IngestEvents(billing_pb2.IngestEventsRequest(events=[wire(good), wire(unknown)]))
    assert sample("billing_webhook_events_total", provider="stripe", event_type="payment_intent.succeeded",
                  outcome="processed") == processed + 1
    assert sample("billing_webhook_events_total", provider="stripe", event_type="other",
                  outcome="ignored") == other + 1  # unknown types never become label values
    disputes = sample("billing_finance_attention_total", provider="stripe", reason="dispute_opened")
    s = StripeScenario()
    opened, closed = s.event("charge.dispute.created"), s.event("charge.dispute.closed")
    for dispute in (opened, closed, opened):  # the second delivery of the opening is a duplicate
        await stub.IngestEvents(billing_pb2.IngestEventsRequest(events=[wire(dispute)]))
    assert sample("billing_finance_attention_total", provider="stripe", reason="dispute_opened") == disputes + 1


async def test_emails_the_notifier_refused_are_listed_oldest_first_and_queued_again(billing_channel, db,
                                                                                    database_url):
    channel, _ = billing_channel
    stub = billing_pb2_grpc.BillingServiceStub(channel)
    for key, status, age, error in (("k-new", "dead", 1, "INVALID_ARGUMENT: content.kind: one email kind is required"),
                                    ("k-old", "dead", 5, "INVALID_ARGUMENT: content.to.email: not an address"),
                                    ("k-sent", "delivered", 9, None), ("k-waiting", "pending", 3, None)):
        await db.execute(
            "INSERT INTO billing.email_outbox (id, idempotency_key, kind, request, status, attempts, last_error, "
            "created_at) VALUES (gen_random_uuid(), $1, 'payment_received', '{}', $2, 1, $3, "
            "now() - make_interval(mins => $4))", key, status, error, age)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        assert (await PostgresBillingReader(pool).backlog())["outbox_refused"] == 2  # the gauge's count
    finally:
        await pool.close()

    listed = await stub.RetryRefusedEmails(billing_pb2.RetryRefusedEmailsRequest(dry_run=True))
    assert [(e.idempotency_key, e.refusal) for e in listed.emails] == [
        ("k-old", "INVALID_ARGUMENT: content.to.email: not an address"),
        ("k-new", "INVALID_ARGUMENT: content.kind: one email kind is required")]
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox WHERE status = 'dead'") == 2

    one = await stub.RetryRefusedEmails(billing_pb2.RetryRefusedEmailsRequest(limit=1))
    assert [e.idempotency_key for e in one.emails] == ["k-old"]
    rows = dict(await db.fetch("SELECT idempotency_key, status || '/' || attempts FROM billing.email_outbox"))
    assert rows == {"k-old": "pending/0", "k-new": "dead/1", "k-sent": "delivered/1", "k-waiting": "pending/1"}
    details = await expect_code(stub.RetryRefusedEmails(billing_pb2.RetryRefusedEmailsRequest(limit=1001)),
                                grpc.StatusCode.INVALID_ARGUMENT)
    assert details == "limit: must be between 0 and 1000"


async def test_replaying_all_failed_events_goes_on_while_a_full_share_makes_progress(
        billing_server, db, monkeypatch, capsys):
    addr, ingest = billing_server
    monkeypatch.setattr(replay, "MAX_REPLAYED", 2)  # a share of two, for three events
    monkeypatch.setattr(billing_cli, "MAX_REPLAYED", 2)
    monkeypatch.setenv("BILLING_ADDR", addr)
    await db.execute("""
        CREATE FUNCTION billing.refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON billing.transactions FOR EACH ROW EXECUTE FUNCTION billing.refuse();
    """)
    for n in range(3):
        event = StripeScenario(pi=f"pi_replay_{n}").event("payment_intent.succeeded")
        await ingest.execute([incoming("stripe", event)])

    # Still refused: the first share fails again, and going on would only replay it once more.
    assert await asyncio.to_thread(billing_cli.main, ["replay", "--all-failed"]) == 0
    assert capsys.readouterr().out.endswith(
        "2 replayed (the earliest received failed again; there are more behind them)\n")

    await db.execute("DROP TRIGGER refuse ON billing.transactions")
    assert await asyncio.to_thread(billing_cli.main, ["replay", "--all-failed"]) == 0
    assert capsys.readouterr().out.endswith("\n3 replayed\n")
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events WHERE status = 'processed'") == 3


async def test_payments_no_tenant_owns_are_listed_counted_and_given_their_tenant_by_operators(
        billing_server, db, database_url, monkeypatch, capsys):
    # A payment link or a dashboard invoice carries none of the platform's metadata: the money arrives,
    # and no tenant's list shows it.
    addr, ingest = billing_server
    monkeypatch.setenv("BILLING_ADDR", addr)
    owned = StripeScenario(pi="pi_owned").event("payment_intent.succeeded")
    stray = StripeScenario(pi="pi_stray").event("payment_intent.succeeded")
    stray["data"]["object"]["metadata"] = {}
    unpaid = StripeScenario(pi="pi_unpaid").event("payment_intent.payment_failed")
    unpaid["data"]["object"]["metadata"] = {}
    await ingest.execute([incoming("stripe", e) for e in (owned, stray, unpaid)])

    assert await asyncio.to_thread(billing_cli.main, ["unattributed"]) == 0
    out = capsys.readouterr().out
    assert "pi_stray" in out and "pi_owned" not in out and "pi_unpaid" not in out
    assert out.endswith("\n1 without a tenant\n")

    reader = PostgresBillingReader(db_pool := await create_pool(database_url, min_size=1, max_size=2))
    try:
        assert (await reader.backlog())["unattributed_payments"] == 1
    finally:
        await db_pool.close()

    channel = grpc.aio.insecure_channel(addr)
    try:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        details = await expect_code(stub.ListUnattributedTransactions(
            billing_pb2.ListUnattributedTransactionsRequest(limit=1001)), grpc.StatusCode.INVALID_ARGUMENT)
        assert details == "limit: must be between 0 and 1000"

        # Finance finds out whose it is: the payment joins that tenant's list, and leaves this one.
        stray_id = await db.fetchval("SELECT id::text FROM billing.transactions "
                                     "WHERE stripe_payment_intent_id = 'pi_stray'")
        assert await asyncio.to_thread(billing_cli.main, ["assign-tenant", stray_id, "acme", "--user", "u7"]) == 0
        assert '"tenant_id": "acme"' in capsys.readouterr().out
        listed = await stub.ListTransactions(billing_pb2.ListTransactionsRequest(tenant_id="acme"))
        assert [(t.id, t.user_id) for t in listed.transactions] == [(stray_id, "u7")]
        assert list((await stub.ListUnattributedTransactions(
            billing_pb2.ListUnattributedTransactionsRequest())).transactions) == []
        # Repeating the call is harmless; another tenant never takes it over.
        again = await stub.AssignTransactionTenant(billing_pb2.AssignTransactionTenantRequest(
            transaction_id=stray_id, tenant_id="acme"))
        assert again.transaction.user_id == "u7"
        for request, code in (
                (dict(transaction_id=stray_id, tenant_id="globex"), grpc.StatusCode.FAILED_PRECONDITION),
                (dict(transaction_id="00000000-0000-0000-0000-000000000000", tenant_id="acme"),
                 grpc.StatusCode.NOT_FOUND),
                (dict(transaction_id=stray_id, tenant_id=""), grpc.StatusCode.INVALID_ARGUMENT)):
            await expect_code(stub.AssignTransactionTenant(billing_pb2.AssignTransactionTenantRequest(**request)),
                              code)
        assert await db.fetchval("SELECT tenant_id FROM billing.transactions WHERE id = $1::uuid", stray_id) == "acme"
    finally:
        await channel.close()


async def test_a_subscription_no_tenant_owns_is_given_its_tenant_with_its_payments(
        billing_server, db, monkeypatch, capsys):
    addr, ingest = billing_server
    monkeypatch.setenv("BILLING_ADDR", addr)
    s = StripeScenario(sub="sub_dashboard")
    s.pi = s.invoice_pi
    created, paid = s.event("customer.subscription.created"), s.event("invoice.paid")
    created["data"]["object"]["metadata"] = {}
    paid["data"]["object"]["subscription_details"]["metadata"] = {}
    owned = StripeScenario(sub="sub_owned").event("customer.subscription.created")
    await ingest.execute([incoming("stripe", e) for e in (created, paid, owned)])

    # Operators find it by its subscription, also before any payment (a trial's) lists it.
    assert await asyncio.to_thread(billing_cli.main, ["unattributed-subscriptions"]) == 0
    out = capsys.readouterr().out
    assert "sub_dashboard" in out and "sub_owned" not in out and out.endswith("\n1 without a tenant\n")

    assert await asyncio.to_thread(billing_cli.main, [
        "assign-subscription-tenant", "stripe", "sub_dashboard", "acme", "--user", "u7"]) == 0
    assert '"tenant_id": "acme"' in capsys.readouterr().out
    assert await db.fetchval("SELECT count(*) FROM billing.transactions WHERE tenant_id = 'acme' "
                             "AND stripe_subscription_id = 'sub_dashboard'") == 1
    channel = grpc.aio.insecure_channel(addr)
    try:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        assert list((await stub.ListUnattributedTransactions(
            billing_pb2.ListUnattributedTransactionsRequest())).transactions) == []
        assert list((await stub.ListUnattributedSubscriptions(
            billing_pb2.ListUnattributedSubscriptionsRequest())).subscriptions) == []
        await expect_code(stub.ListUnattributedSubscriptions(billing_pb2.ListUnattributedSubscriptionsRequest(
            limit=1001)), grpc.StatusCode.INVALID_ARGUMENT)
        for request, code in (
                (dict(provider=STRIPE, subscription_id="sub_dashboard", tenant_id="globex"),
                 grpc.StatusCode.FAILED_PRECONDITION),
                (dict(provider=STRIPE, subscription_id="sub_unknown", tenant_id="acme"), grpc.StatusCode.NOT_FOUND),
                (dict(subscription_id="sub_dashboard", tenant_id="acme"), grpc.StatusCode.INVALID_ARGUMENT)):
            await expect_code(stub.AssignSubscriptionTenant(billing_pb2.AssignSubscriptionTenantRequest(**request)),
                              code)
    finally:
        await channel.close()


async def test_two_replicas_retry_workers_take_each_due_event_once(database_url):
    admin = await asyncpg.connect(database_url)
    pools = [await create_pool(database_url, min_size=1, max_size=4) for _ in range(2)]
    try:
        policy = EventRetryPolicy(max_attempts=8, base_seconds=3600)  # one retry per round, then an hour's wait
        replicas = [InternalApi.wired(PostgresBillingReader(pool), IngestEvents(PostgresEventStore(pool, policy)))
                    for pool in pools]
        await _blocking_trigger(admin, "pi_stuck")
        failing = [incoming("stripe", StripeScenario(pi="pi_stuck").event("payment_intent.succeeded"))
                   for _ in range(20)]
        await IngestEvents(PostgresEventStore(pools[0], policy)).execute(failing)
        await admin.execute("UPDATE billing.webhook_events SET next_retry_at = now()")  # every one due now
        taken = await asyncio.gather(*(replica.events.retry_due() for replica in replicas))
        assert sum(taken) == len(failing)
        attempts = await admin.fetch("SELECT attempts FROM billing.webhook_events")
        assert [r["attempts"] for r in attempts] == [2] * len(failing)  # the first try, and one retry each
    finally:
        for pool in pools:
            await pool.close()
        await admin.close()


def _selection_request(reason="the payment_intent handler shipped", dry_run=False, **selection):
    return billing_pb2.ReplayWebhookEventsRequest(selection=billing_pb2.EventSelection(**selection),
                                                  dry_run=dry_run, reason=reason)


async def test_a_replay_by_selection_applies_events_a_new_handler_takes_as_fresh_delivery_would_once(
        billing, db, monkeypatch):
    from billing.domain.providers import stripe_events

    stub, ingest = billing
    acme, globex = StripeScenario(tenant_id="acme"), StripeScenario(tenant_id="globex")
    # Delivered while billing had no handler for the type: kept as ignored.
    with monkeypatch.context() as before_the_fix:
        before_the_fix.delitem(stripe_events.HANDLERS, "payment_intent.succeeded")
        for scenario in (acme, globex):
            [result] = await ingest.execute([incoming("stripe", scenario.event("payment_intent.succeeded"))])
            assert result.outcome.value == "ignored"
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0
    chosen = dict(provider=STRIPE, event_type="payment_intent.succeeded", statuses=["ignored"], tenant_id="")

    # Refused without a reason; a dry run says what would change and changes nothing.
    await expect_code(stub.ReplayWebhookEvents(_selection_request(reason=" ", **chosen)),
                      grpc.StatusCode.INVALID_ARGUMENT)
    dry = await stub.ReplayWebhookEvents(_selection_request(dry_run=True, **chosen))
    assert [r.status for r in dry.results] == [billing_pb2.INGEST_STATUS_PROCESSED] * 2
    assert len(dry.changed_transaction_ids) == 2 and list(dry.email_kinds) == ["payment_received"] * 2
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == 0

    # The replay applies them as their fresh delivery would: one payment and one receipt each.
    done = await stub.ReplayWebhookEvents(_selection_request(**chosen))
    assert [r.status for r in done.results] == [billing_pb2.INGEST_STATUS_PROCESSED] * 2
    rows = await db.fetch("SELECT tenant_id, status FROM billing.transactions ORDER BY tenant_id")
    assert [(r["tenant_id"], r["status"]) for r in rows] == [("acme", "succeeded"), ("globex", "succeeded")]
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox WHERE kind = 'payment_received'") == 2

    # Again, of any status, or one tenant's only: nothing is applied twice.
    again = await stub.ReplayWebhookEvents(_selection_request(
        provider=STRIPE, event_type="payment_intent.succeeded", tenant_id="acme"))
    assert len(again.results) == 1 and again.results[0].status == billing_pb2.INGEST_STATUS_PROCESSED
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 2
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == 2

    # Each replay is recorded: who asked (plaintext here), why, what was chosen, what came of it.
    audit = await db.fetch("SELECT requested_by, reason, dry_run, events, selection FROM billing.event_replays "
                           "ORDER BY requested_at")
    assert [(a["dry_run"], a["events"]) for a in audit] == [(True, 2), (False, 2), (False, 1)]
    assert all(a["reason"] == "the payment_intent handler shipped" and "plaintext" in a["requested_by"]
               for a in audit)
    assert json.loads(audit[2]["selection"])["tenant_id"] == "acme"
