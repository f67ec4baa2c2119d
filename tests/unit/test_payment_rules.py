"""One-off payments: attempts, captures, failures and retries, and the money recorded as the provider took it."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime

import pytest
from billing.domain.email_contents import Money
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.model import Provider, Transaction, TxnStatus
from trigger.events import RazorpayScenario, StripeScenario

from tests.fakes import InMemoryEventStore
from tests.support import incoming
from tests.unit.rules_support import ingest_one_by_one, same_rows_in_every_order, uncaptured


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
    assert receipt.content.amount == Money(kept, currency.upper())


async def test_a_razorpay_order_paid_on_the_second_try_names_the_captured_payment_whatever_the_order():
    r = RazorpayScenario()
    events = [incoming("razorpay", r.event(t))
              for t in ("payment.failed", "payment.authorized", "payment.captured", "order.paid")]
    store = await same_rows_in_every_order(events)
    [txn] = store.transactions.values()
    assert (txn.status, txn.razorpay_payment_id) == (TxnStatus.SUCCEEDED, r.payment)


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


async def test_razorpay_empty_notes_arrive_as_list_and_mean_no_owner():
    r = RazorpayScenario()
    event = r.event("payment.captured")
    event["payload"]["payment"]["entity"]["notes"] = []
    store = await ingest_one_by_one([incoming("razorpay", event)])
    [txn] = store.transactions.values()
    assert txn.tenant_id is None and txn.status is TxnStatus.SUCCEEDED


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


@pytest.mark.parametrize(("outcome", "expected", "provider_status"), [
    ("charge.captured", TxnStatus.SUCCEEDED, "succeeded"),
    ("charge.expired", TxnStatus.CANCELLED, "authorization_expired"),
])
async def test_a_charge_made_without_an_intent_is_captured_or_expires_by_its_own_events(outcome, expected,
                                                                                       provider_status):
    # Charges made with the Charges API (no payment intent) tell of capture and expiry only by these events.
    s = StripeScenario(pi=None)
    authorised = uncaptured(s.event("charge.succeeded"))
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
    uncaptured(authorised)
    events = [authorised, s.event(outcome)]
    if expected is TxnStatus.CANCELLED:  # Stripe tells of the release as a refund of the uncaptured charge
        s.refunded = s.amount
        events.append(s.event("charge.refunded"))
        uncaptured(events[-1])
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
