"""Billing's rules over whole flows, in every arrival order, repeated and batched: the same rows and emails."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.model import SubStatus, TxnStatus
from trigger.events import StripeScenario
from trigger.flows import FLOWS

from tests.fakes import InMemoryEventStore
from tests.support import assert_same_emails, emails, incoming, provider_event_sets, sampled_orders, state
from tests.unit.rules_support import flow_events, ingest_one_by_one


async def test_stripe_payment_flow_ends_disputed_with_partial_refund_recorded():
    store = await ingest_one_by_one(flow_events("stripe-payment"))
    [txn] = store.transactions.values()
    assert (txn.status, txn.tenant_id, txn.user_id) == (TxnStatus.DISPUTED, "t1", "u1")
    assert (txn.amount, txn.currency, txn.amount_refunded) == (4999, "USD", 999)
    assert txn.paid_at is not None and txn.refunded_at is not None and txn.disputed_at is not None
    assert txn.receipt_url and txn.stripe_charge_id and txn.stripe_payment_intent_id


async def test_stripe_subscription_flow_ends_cancelled_with_one_paid_and_one_failed_invoice():
    store = await ingest_one_by_one(flow_events("stripe-subscription"))
    [sub] = store.subscriptions.values()
    assert (sub.status, sub.tenant_id, sub.plan) == (SubStatus.CANCELLED, "t1", "pro_monthly")
    assert sub.cancelled_at is not None
    statuses = sorted(t.status.value for t in store.transactions.values())
    assert statuses == ["failed", "succeeded"]
    assert all(t.tenant_id == "t1" and t.stripe_subscription_id == sub.stripe_subscription_id
               for t in store.transactions.values())


async def test_razorpay_subscription_lifecycle_ends_cancelled_with_its_charge_recorded():
    store = await ingest_one_by_one(flow_events("razorpay-subscription"))
    [sub] = store.subscriptions.values()
    assert (sub.status, sub.provider_status, sub.plan) == (SubStatus.CANCELLED, "cancelled", "plan_pro_monthly")
    # The renewal charged, and the next one, which failed and halted the subscription: both recorded.
    charged, failed = sorted(store.transactions.values(), key=lambda t: t.status.value, reverse=True)
    assert (charged.status, charged.tenant_id, charged.razorpay_subscription_id) == (
        TxnStatus.SUCCEEDED, "t1", sub.razorpay_subscription_id)
    assert (failed.status, failed.tenant_id, failed.razorpay_subscription_id) == (
        TxnStatus.FAILED, "t1", sub.razorpay_subscription_id)


async def test_events_of_one_batch_name_the_row_kept_when_a_later_one_merges_theirs():
    events = [e for e in flow_events("stripe-subscription-2025-03-31") if e.event_type in (
        "payment_intent.succeeded", "invoice.paid", "invoice_payment.paid")]
    store = InMemoryEventStore()
    results = await IngestEvents(store).execute(events)
    [txn] = store.transactions.values()
    assert [r.transaction_ids for r in results] == [(txn.id,)] * 3
    assert {record.transaction_ids for record in store.events.values()} == {(txn.id,)}


@pytest.mark.parametrize("name", sorted(FLOWS))
async def test_every_arrival_order_gives_the_same_rows(name):
    events = flow_events(name)
    expected = await ingest_one_by_one(events)
    for order in sampled_orders(events, 150, seed=7):
        got = await ingest_one_by_one(order)
        assert state(got.transactions.values()) == state(expected.transactions.values())
        assert state(got.subscriptions.values()) == state(expected.subscriptions.values())


@pytest.mark.parametrize("name", sorted(FLOWS))
async def test_one_batch_in_any_order_equals_one_by_one(name):
    events = flow_events(name)
    expected = await ingest_one_by_one(events)
    for seed in range(10):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        store = InMemoryEventStore()
        await IngestEvents(store).execute(shuffled)
        assert state(store.transactions.values()) == state(expected.transactions.values())
        assert state(store.subscriptions.values()) == state(expected.subscriptions.values())


async def test_duplicate_delivery_applies_once():
    events = flow_events("stripe-payment")
    store = InMemoryEventStore()
    use_case = IngestEvents(store)
    first = await use_case.execute(events)
    again = await use_case.execute(events + events)
    assert {r.outcome for r in first} == {Outcome.PROCESSED}
    assert {r.outcome for r in again} == {Outcome.DUPLICATE}
    assert set(store.attempts.values()) == {1}


async def test_same_event_twice_in_one_batch_is_applied_once():
    event = incoming("stripe", StripeScenario().event("payment_intent.succeeded"))
    store = InMemoryEventStore()
    results = await IngestEvents(store).execute([event, event])
    assert [r.outcome for r in results] == [Outcome.PROCESSED, Outcome.DUPLICATE]
    assert len(store.transactions) == 1


async def test_batch_locks_events_and_entities_in_sorted_order():
    s = StripeScenario()
    events = [incoming("stripe", s.event("charge.succeeded")), incoming("stripe", s.event("customer.subscription.created"))]
    store = InMemoryEventStore()
    captured = {}
    original = store.unit

    def spy(lock_keys):
        cm = original(lock_keys)

        class Wrapper:
            async def __aenter__(self):
                unit = await cm.__aenter__()
                captured["unit"] = unit
                return unit

            async def __aexit__(self, *exc):
                return await cm.__aexit__(*exc)
        return Wrapper()

    store.unit = spy
    await IngestEvents(store).execute(events)
    keys = captured["unit"].locked
    assert keys == sorted(keys)
    assert f"stripe:pi:{s.pi}" in keys and f"stripe:sub:{s.sub}" in keys
    assert all(f"event:stripe:{e.event_id}" in keys for e in events)


# The same examples every run, so that the suite's verdict never depends on luck; 6,000 random ones passed
# when this was written (raise max_examples and drop derandomize to search further).
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(events=provider_event_sets(), data=st.data())
def test_any_set_of_events_ends_in_the_same_rows_whatever_the_order_batches_and_repeats(events, data):
    # Beyond the flows above: whatever a provider sends of one customer's payments, delivered shuffled,
    # some twice, in two batches, ends as the same rows and the same emails as delivered once each in the
    # order made.
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=3))
    arrival = data.draw(st.permutations(events + repeats))
    cut = data.draw(st.integers(0, len(arrival)))

    async def deliver():
        store = InMemoryEventStore()
        for batch in (arrival[:cut], arrival[cut:]):
            if batch:
                await IngestEvents(store).execute(batch)
        return await ingest_one_by_one(events), store

    expected, got = asyncio.run(deliver())
    assert state(got.transactions.values()) == state(expected.transactions.values())
    assert state(got.subscriptions.values()) == state(expected.subscriptions.values())
    assert_same_emails(emails(got.outbox.values()), emails(expected.outbox.values()), news_as_learned=True)
