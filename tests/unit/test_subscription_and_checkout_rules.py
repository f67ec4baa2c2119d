"""Subscriptions, their invoices and checkouts: which payment is whose, and which status stands last."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.model import SubStatus, TxnStatus
from trigger.events import RazorpayScenario, StripeScenario
from trigger.flows import FLOWS

from tests.fakes import InMemoryEventStore
from tests.support import incoming
from tests.unit.rules_support import flow_events, ingest_one_by_one, same_rows_in_every_order


async def test_a_2025_03_31_subscription_payment_is_one_row_once_invoice_payment_paid_links_its_parts():
    # API versions from 2025-03-31: invoice.paid names no payment intent, the intent and its charge
    # name no invoice and carry no metadata. Until invoice_payment.paid links them they are two rows;
    # then one, with the tenant, the intent, the charge and both links, whatever the order.
    events = flow_events("stripe-subscription-2025-03-31")
    payment = [e for e in events if e.event_type in (
        "invoice.paid", "payment_intent.succeeded", "charge.succeeded", "invoice_payment.paid")]
    store = await same_rows_in_every_order(payment)
    [txn] = store.transactions.values()
    assert (txn.status, txn.tenant_id, txn.user_id, txn.amount) == (TxnStatus.SUCCEEDED, "t1", "u1", 4999)
    assert txn.stripe_payment_intent_id and txn.stripe_invoice_id and txn.stripe_charge_id
    assert txn.receipt_url.endswith(txn.stripe_charge_id) and txn.invoice_url.endswith(txn.stripe_invoice_id)
    unlinked = await ingest_one_by_one([e for e in payment if e.event_type != "invoice_payment.paid"])
    assert sorted(t.tenant_id or "" for t in unlinked.transactions.values()) == ["", "t1"]


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


# From 2025-03-31 the invoice names neither its intent nor its subscription.
@pytest.mark.parametrize("api_version", ["2024-06-20", "2025-03-31"])
async def test_a_renewal_awaiting_the_customers_authentication_shows_it_then_what_came_of_it(api_version):
    s = StripeScenario(tenant_id="t1", api_version=api_version)
    waiting = incoming("stripe", s.event("invoice.payment_action_required"))
    store = await ingest_one_by_one([waiting])
    [txn] = store.transactions.values()
    assert (txn.status, txn.provider_status, txn.tenant_id) == (TxnStatus.REQUIRES_ACTION,
                                                                "invoice_payment_action_required", "t1")
    assert txn.invoice_url and txn.invoice_url.endswith(txn.stripe_invoice_id) and txn.failure_code is None
    # The customer is asked to authenticate on the invoice's page; nothing failed yet.
    [asked] = store.outbox.values()
    assert (asked.kind, asked.content.action_url) == ("payment_action_required", txn.invoice_url)
    # Not authenticated in time: Stripe's retry fails, and that later attempt shows, in either order. A
    # request to act that arrives after the failure is stale, and asks nothing.
    gave_up = incoming("stripe", s.event("invoice.payment_failed"))
    for order, told in (([waiting, gave_up], ["payment_action_required", "payment_failed"]),
                        ([gave_up, waiting], ["payment_failed"])):
        store = await ingest_one_by_one(order)
        [txn] = store.transactions.values()
        assert (txn.status, txn.provider_status) == (TxnStatus.FAILED, "invoice_payment_failed")
        assert sorted(e.kind for e in store.outbox.values()) == told


@pytest.mark.parametrize("api_version", ["2024-06-20", "2025-03-31"])
async def test_a_failed_renewal_whose_invoice_is_voided_ends_cancelled_in_any_order(api_version):
    s = StripeScenario(tenant_id="t1", api_version=api_version)
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


async def test_subscription_invoice_before_subscription_gets_its_owner_later():
    s = StripeScenario(tenant_id="acme")
    invoice = s.event("invoice.paid")
    invoice["data"]["object"]["subscription_details"] = {"metadata": {}}
    store = await ingest_one_by_one([incoming("stripe", invoice), incoming("stripe", s.event("customer.subscription.created"))])
    [txn] = store.transactions.values()
    assert txn.tenant_id == "acme"


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


async def test_a_failed_razorpay_renewal_is_recorded_once_and_its_email_links_the_subscription_page_in_any_order():
    # subscription.pending and .halted carry the renewal charge that failed; payment.failed reports it too.
    r = RazorpayScenario(tenant_id="acme", user_id="u1")
    raw = [r.event(t) for t in ("subscription.activated", "subscription.charged", "subscription.pending",
                                "subscription.halted")]
    failed = r.event("payment.failed")
    failed["payload"]["payment"]["entity"].update(id=r.renewal_payment, order_id=None)
    events = [incoming("razorpay", e) for e in [*raw, failed]]
    for order in (events, events[::-1], events[2:] + events[:2]):
        store = InMemoryEventStore()
        for event in [*order, *order]:  # each delivered twice
            await IngestEvents(store).execute([event])
        renewal = next(t for t in store.transactions.values() if t.razorpay_payment_id == r.renewal_payment)
        assert renewal.status is TxnStatus.FAILED and renewal.amount == r.amount
        assert renewal.invoice_url == f"https://rzp.io/i/{r.sub[4:12]}"
        told = [i for i in store.outbox.values() if i.kind == "payment_failed"]
        assert len(told) == 1 and told[0].content.retry_url == renewal.invoice_url
        assert told[0].to_email == r.email
