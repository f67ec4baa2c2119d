"""Billing's ingest rules on an in-memory store: exactly once, order-independent, failures contained."""

from __future__ import annotations

import asyncio
import copy
import itertools
import random
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.model import Provider, SubStatus, Transaction, TxnStatus
from trigger.events import RazorpayScenario, StripeScenario
from trigger.flows import FLOWS

from tests.fakes import InMemoryEventStore
from tests.support import assert_same_emails, emails, incoming, provider_event_sets, sampled_orders, state


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


async def test_a_basil_subscription_payment_is_one_row_once_invoice_payment_paid_links_its_parts():
    # API versions from 2025-03-31: invoice.paid names no payment intent, the intent and its charge
    # name no invoice and carry no metadata. Until invoice_payment.paid links them they are two rows;
    # then one, with the tenant, the intent, the charge and both links, whatever the order.
    events = flow_events("stripe-subscription-basil")
    payment = [e for e in events if e.event_type in (
        "invoice.paid", "payment_intent.succeeded", "charge.succeeded", "invoice_payment.paid")]
    store = await same_rows_in_every_order(payment)
    [txn] = store.transactions.values()
    assert (txn.status, txn.tenant_id, txn.user_id, txn.amount) == (TxnStatus.SUCCEEDED, "t1", "u1", 4999)
    assert txn.stripe_payment_intent_id and txn.stripe_invoice_id and txn.stripe_charge_id
    assert txn.receipt_url.endswith(txn.stripe_charge_id) and txn.invoice_url.endswith(txn.stripe_invoice_id)
    unlinked = await ingest_one_by_one([e for e in payment if e.event_type != "invoice_payment.paid"])
    assert sorted(t.tenant_id or "" for t in unlinked.transactions.values()) == ["", "t1"]


async def test_events_of_one_batch_name_the_row_kept_when_a_later_one_merges_theirs():
    events = [e for e in flow_events("stripe-subscription-basil") if e.event_type in (
        "payment_intent.succeeded", "invoice.paid", "invoice_payment.paid")]
    store = InMemoryEventStore()
    results = await IngestEvents(store).execute(events)
    [txn] = store.transactions.values()
    assert [r.transaction_ids for r in results] == [(txn.id,)] * 3
    assert {record.transaction_ids for record in store.events.values()} == {(txn.id,)}


async def test_a_razorpay_refund_told_without_its_payment_is_judged_by_the_amount_once_known():
    # refund.processed without the payment entity names only the payment id and not the amount: the
    # row it makes is merged into the order's when an event names both, and the refund then judged
    # partial, whatever the order.
    r = RazorpayScenario()
    failed = r.event("payment.failed")
    refund = r.event("refund.processed")
    del refund["payload"]["payment"]
    captured = r.event("payment.captured")
    store = await same_rows_in_every_order([incoming("razorpay", e) for e in (failed, refund, captured)])
    [txn] = store.transactions.values()
    assert (txn.status, txn.amount, txn.amount_refunded) == (TxnStatus.PARTIALLY_REFUNDED, 125000, 31250)
    assert (txn.razorpay_order_id, txn.razorpay_payment_id) == (r.order, r.payment)


async def test_a_closed_dispute_shows_its_outcome_whatever_the_order():
    # A dispute is the highest tier; within it the latest report wins, so the outcome of
    # charge.dispute.closed (won, lost) replaces "needs_response" and is never undone by a late opening.
    s = StripeScenario()
    raw = [s.event(t) for t in ("charge.succeeded", "charge.dispute.created", "charge.dispute.closed")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status) == (TxnStatus.DISPUTED, "dispute_won")
    assert txn.disputed_at == datetime.fromtimestamp(raw[1]["data"]["object"]["created"], UTC)


async def test_a_dispute_in_progress_shows_its_latest_state_and_the_outcome_ends_it():
    # Between opening and outcome Stripe tells of evidence sent (updated: under_review) and of the money
    # taken (funds_withdrawn); finance sees where the dispute stands, whatever the order.
    s = StripeScenario()
    raw = [s.event(t) for t in ("charge.succeeded", "charge.dispute.created", "charge.dispute.funds_withdrawn",
                                "charge.dispute.updated")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status) == (TxnStatus.DISPUTED, "dispute_under_review")
    raw.append(s.event("charge.dispute.closed"))
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status) == (TxnStatus.DISPUTED, "dispute_won")


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


async def same_rows_in_every_order(events):
    """The store after `events` one by one, having checked that every other order ends in the same rows."""
    expected = await ingest_one_by_one(events)
    for order in itertools.permutations(events):
        got = await ingest_one_by_one(order)
        arrival = [e.event_type for e in order]
        assert state(got.transactions.values()) == state(expected.transactions.values()), arrival
        assert state(got.subscriptions.values()) == state(expected.subscriptions.values()), arrival
    return expected


async def test_a_subscription_payment_told_by_four_events_is_one_row_whatever_their_order():
    # Stripe tells of one paid invoice four times, a second or so apart, in any order. They agree on the
    # status, so the earliest report dates it; the receipt is the charge's, the invoice page its own.
    s = StripeScenario()
    s.pi = s.invoice_pi
    raw = [s.event(t) for t in ("charge.succeeded", "payment_intent.succeeded", "invoice.payment_succeeded",
                                "invoice.paid")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status) == (TxnStatus.SUCCEEDED, "succeeded")
    assert txn.status_at == datetime.fromtimestamp(raw[0]["created"], UTC)
    assert (txn.stripe_charge_id, txn.stripe_invoice_id) == (s.charge, s.invoice)
    assert txn.receipt_url == f"https://pay.stripe.com/receipts/payment/{s.charge}"
    assert txn.invoice_url == f"https://invoice.stripe.com/i/{s.invoice}"


async def test_a_payment_declined_then_paid_names_the_charge_that_paid_whatever_the_order():
    s = StripeScenario()
    paying = s.charge
    declined = [s.declined("charge.failed"), s.declined("payment_intent.payment_failed")]
    paid = [s.event("charge.succeeded"), s.event("payment_intent.succeeded")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in declined + paid])
    [txn] = store.transactions.values()
    assert (txn.status, txn.stripe_charge_id) == (TxnStatus.SUCCEEDED, paying)
    assert txn.receipt_url == f"https://pay.stripe.com/receipts/payment/{paying}"
    assert txn.failure_code == "insufficient_funds"  # the latest decline stays visible


async def test_an_invoice_paid_after_a_declined_charge_never_names_the_declined_charge():
    # Paid as far as the invoice tells, with no charge.succeeded subscribed: the row names no charge
    # rather than the one that was declined; once the paying charge is told, it is that one.
    s = StripeScenario()
    s.pi = s.invoice_pi
    paying = s.charge
    declined = s.declined("charge.failed")
    invoice_paid, charge_paid = s.event("invoice.paid"), s.event("charge.succeeded")
    store = await same_rows_in_every_order([incoming("stripe", e) for e in (declined, invoice_paid)])
    [txn] = store.transactions.values()
    assert (txn.status, txn.stripe_charge_id, txn.receipt_url) == (TxnStatus.SUCCEEDED, None, None)
    assert txn.failure_code == "card_declined"
    store = await same_rows_in_every_order([incoming("stripe", e) for e in (declined, invoice_paid, charge_paid)])
    [txn] = store.transactions.values()
    assert (txn.stripe_charge_id, txn.receipt_url) == (paying, f"https://pay.stripe.com/receipts/payment/{paying}")


async def test_the_payment_method_is_the_charges_not_the_first_type_the_intent_allowed():
    s = StripeScenario()
    succeeded = s.event("payment_intent.succeeded")
    succeeded["data"]["object"]["payment_method_types"] = ["card", "link"]
    charge = s.event("charge.succeeded")
    charge["data"]["object"]["payment_method_details"] = {"type": "link", "link": {}}
    store = await same_rows_in_every_order([incoming("stripe", succeeded), incoming("stripe", charge)])
    assert [t.payment_method for t in store.transactions.values()] == ["link"]
    only_card = StripeScenario().event("payment_intent.succeeded")  # one type allowed: that is the method
    store = await ingest_one_by_one([incoming("stripe", only_card)])
    assert [t.payment_method for t in store.transactions.values()] == ["card"]


async def test_a_checkout_that_arrives_before_its_subscription_does_not_hold_it_pending():
    s = StripeScenario()
    events = [incoming("stripe", s.event("customer.subscription.created")),
              incoming("stripe", s.event("checkout.session.completed"))]  # made a second later
    store = await same_rows_in_every_order(events)
    [sub] = store.subscriptions.values()
    assert (sub.status, sub.tenant_id, sub.plan) == (SubStatus.ACTIVE, "tenant_1", "pro_monthly")
    assert sub.current_period_end is not None


async def test_a_subscription_known_only_from_checkouts_is_dated_by_the_earliest():
    s = StripeScenario()
    raw = [s.event("checkout.session.completed"), s.event("checkout.session.completed")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [sub] = store.subscriptions.values()
    assert (sub.status, sub.status_at) == (SubStatus.PENDING, datetime.fromtimestamp(raw[0]["created"], UTC))


async def test_two_snapshots_of_one_second_settle_the_same_way_in_either_order():
    s = StripeScenario()
    monthly = s.event("customer.subscription.updated")
    yearly = copy.deepcopy(monthly)
    yearly["id"] = "evt_plan_change_same_second"
    yearly["data"]["object"]["items"]["data"][0]["price"]["lookup_key"] = "pro_yearly"
    await same_rows_in_every_order([incoming("stripe", monthly), incoming("stripe", yearly)])
    renewed = copy.deepcopy(monthly)  # a renewal in the same second: the later period is the newer state
    renewed["id"] = "evt_renewal_same_second"
    renewed["data"]["object"]["current_period_end"] += 86400
    store = await same_rows_in_every_order([incoming("stripe", e) for e in (monthly, yearly, renewed)])
    [sub] = store.subscriptions.values()
    assert sub.current_period_end == datetime.fromtimestamp(renewed["data"]["object"]["current_period_end"], UTC)


async def test_a_checkout_paid_by_bank_debit_is_paid_when_its_async_payment_succeeds_whatever_the_order():
    # The endpoint hears only checkout events, as Stripe's fulfilment guide sets it up.
    raw = FLOWS["stripe-bank-debit"].build("t1", "u1")
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.tenant_id, txn.amount, txn.currency) == (
        TxnStatus.SUCCEEDED, "checkout_paid", "t1", 4999, "USD")
    assert txn.paid_at == datetime.fromtimestamp(raw[-1]["created"], UTC)  # when the money came, not the order
    store = await ingest_one_by_one([incoming("stripe", raw[0])])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.paid_at) == (TxnStatus.PENDING, "checkout_unpaid", None)


async def test_a_checkout_whose_bank_debit_fails_shows_failed_whatever_the_order():
    s = StripeScenario(checkout_mode="payment", delayed_payment=True)
    raw = [s.event("checkout.session.completed"), s.event("checkout.session.async_payment_failed")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.paid_at) == (
        TxnStatus.FAILED, "checkout_async_payment_failed", None)


async def test_a_checkout_that_expires_after_a_declined_attempt_cancels_its_payment():
    s = StripeScenario(tenant_id="t1", checkout_mode="payment")
    raw = [s.event("payment_intent.payment_failed"), s.event("checkout.session.expired")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.tenant_id) == (TxnStatus.CANCELLED, "checkout_expired", "t1")


async def test_a_checkout_that_expires_untried_records_no_payment():
    expired = StripeScenario(checkout_mode="payment").event("checkout.session.expired")
    expired["data"]["object"]["payment_intent"] = None  # API versions from 2022-08-01 make none until a try
    store = await ingest_one_by_one([incoming("stripe", expired)])
    assert store.transactions == {}
    assert [(e.status, e.transaction_ids) for e in store.events.values()] == [(Outcome.PROCESSED, ())]


@pytest.mark.parametrize(("currency", "at_stripe", "kept"), [("usd", 4999, 4999), ("jpy", 500, 500),
                                                           ("isk", 500000, 5000), ("mga", 5000, 500000)])
async def test_stripe_money_is_kept_in_iso_4217_minor_units(currency, at_stripe, kept):
    # Stripe states ISK in hundredths (5,000 kr is 500000) and MGA in whole ariary; ISO 4217 gives the
    # króna no minor unit and the ariary two digits. Finance and the emails read ISO minor units.
    s = StripeScenario(amount=at_stripe, currency=currency, refund_parts=1)
    raw = [s.event(t) for t in ("payment_intent.succeeded", "charge.succeeded", "charge.refunded")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.amount, txn.currency, txn.amount_refunded, txn.status) == (
        kept, currency.upper(), kept, TxnStatus.REFUNDED)
    assert [r.amount for r in txn.refunds] == [kept]
    receipt = next(i for i in store.outbox.values() if i.kind == "payment_received")
    assert receipt.data["amount"] == {"amount_minor": kept, "currency": currency.upper()}


async def test_a_fractional_krona_from_stripe_is_kept_failed_naming_the_amount():
    # Stripe has refused fractional krónur since April 2023; one from before has no ISO minor unit to be.
    event = incoming("stripe", StripeScenario(amount=4010, currency="isk").event("payment_intent.succeeded"))
    store = await ingest_one_by_one([event])
    [record] = store.events.values()
    assert store.transactions == {} and record.status is Outcome.FAILED and "4010 ISK" in record.error


async def test_a_razorpay_order_paid_on_the_second_try_names_the_captured_payment_whatever_the_order():
    r = RazorpayScenario()
    events = [incoming("razorpay", r.event(t))
              for t in ("payment.failed", "payment.authorized", "payment.captured", "order.paid")]
    store = await same_rows_in_every_order(events)
    [txn] = store.transactions.values()
    assert (txn.status, txn.razorpay_payment_id) == (TxnStatus.SUCCEEDED, r.payment)


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


@pytest.mark.parametrize("basil", [False, True])  # basil's invoice names neither intent nor subscription
async def test_a_renewal_awaiting_the_customers_authentication_shows_it_then_what_came_of_it(basil):
    s = StripeScenario(tenant_id="t1", basil=basil)
    waiting = incoming("stripe", s.event("invoice.payment_action_required"))
    store = await ingest_one_by_one([waiting])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.tenant_id) == (TxnStatus.REQUIRES_ACTION,
                                                                "invoice_payment_action_required", "t1")
    assert txn.invoice_url and txn.invoice_url.endswith(txn.stripe_invoice_id) and txn.failure_code is None
    assert store.outbox == {}  # the customer is asked by the card's own flow; nothing failed yet
    # Not authenticated in time: Stripe's retry fails, and that later attempt shows, in either order.
    gave_up = incoming("stripe", s.event("invoice.payment_failed"))
    for order in ([waiting, gave_up], [gave_up, waiting]):
        [txn] = (await ingest_one_by_one(order)).transactions.values()
        assert (txn.status, txn.provider_status) == (TxnStatus.FAILED, "invoice_payment_failed")


@pytest.mark.parametrize("basil", [False, True])
async def test_a_failed_renewal_whose_invoice_is_voided_ends_cancelled_in_any_order(basil):
    s = StripeScenario(tenant_id="t1", basil=basil)
    failed, voided = (incoming("stripe", s.event(t)) for t in ("invoice.payment_failed", "invoice.voided"))
    for order in ([failed, voided], [voided, failed]):
        store = await ingest_one_by_one(order)
        [txn] = store.transactions.values()
        assert (txn.status, txn.provider_status, txn.tenant_id) == (TxnStatus.CANCELLED, "invoice_voided", "t1")


async def test_an_invoice_voided_before_any_attempt_records_no_payment():
    s = StripeScenario()
    never_tried = s.event("invoice.voided")
    never_tried["data"]["object"].update(attempted=False, attempt_count=0)
    store = await ingest_one_by_one([incoming("stripe", never_tried)])
    assert store.transactions == {} and [e.status for e in store.events.values()] == [Outcome.PROCESSED]


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


@pytest.mark.parametrize(("provider", "build", "what"), [
    ("stripe", lambda: _with(StripeScenario().event("customer.subscription.updated"), "data", "object"),
     "subscription status"),
    ("stripe", lambda: _with(StripeScenario().event("refund.failed"), "data", "object"), "refund status"),
    ("razorpay", lambda: _with(RazorpayScenario().event("refund.failed"), "payload", "refund", "entity"),
     "refund status"),
])
async def test_a_status_word_the_provider_added_is_kept_failed_naming_it_not_read_as_another(provider, build, what):
    event, obj = build()
    obj["status"] = "on_the_moon"
    store = InMemoryEventStore()
    [result] = await IngestEvents(store).execute([incoming(provider, event)])
    assert result.outcome is Outcome.FAILED and result.error.endswith(f": unknown {what} 'on_the_moon'")
    assert not store.transactions and not store.subscriptions


def _with(event, *path):
    """The event and the object at `path` in it, to change."""
    obj = event
    for key in path:
        obj = obj[key]
    return event, obj


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
    ("razorpay", "payment.dispute.created", lambda e: e["payload"]["payment"]["entity"]),
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


@pytest.mark.parametrize("disputed", [False, True])
async def test_a_payment_made_ahead_records_what_the_provider_charged_and_keeps_what_was_asked(disputed):
    # The platform asked for 49.99 USD (CreatePendingTransaction); the customer paid 39.99 (a coupon at
    # checkout). Finance counts what was charged, and a refund of all of it is a full refund, in any
    # order. A dispute, which states no amount, may come first.
    s = StripeScenario(amount=3999, tenant_id="t1")
    events = [s.event("payment_intent.succeeded"), s.event("charge.succeeded")]
    s.refunded = s.amount  # the next refund is of all of it
    events.append(s.event("charge.refunded"))
    if disputed:
        events.append(s.event("charge.dispute.created"))
    for order in itertools.permutations(events):
        store = InMemoryEventStore()
        ahead = Transaction(id="00000000-0000-4000-8000-000000000001", provider=Provider.STRIPE,
                            status=TxnStatus.PENDING, status_at=datetime(1970, 1, 1, tzinfo=UTC), tenant_id="t1",
                            amount=4999, currency="USD", requested_amount=4999, requested_currency="USD",
                            stripe_payment_intent_id=s.pi)
        store.transactions[ahead.id] = ahead
        for event in order:
            await IngestEvents(store).execute([incoming("stripe", event)])
        [txn] = store.transactions.values()
        assert (txn.id, txn.amount, txn.currency, txn.amount_refunded, txn.status) == (
            ahead.id, 3999, "USD", 3999, TxnStatus.DISPUTED if disputed else TxnStatus.REFUNDED)
        assert (txn.requested_amount, txn.requested_currency) == (4999, "USD")


async def test_a_razorpay_chargeback_disputes_the_payment_and_shows_its_outcome_whatever_the_order():
    # payment.dispute.* names the payment; the order's row is disputed, and within the dispute the latest
    # report (contested, then lost) wins, never undone by a late opening.
    raw = FLOWS["razorpay-dispute"].build("t1", "u1")
    store = await same_rows_in_every_order([incoming("razorpay", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.tenant_id) == (TxnStatus.DISPUTED, "dispute_lost", "t1")
    assert (txn.amount, txn.currency, txn.paid_at is not None) == (125000, "INR", True)
    assert txn.disputed_at == datetime.fromtimestamp(raw[1]["payload"]["dispute"]["entity"]["created_at"], UTC)


async def test_a_razorpay_dispute_that_names_no_payment_is_kept_failed_with_its_reason():
    event = RazorpayScenario().event("payment.dispute.created")
    del event["payload"]["dispute"]["entity"]["payment_id"]
    store = InMemoryEventStore()
    [result] = await IngestEvents(store).execute([incoming("razorpay", event)])
    assert result.outcome is Outcome.FAILED and "payment_id" in result.error
    assert not store.transactions


def _uncaptured(charge_event):
    """The charge as manual capture shows it before capture: authorised, nothing taken, no receipt."""
    charge_event["data"]["object"].update(captured=False, amount_captured=0, receipt_url=None)
    return charge_event


@pytest.mark.parametrize(("outcome", "expected", "provider_status"), [
    ("charge.captured", TxnStatus.SUCCEEDED, "succeeded"),
    ("charge.expired", TxnStatus.CANCELLED, "authorization_expired"),
])
async def test_a_charge_made_without_an_intent_is_captured_or_expires_by_its_own_events(outcome, expected,
                                                                                       provider_status):
    # Charges made with the Charges API (no payment intent) tell of capture and expiry only by these events.
    s = StripeScenario(pi=None)
    authorised = _uncaptured(s.event("charge.succeeded"))
    store = await same_rows_in_every_order([incoming("stripe", e) for e in (authorised, s.event(outcome))])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.amount_refunded) == (expected, provider_status, 0)
    assert (txn.paid_at is not None) is (expected is TxnStatus.SUCCEEDED)


@pytest.mark.parametrize(("outcome", "expected"), [("payment_intent.canceled", TxnStatus.CANCELLED),
                                                   ("payment_intent.succeeded", TxnStatus.SUCCEEDED)])
async def test_an_uncaptured_charge_is_an_authorisation_until_the_intent_is_captured_or_released(outcome, expected):
    # Manual capture: Stripe sends charge.succeeded (captured: false) when the card is authorised. No money
    # has moved; releasing the authorisation must not leave the payment succeeded, nor send a receipt.
    s = StripeScenario()
    authorised = s.event("charge.succeeded")
    _uncaptured(authorised)
    events = [authorised, s.event(outcome)]
    if expected is TxnStatus.CANCELLED:  # Stripe tells of the release as a refund of the uncaptured charge
        s.refunded = s.amount
        events.append(s.event("charge.refunded"))
        _uncaptured(events[-1])
    store = await same_rows_in_every_order([incoming("stripe", e) for e in events])
    [txn] = store.transactions.values()
    assert txn.amount_refunded == 0
    assert txn.status is expected and (txn.paid_at is not None) is (expected is TxnStatus.SUCCEEDED)
    assert [i.kind for i in store.outbox.values()] == (["payment_received"] if expected is TxnStatus.SUCCEEDED else [])


@pytest.mark.parametrize(("outcome", "expected"), [(None, TxnStatus.AUTHORIZED),
                                                   ("payment_intent.canceled", TxnStatus.CANCELLED),
                                                   ("payment_intent.succeeded", TxnStatus.SUCCEEDED)])
async def test_the_intents_word_of_an_authorisation_shows_it_authorised_until_captured_or_released(outcome,
                                                                                                  expected):
    # An endpoint subscribed to payment intent events alone: amount_capturable_updated is the authorisation.
    s = StripeScenario()
    events = [s.event("payment_intent.amount_capturable_updated")] + ([s.event(outcome)] if outcome else [])
    store = await same_rows_in_every_order([incoming("stripe", e) for e in events])
    [txn] = store.transactions.values()
    assert (txn.status, txn.amount, txn.paid_at is not None) == (expected, 4999, expected is TxnStatus.SUCCEEDED)
    if expected is TxnStatus.AUTHORIZED:
        assert txn.provider_status == "requires_capture"
    assert [i.kind for i in store.outbox.values()] == (["payment_received"] if expected is TxnStatus.SUCCEEDED else [])


async def test_an_event_naming_another_tenant_leaves_the_payment_with_the_first_and_warns(caplog):
    s = StripeScenario(tenant_id="acme")
    store = await ingest_one_by_one([incoming("stripe", s.event("payment_intent.succeeded"))])
    other = s.event("charge.succeeded")
    other["data"]["object"]["metadata"] = {"tenant_id": "globex"}
    with caplog.at_level("WARNING", logger="billing.domain.ingest"):
        await IngestEvents(store).execute([incoming("stripe", other)])
    [txn] = store.transactions.values()
    assert txn.tenant_id == "acme"
    [warning] = [r for r in caplog.records if "another tenant" in r.getMessage()]
    assert warning.fields["tenant_id"] == "acme" and warning.fields["event_tenant_id"] == "globex"


async def test_a_paused_razorpay_subscription_shows_paused_until_it_resumes():
    r = RazorpayScenario()
    activated, paused, resumed = (r.event(t) for t in ("subscription.activated", "subscription.paused",
                                                       "subscription.resumed"))
    store = await same_rows_in_every_order([incoming("razorpay", e) for e in (activated, paused)])
    [sub] = store.subscriptions.values()
    assert (sub.status, sub.provider_status) == (SubStatus.PAUSED, "paused")
    store = await same_rows_in_every_order([incoming("razorpay", e) for e in (activated, paused, resumed)])
    [sub] = store.subscriptions.values()
    assert sub.status is SubStatus.ACTIVE


async def test_the_customers_address_and_name_come_from_the_most_trusted_source_whatever_the_order():
    # The platform sets the intent's receipt_email (where receipts go); the payer types another address
    # and a card holder's name at checkout and on the card. The receipt address wins over the account's
    # (checkout, invoice), which wins over the card's; a name likewise.
    s = StripeScenario(email="billing@acme.test")
    intent = s.event("payment_intent.succeeded")
    charge = s.event("charge.succeeded")
    charge["data"]["object"].update(receipt_email=None, billing_details={"email": "payer@gmail.test", "name": "A RAO"})
    checkout = s.event("checkout.session.completed")
    checkout["data"]["object"].update(mode="payment", payment_intent=s.pi,
                                      customer_details={"email": "asha@acme.test", "name": "Asha Rao"})
    store = await same_rows_in_every_order([incoming("stripe", e) for e in (intent, charge, checkout)])
    [txn] = store.transactions.values()
    assert (txn.customer_email, txn.customer_name) == ("billing@acme.test", "Asha Rao")


def _after_partial_capture(s: StripeScenario, captured: int, refunds: list[int], *, listed: bool = True):
    """charge.refunded for a charge of s.amount authorised and `captured` taken, as Stripe shows it: the
    rest of the authorisation released as a refund at the capture (the oldest), then each real refund.
    amount_refunded counts them all; API versions from 2022-11-15 list none."""
    event = s.event("charge.refunded")
    charge = event["data"]["object"]
    made = [{"id": f"re_release_{s.charge}", "object": "refund", "amount": s.amount - captured, "status": "succeeded",
             "reason": None, "failure_reason": None, "created": charge["created"]}]
    made += [{"id": f"re_{i}_{s.charge}", "object": "refund", "amount": amount, "status": "succeeded",
              "reason": "requested_by_customer", "failure_reason": None, "created": charge["created"] + 1 + i}
             for i, amount in enumerate(refunds)]
    total = sum(r["amount"] for r in made)
    charge.update(captured=True, amount_captured=captured, amount_refunded=total, refunded=total >= s.amount,
                  refunds={"object": "list", "data": made[::-1]} if listed else None)
    return event


def _partially_captured(s: StripeScenario, captured: int):
    """The authorisation, and its capture in part (the intent, and charge.captured)."""
    authorised = _uncaptured(s.event("charge.succeeded"))
    intent = s.event("payment_intent.succeeded")
    intent["data"]["object"]["amount_received"] = captured
    capture = s.event("charge.captured")
    capture["data"]["object"].update(amount_captured=captured, amount_refunded=s.amount - captured)
    return [authorised, intent, capture]


async def test_a_partial_capture_records_the_amount_captured_and_its_release_refunds_nothing():
    # Manual capture of 30.00 of a 50.00 authorisation: Stripe releases the other 20.00 as a refund, and
    # may tell of it by charge.refunded. The customer paid 30.00 and got nothing back.
    s = StripeScenario(amount=5000)
    raw = [*_partially_captured(s, 3000), _after_partial_capture(s, 3000, [])]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.amount, txn.amount_refunded, txn.status, txn.refunds) == (3000, 0, TxnStatus.SUCCEEDED, ())
    assert {i.kind for i in store.outbox.values()} == {"payment_received"}


@pytest.mark.parametrize("listed", [True, False])
@pytest.mark.parametrize(("refunds", "expected"), [([3000], TxnStatus.REFUNDED),
                                                   ([1000], TxnStatus.PARTIALLY_REFUNDED)])
async def test_refunds_after_a_partial_capture_count_what_went_back_not_the_release(refunds, expected, listed):
    # Refunding the 30.00 taken refunds everything paid; refunding 10.00 of it is partial. The charge's
    # amount_refunded (50.00, or 40.00) also counts the 20.00 released at the capture.
    s = StripeScenario(amount=5000)
    raw = [*_partially_captured(s, 3000), _after_partial_capture(s, 3000, refunds, listed=listed)]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.amount, txn.amount_refunded, txn.status) == (3000, refunds[0], expected)
    assert [r.amount for r in txn.refunds] == (refunds if listed else [])
    [told] = [i for i in store.outbox.values() if i.kind == "payment_refunded"]
    assert told.data["refunded"]["amount_minor"] == refunds[0]


def _refund_states(txn: Transaction) -> dict[str, tuple[int, str, str | None]]:
    return {r.id: (r.amount, r.state.value, r.failure_reason) for r in txn.refunds}


async def test_a_refund_that_fails_no_longer_counts_and_the_payment_shows_paid_in_any_order():
    # A refund can fail days later (the card was closed): the money is back with the merchant. The payment
    # was counted refunded in full for good before; now it is paid again, and says why.
    raw = FLOWS["stripe-refund-failed"].build("t1", "u1")
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    refund = raw[-1]["data"]["object"]
    assert (txn.status, txn.provider_status, txn.amount, txn.amount_refunded) == (
        TxnStatus.SUCCEEDED, "refund_failed", 4999, 0)
    assert _refund_states(txn) == {refund["id"]: (4999, "failed", "expired_or_canceled_card")}
    assert txn.paid_at is not None


@pytest.mark.parametrize(("listed", "failed_still_in_total"), [(True, False), (True, True), (False, True)])
async def test_a_refund_after_one_that_failed_counts_however_the_provider_reports_the_total(listed,
                                                                                            failed_still_in_total):
    # Refund A (2.00) fails, then refund B (2.00) is made. Whether the charge's cumulative amount_refunded
    # still counts A after it failed or not, and whether the charge lists its refunds (API versions before
    # 2022-11-15) or not, 2.00 stands refunded, in any order.
    s = StripeScenario(amount=1000)
    raw = [s.event(t) for t in ("charge.succeeded", "charge.refunded", "refund.failed", "charge.refunded")]
    second = raw[-1]["data"]["object"]
    if failed_still_in_total:
        second["amount_refunded"] += 200
    if not listed:
        for event in raw:
            event["data"]["object"].pop("refunds", None)
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.amount_refunded) == (
        TxnStatus.PARTIALLY_REFUNDED, "partially_refunded", 200)
    failed = raw[2]["data"]["object"]["id"]
    assert _refund_states(txn)[failed] == (200, "failed", "expired_or_canceled_card")
    assert len(txn.refunds) == (2 if listed else 1)


async def test_a_pending_refund_counts_once_when_it_succeeds_and_not_at_all_once_cancelled():
    s = StripeScenario(amount=1000)
    paid, made = s.event("charge.succeeded"), s.event("charge.refunded")
    made["data"]["object"]["refunds"]["data"][0]["status"] = "pending"  # waiting for the merchant's balance
    refund = dict(made["data"]["object"]["refunds"]["data"][0])
    succeeded, cancelled = s.envelope("refund.updated", {**refund, "status": "succeeded"}), s.envelope(
        "refund.updated", {**refund, "status": "canceled"})

    store = await same_rows_in_every_order([incoming("stripe", e) for e in (paid, made, succeeded)])
    [txn] = store.transactions.values()
    assert (txn.status, txn.amount_refunded, _refund_states(txn)) == (
        TxnStatus.PARTIALLY_REFUNDED, 200, {refund["id"]: (200, "succeeded", None)})

    store = await same_rows_in_every_order([incoming("stripe", e) for e in (paid, made, cancelled)])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.amount_refunded) == (TxnStatus.SUCCEEDED, "refund_cancelled", 0)


async def test_a_razorpay_refund_that_fails_no_longer_counts_in_any_order():
    r = RazorpayScenario()
    raw = [r.event(t) for t in ("payment.captured", "refund.processed", "refund.failed")]
    store = await same_rows_in_every_order([incoming("razorpay", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.amount_refunded) == (TxnStatus.SUCCEEDED, "refund_failed", 0)
    assert [r.state.value for r in txn.refunds] == ["failed"]


async def test_a_razorpay_refund_counts_from_its_creation_and_is_one_refund_once_processed_in_any_order():
    # A normal-speed refund is processed days after it is made; Razorpay counts it refunded from the start.
    r = RazorpayScenario()
    raw = [r.event(t) for t in ("payment.captured", "refund.created")]
    store = await same_rows_in_every_order([incoming("razorpay", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.amount_refunded, txn.refunded_at is not None) == (TxnStatus.PARTIALLY_REFUNDED, 31250, True)
    assert [(x.amount, x.state.value) for x in txn.refunds] == [(31250, "pending")]
    raw.append(r.event("refund.processed"))
    store = await same_rows_in_every_order([incoming("razorpay", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.amount_refunded) == (TxnStatus.PARTIALLY_REFUNDED, 31250)
    assert [(x.amount, x.state.value) for x in txn.refunds] == [(31250, "succeeded")]


async def test_operators_hear_once_of_each_refund_that_failed(caplog):
    raw = FLOWS["stripe-refund-failed"].build("acme", "u1")
    again = copy.deepcopy(raw[-1])  # Stripe tells of the failure twice: refund.failed, charge.refund.updated
    again.update(id="evt_refund_updated", type="charge.refund.updated")
    with caplog.at_level("WARNING", logger="billing.domain.ingest"):
        await ingest_one_by_one([incoming("stripe", e) for e in [*raw, again]])
    [warning] = [r for r in caplog.records if "refund failed" in r.getMessage()]
    assert warning.fields["tenant_id"] == "acme" and warning.fields["amount_minor"] == 4999
    assert (warning.fields["refund_id"], warning.fields["failure_reason"]) == (
        raw[-1]["data"]["object"]["id"], "expired_or_canceled_card")


async def test_a_dispute_after_a_failed_refund_still_shows_disputed():
    s = StripeScenario(refund_parts=1)
    raw = [s.event(t) for t in ("charge.succeeded", "charge.refunded", "refund.failed", "charge.dispute.created")]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.status, txn.amount_refunded) == (TxnStatus.DISPUTED, 0)


async def test_the_release_of_an_expired_authorisation_is_no_refund():
    # Stripe makes the release of an authorisation that expired uncaptured as a refund; no money moved.
    s = StripeScenario()
    authorised = s.event("charge.succeeded")
    authorised["data"]["object"].update(captured=False, amount_captured=0)
    release = s.envelope("refund.updated", {
        "id": "re_release", "object": "refund", "amount": s.amount, "charge": s.charge, "payment_intent": s.pi,
        "currency": s.currency, "status": "succeeded", "reason": "expired_uncaptured_charge", "created": s.clock.now})
    store = await ingest_one_by_one([incoming("stripe", e) for e in (authorised, release)])
    [txn] = store.transactions.values()
    assert (txn.status, txn.amount_refunded, txn.refunds) == (TxnStatus.AUTHORIZED, 0, ())


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


async def test_a_dispute_opened_and_a_refund_that_failed_are_marked_for_finance_once_each():
    # Finance has to answer a dispute by the provider's deadline, and return a failed refund another way.
    s = StripeScenario()
    raw = [s.event(t) for t in ("charge.succeeded", "charge.refunded", "refund.failed", "charge.dispute.created",
                                "charge.dispute.closed")]
    r = RazorpayScenario()
    raw_rzp = [r.event(t) for t in ("payment.captured", "payment.dispute.created", "payment.dispute.lost")]
    marked = []
    use_case = IngestEvents(InMemoryEventStore(), on_applied=lambda events, results: marked.extend(
        (e.provider.value, a.value) for e, res in zip(events, results) for a in res.attention))
    deliveries = [incoming("stripe", e) for e in raw] + [incoming("razorpay", e) for e in raw_rzp]
    for delivery in deliveries + deliveries:  # each delivered twice
        await use_case.execute([delivery])
    assert sorted(marked) == [("razorpay", "dispute_opened"), ("stripe", "dispute_opened"),
                              ("stripe", "refund_failed")]


async def test_a_refund_the_merchant_cancelled_is_not_marked_for_finance():
    s = StripeScenario()
    paid, refunded, cancelled = (s.event(t) for t in ("charge.succeeded", "charge.refunded", "refund.updated"))
    cancelled["data"]["object"].update(status="canceled", failure_reason=None)
    store = InMemoryEventStore()
    results = [r for e in (paid, refunded, cancelled)
               for r in await IngestEvents(store).execute([incoming("stripe", e)])]
    assert [r.attention for r in results] == [(), (), ()]
    [txn] = store.transactions.values()
    assert [refund.state.value for refund in txn.refunds] == ["cancelled"]
