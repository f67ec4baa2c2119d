"""Billing's ingest rules on an in-memory store: exactly once, order-independent, failures contained."""

from __future__ import annotations

import itertools
import random

import pytest
from billing.domain.ingest import IngestEvents, Outcome
from billing.domain.model import SubStatus, TxnStatus
from trigger.events import RazorpayScenario, StripeScenario
from trigger.flows import FLOWS

from tests.fakes import InMemoryEventStore
from tests.support import incoming, state


def flow_events(name: str, tenant: str = "t1", user: str = "u1"):
    flow = FLOWS[name]
    return [incoming(flow.provider, e) for e in flow.build(tenant, user)]


async def ingest_one_by_one(events):
    store = InMemoryEventStore()
    use_case = IngestEvents(store)
    for event in events:
        await use_case.execute([event])
    return store


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


async def test_razorpay_payment_failed_then_captured_on_one_order_ends_captured_and_refunded_in_part():
    store = await ingest_one_by_one(flow_events("razorpay-payment"))
    [txn] = store.transactions.values()
    assert txn.status is TxnStatus.PARTIALLY_REFUNDED
    assert (txn.amount, txn.currency, txn.amount_refunded) == (125000, "INR", 31250)
    assert txn.failure_code == "BAD_REQUEST_ERROR"  # the failed attempt stays visible
    assert txn.razorpay_payment_id and txn.razorpay_order_id


async def test_razorpay_subscription_lifecycle_ends_cancelled_with_its_charge_recorded():
    store = await ingest_one_by_one(flow_events("razorpay-subscription"))
    [sub] = store.subscriptions.values()
    assert (sub.status, sub.provider_status, sub.plan) == (SubStatus.CANCELLED, "cancelled", "plan_pro_monthly")
    [txn] = store.transactions.values()
    assert (txn.status, txn.tenant_id, txn.razorpay_subscription_id) == (
        TxnStatus.SUCCEEDED, "t1", sub.razorpay_subscription_id)


@pytest.mark.parametrize("name", sorted(FLOWS))
async def test_every_arrival_order_gives_the_same_rows(name):
    events = flow_events(name)
    expected = await ingest_one_by_one(events)
    orders = list(itertools.permutations(events))
    random.Random(7).shuffle(orders)
    for order in orders[:150]:
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


async def test_late_payment_failure_never_undoes_a_success():
    s = StripeScenario()
    success, failure = s.event("payment_intent.succeeded"), s.event("payment_intent.payment_failed")
    store = await ingest_one_by_one([incoming("stripe", success), incoming("stripe", failure)])
    [txn] = store.transactions.values()
    assert txn.status is TxnStatus.SUCCEEDED
    assert txn.failure_code == "insufficient_funds"  # recorded, but not the status


async def test_retry_after_failure_shows_the_later_attempt():
    s = StripeScenario()
    failed, retrying = s.event("payment_intent.payment_failed"), s.event("payment_intent.requires_action")
    for order in ([failed, retrying], [retrying, failed]):
        store = await ingest_one_by_one([incoming("stripe", e) for e in order])
        [txn] = store.transactions.values()
        assert txn.status is TxnStatus.REQUIRES_ACTION


async def test_stale_subscription_update_never_overwrites_a_newer_one():
    s = StripeScenario()
    active = s.event("customer.subscription.updated")
    past_due = s.past_due()
    store = await ingest_one_by_one([incoming("stripe", past_due), incoming("stripe", active)])
    [sub] = store.subscriptions.values()
    assert sub.status is SubStatus.PAST_DUE


async def test_full_refund_after_partial_in_any_order_is_refunded():
    s = StripeScenario(amount=1000)
    refunds = [s.event("charge.refunded") for _ in range(5)]  # 20% each, cumulative
    for order in (refunds, list(reversed(refunds))):
        store = await ingest_one_by_one([incoming("stripe", e) for e in order])
        [txn] = store.transactions.values()
        assert (txn.status, txn.amount_refunded) == (TxnStatus.REFUNDED, 1000)


async def test_refund_and_dispute_without_metadata_take_the_payment_owner():
    s = StripeScenario(tenant_id="42", user_id="7")
    refund = s.event("charge.refunded")
    refund["data"]["object"]["metadata"] = {}
    store = await ingest_one_by_one([incoming("stripe", refund), incoming("stripe", s.event("charge.dispute.created")),
                                     incoming("stripe", s.event("payment_intent.succeeded"))])
    [txn] = store.transactions.values()
    assert (txn.tenant_id, txn.user_id) == ("42", "7")


async def test_subscription_invoice_before_subscription_gets_its_owner_later():
    s = StripeScenario(tenant_id="acme")
    invoice = s.event("invoice.paid")
    invoice["data"]["object"]["subscription_details"] = {"metadata": {}}
    store = await ingest_one_by_one([incoming("stripe", invoice), incoming("stripe", s.event("customer.subscription.created"))])
    [txn] = store.transactions.values()
    assert txn.tenant_id == "acme"


async def test_razorpay_empty_notes_arrive_as_list_and_mean_no_owner():
    r = RazorpayScenario()
    event = r.event("payment.captured")
    event["payload"]["payment"]["entity"]["notes"] = []
    store = await ingest_one_by_one([incoming("razorpay", event)])
    [txn] = store.transactions.values()
    assert txn.tenant_id is None and txn.status is TxnStatus.SUCCEEDED


async def test_unknown_event_type_is_kept_as_ignored():
    event = StripeScenario().event("payment_intent.succeeded")
    event["type"] = "customer.created"
    store = InMemoryEventStore()
    [result] = await IngestEvents(store).execute([incoming("stripe", event)])
    assert result.outcome is Outcome.IGNORED
    assert not store.transactions and len(store.events) == 1


async def test_invalid_event_is_kept_failed_without_touching_its_neighbours():
    s = StripeScenario()
    good = incoming("stripe", s.event("payment_intent.succeeded"))
    bad_event = StripeScenario().event("payment_intent.succeeded")
    bad_event["data"]["object"]["amount"] = "49.99"
    bad = incoming("stripe", bad_event)
    store = InMemoryEventStore()
    results = await IngestEvents(store).execute([bad, good])
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.PROCESSED]
    assert "amount" in results[0].error
    assert store.events[bad.key].status is Outcome.FAILED
    assert [t.stripe_payment_intent_id for t in store.transactions.values()] == [s.pi]


@pytest.mark.parametrize(("provider", "event_type", "entity"), [
    ("stripe", "payment_intent.succeeded", lambda e: e["data"]["object"]),
    ("stripe", "charge.refunded", lambda e: e["data"]["object"]),
    ("stripe", "invoice.paid", lambda e: e["data"]["object"]),
    ("razorpay", "payment.captured", lambda e: e["payload"]["payment"]["entity"]),
])
async def test_an_amount_without_its_currency_is_kept_failed_not_recorded_as_money(provider, event_type, entity):
    scenario = StripeScenario() if provider == "stripe" else RazorpayScenario()
    event = scenario.event(event_type)
    del entity(event)["currency"]
    store = InMemoryEventStore()
    [result] = await IngestEvents(store).execute([incoming(provider, event)])
    assert result.outcome is Outcome.FAILED and "currency is required" in result.error
    assert not store.transactions


async def test_failed_event_is_retried_on_redelivery():
    event = StripeScenario().event("payment_intent.succeeded")
    event["data"]["object"]["currency"] = "dollars"
    broken = incoming("stripe", event)
    store = InMemoryEventStore()
    use_case = IngestEvents(store)
    [first] = await use_case.execute([broken])
    [second] = await use_case.execute([broken])
    assert first.outcome is second.outcome is Outcome.FAILED
    assert store.attempts[broken.key] == 2


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
