"""Which customer emails billing asks for: once per thing reported, whatever the delivery order."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from billing.domain.email_contents import Money, SubscriptionTrialEnding
from billing.domain.ingest import IngestEvents
from billing.domain.model import Owner, Provider, SubRef, SubStatus, Transaction, TxnStatus
from billing.domain.notifications import RECEIPT_LINK_WAIT, EmailAmendment, link_amendments
from trigger.events import RazorpayScenario, StripeScenario
from trigger.flows import FLOWS

from tests.fakes import InMemoryEventStore
from tests.support import assert_same_emails, emails, incoming, provider_event_sets, sampled_orders


async def outbox_after(events):
    store = InMemoryEventStore()
    for event in events:
        await IngestEvents(store).execute([event])
    return store.outbox


def kinds(outbox) -> Counter:
    return Counter(intent.kind for intent in outbox.values())


async def test_stripe_payment_flow_asks_for_receipt_and_refund_emails():
    flow = FLOWS["stripe-payment"]
    outbox = await outbox_after([incoming("stripe", e) for e in flow.build("t1", "u1")])
    assert kinds(outbox) == Counter({"payment_received": 1, "payment_refunded": 1})
    refund = next(i for i in outbox.values() if i.kind == "payment_refunded")
    assert refund.content.refunded == Money(999, "USD") and refund.content.full is False
    assert refund.to_email == "buyer@example.com" and refund.tenant_id == "t1"


async def test_a_new_refund_after_one_that_failed_is_told_though_the_total_is_the_same_again():
    # Refund A (2.00) is told; it fails, so nothing stands refunded; refund B (2.00) is news to the customer.
    s = StripeScenario(amount=1000)
    raw = [s.event(t) for t in ("charge.succeeded", "charge.refunded", "refund.failed", "charge.refunded")]
    outbox = await outbox_after([incoming("stripe", e) for e in raw])
    refunds = [i for i in outbox.values() if i.kind == "payment_refunded"]
    assert [i.content.refunded.amount_minor for i in refunds] == [200, 200]
    assert len({i.idempotency_key for i in refunds}) == 2


async def test_a_refund_that_fails_is_told_once_whatever_the_order():
    # The customer was told of the refund, or will never be if the failure came first; either way they
    # hear that it failed and that they are still owed the money.
    flow = FLOWS["stripe-refund-failed"]
    events = [incoming("stripe", e) for e in flow.build("t1", "u1")]
    for order in itertools.permutations(events):
        outbox = await outbox_after(list(order))
        [failed] = [i for i in outbox.values() if i.kind == "payment_refund_failed"]
        assert failed.content.amount == Money(4999, "USD")
        assert failed.content.reason == "the card has expired or was cancelled"
        assert failed.to_email == "buyer@example.com" and failed.tenant_id == "t1"


async def test_a_refund_the_merchant_cancelled_or_that_a_dispute_settles_is_not_told_as_failed():
    for reason in ("merchant_request", "charge_for_pending_refund_disputed"):
        s = StripeScenario()
        raw = [s.event(t) for t in ("charge.succeeded", "charge.refunded", "refund.failed")]
        raw[-1]["data"]["object"]["failure_reason"] = reason
        assert "payment_refund_failed" not in kinds(await outbox_after([incoming("stripe", e) for e in raw]))


async def test_a_bank_debit_is_receipted_when_paid_and_its_failure_is_told():
    paid = FLOWS["stripe-bank-debit"].build("t1", "u1")
    outbox = await outbox_after([incoming("stripe", e) for e in paid])
    assert kinds(outbox) == Counter({"payment_received": 1})
    [receipt] = outbox.values()
    assert receipt.to_email == "buyer@example.com"
    assert receipt.content.amount == Money(4999, "USD")
    s = StripeScenario(checkout_mode="payment", delayed_payment=True)
    failed = [s.event("checkout.session.completed"), s.event("checkout.session.async_payment_failed"),
              s.event("payment_intent.payment_failed")]  # the intent tells of the same failure
    for order in itertools.permutations(failed):
        assert kinds(await outbox_after([incoming("stripe", e) for e in order])) == Counter({"payment_failed": 1})


async def test_a_razorpay_refund_is_told_once_when_made_not_again_when_processed():
    r = RazorpayScenario()
    raw = [r.event(t) for t in ("payment.captured", "refund.created")]
    made = await outbox_after([incoming("razorpay", e) for e in raw])
    assert kinds(made) == Counter({"payment_received": 1, "payment_refunded": 1})
    processed = await outbox_after([incoming("razorpay", e) for e in [*raw, r.event("refund.processed")]])
    assert kinds(processed) == kinds(made)


async def test_subscription_flow_asks_for_activation_once_and_cancellation():
    flow = FLOWS["stripe-subscription"]
    outbox = await outbox_after([incoming("stripe", e) for e in flow.build("t1", "u1")])
    assert kinds(outbox) == Counter({"subscription_activated": 1, "subscription_cancelled": 1,
                                     "payment_received": 1, "payment_failed": 1})


async def test_renewals_do_not_repeat_the_activation_email():
    s = StripeScenario()
    events = [s.event("checkout.session.completed"), s.event("customer.subscription.created"), s.past_due(),
              s.event("customer.subscription.updated"), s.event("customer.subscription.updated")]
    outbox = await outbox_after([incoming("stripe", e) for e in events])
    assert kinds(outbox)["subscription_activated"] == 1


@pytest.mark.parametrize("name", sorted(FLOWS))
async def test_every_order_and_duplication_asks_for_exactly_the_emails_in_order_delivery_does(name):
    flow = FLOWS[name]
    events = [incoming(flow.provider, e) for e in flow.build("t1", "u1")]
    expected = emails((await outbox_after(events)).values())
    assert expected, "the flow asks for emails"
    for order in sampled_orders(events, 60, seed=1):
        outbox = await outbox_after(order + order[::2])  # every event, and half of them again
        assert_same_emails(emails(outbox.values()), expected, [e.event_type for e in order])


def _waiting(s: StripeScenario, next_action: dict | None) -> dict:
    event = s.event("payment_intent.requires_action")
    event["data"]["object"]["next_action"] = next_action
    return event


TRANSFER = {"type": "display_bank_transfer_instructions", "display_bank_transfer_instructions": {
    "type": "gb_bank_transfer", "reference": "REF123",
    "hosted_instructions_url": "https://payments.stripe.com/bank_transfers/instructions/test_123"}}


async def test_a_payment_waiting_on_a_hosted_step_asks_the_customer_once_with_the_page():
    s = StripeScenario(tenant_id="t1")
    waiting = incoming("stripe", _waiting(s, TRANSFER))
    outbox = await outbox_after([waiting, waiting, incoming("stripe", s.event("payment_intent.succeeded"))])
    asked = [i for i in outbox.values() if i.kind == "payment_action_required"]
    assert len(asked) == 1 and kinds(outbox)["payment_received"] == 1
    assert asked[0].content.action_url == TRANSFER["display_bank_transfer_instructions"]["hosted_instructions_url"]
    assert asked[0].content.instructions == "Transfer the amount to the bank account shown on the page."
    assert asked[0].content.amount == Money(4999, "USD") and asked[0].to_email == "buyer@example.com"


@pytest.mark.parametrize("next_action", [
    {"type": "redirect_to_url", "redirect_to_url": {"url": "https://hooks.stripe.com/3d_secure_2/hosted/x",
                                                    "return_url": "https://shop.example/return"}},
    {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}},
    None,
])
async def test_a_step_done_in_the_checkout_while_the_customer_is_there_asks_nothing_by_email(next_action):
    outbox = await outbox_after([incoming("stripe", _waiting(StripeScenario(tenant_id="t1"), next_action))])
    assert outbox == {}


async def test_a_request_to_act_that_arrives_after_the_payment_went_through_asks_nothing():
    s = StripeScenario(tenant_id="t1")
    outbox = await outbox_after([incoming("stripe", e) for e in (s.event("payment_intent.succeeded"),
                                                                    _waiting(s, TRANSFER))])
    assert kinds(outbox) == Counter({"payment_received": 1})


async def test_a_renewal_waiting_on_the_customer_again_days_later_asks_again():
    s = StripeScenario(tenant_id="t1")
    first = s.event("invoice.payment_action_required")
    again = s.event("invoice.payment_action_required")
    again["id"], again["created"] = "evt_retry_1", again["created"] + 3 * 86400
    outbox = await outbox_after([incoming("stripe", e) for e in (first, first, again)])
    assert kinds(outbox) == Counter({"payment_action_required": 2})


async def test_late_failure_after_success_sends_no_failure_email():
    s = StripeScenario()
    success, failure = s.event("payment_intent.succeeded"), s.event("payment_intent.payment_failed")
    assert kinds(await outbox_after([incoming("stripe", success), incoming("stripe", failure)])) == Counter(
        {"payment_received": 1})
    assert kinds(await outbox_after([incoming("stripe", failure), incoming("stripe", success)])) == Counter(
        {"payment_failed": 1, "payment_received": 1})


async def test_no_email_without_a_recipient():
    s = StripeScenario()
    event = s.event("payment_intent.succeeded")
    event["data"]["object"]["receipt_email"] = None
    assert await outbox_after([incoming("stripe", event)]) == {}


@pytest.mark.parametrize(("method", "shown"), [("card", "Card"), ("us_bank_account", "US bank account"),
                                              ("upi", "UPI"), ("revolut_pay", "Revolut pay")])
async def test_the_receipt_names_the_payment_method_as_a_customer_reads_it(method, shown):
    s = StripeScenario()
    charge = s.event("charge.succeeded")
    charge["data"]["object"]["payment_method_details"] = {"type": method}
    [receipt] = (await outbox_after([incoming("stripe", charge)])).values()
    assert receipt.content.payment_method == shown


@pytest.mark.parametrize(("details", "shown"), [
    ({"type": "card", "card": {"brand": "visa", "last4": "4242"}}, "Visa •••• 4242"),
    ({"type": "card", "card": {"brand": "amex", "last4": "0005"}}, "American Express •••• 0005"),
    ({"type": "card", "card": {"brand": "visa", "last4": "4242424242424242"}}, "Card"),  # never more than 4
    ({"type": "us_bank_account", "us_bank_account": {"bank_name": "STRIPE TEST BANK", "last4": "6789"}},
     "US bank account (STRIPE TEST BANK)"),
])
async def test_a_card_is_named_by_its_brand_and_last_four_digits_and_a_bank_account_by_its_bank(details, shown):
    s = StripeScenario()
    charge = s.event("charge.succeeded")
    charge["data"]["object"]["payment_method_details"] = details
    # The intent, after its charge, names the type only: the card the charge told of stays.
    [receipt] = (await outbox_after([incoming("stripe", charge),
                                     incoming("stripe", s.event("payment_intent.succeeded"))])).values()
    assert receipt.content.payment_method == shown


@pytest.mark.parametrize("intent_first", [True, False])
async def test_a_waiting_receipt_takes_the_card_with_its_link_whichever_event_comes_first(intent_first):
    s = StripeScenario()
    events = [incoming("stripe", s.event(t)) for t in ("payment_intent.succeeded", "charge.succeeded")]
    [receipt] = (await outbox_after(events if intent_first else events[::-1])).values()
    assert (receipt.content.payment_method, receipt.content.receipt_url) == (
        "Visa •••• 4242", f"https://pay.stripe.com/receipts/payment/{s.charge}")


@pytest.mark.parametrize(("method", "extra", "shown"), [
    ("card", {"card": {"network": "RuPay", "last4": "1111"}}, "RuPay •••• 1111"),
    ("netbanking", {"bank": "HDFC"}, "Net banking (HDFC)"),
    ("wallet", {"wallet": "paytm"}, "Wallet (paytm)"),
    ("upi", {"vpa": "asha@okhdfcbank"}, "UPI"),  # a UPI address identifies the customer: never shown
])
async def test_a_razorpay_receipt_names_the_card_bank_or_wallet_and_never_the_upi_address(method, extra, shown):
    r = RazorpayScenario()
    captured = r.event("payment.captured")
    captured["payload"]["payment"]["entity"].update(method=method, **extra)
    [receipt] = (await outbox_after([incoming("razorpay", captured)])).values()
    assert receipt.content.payment_method == shown


async def test_the_payment_email_links_the_charge_receipt_or_else_the_invoice_page():
    s = StripeScenario()
    s.pi = s.invoice_pi
    [by_charge] = (await outbox_after([incoming("stripe", s.event("charge.succeeded"))])).values()
    assert by_charge.content.receipt_url == f"https://pay.stripe.com/receipts/payment/{s.charge}"
    [by_invoice] = (await outbox_after([incoming("stripe", s.event("invoice.paid"))])).values()
    assert by_invoice.content.receipt_url == f"https://invoice.stripe.com/i/{s.invoice}"


async def test_a_stripe_receipt_waits_for_its_link_only_while_the_charge_has_not_told_it():
    s = StripeScenario()
    [waiting] = (await outbox_after([incoming("stripe", s.event("payment_intent.succeeded"))])).values()
    assert waiting.content.receipt_url is None and waiting.hold == RECEIPT_LINK_WAIT
    [linked] = (await outbox_after([incoming("stripe", s.event("charge.succeeded"))])).values()
    assert linked.hold == timedelta(0)
    invoiced = StripeScenario()
    invoiced.pi = invoiced.invoice_pi
    [by_invoice] = (await outbox_after([incoming("stripe", invoiced.event("invoice.paid"))])).values()
    assert by_invoice.hold == timedelta(0)  # the invoice's page is its receipt
    [razorpay] = (await outbox_after([incoming("razorpay", RazorpayScenario().event("payment.captured"))])).values()
    assert razorpay.hold == timedelta(0)  # Razorpay has no receipt links to wait for


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
async def test_the_receipt_has_its_link_whichever_of_the_intent_and_the_charge_comes_first(reverse, batched):
    s = StripeScenario()
    events = [incoming("stripe", s.event("payment_intent.succeeded")), incoming("stripe", s.event("charge.succeeded"))]
    events = events[::-1] if reverse else events
    store = InMemoryEventStore()
    for batch in [events] if batched else [[e] for e in events]:
        await IngestEvents(store).execute(batch)
    [receipt] = store.outbox.values()
    assert receipt.content.receipt_url == f"https://pay.stripe.com/receipts/payment/{s.charge}"
    assert receipt.hold == timedelta(0)  # sent at once, the link being known


def _paid_stripe(**columns) -> Transaction:
    paid = datetime(2026, 3, 1, tzinfo=UTC)
    return Transaction(id="t1", provider=Provider.STRIPE, status=TxnStatus.SUCCEEDED, status_at=paid, paid_at=paid,
                       stripe_payment_intent_id="pi_1", tenant_id="acme", customer_email="b@example.com", **columns)


def test_the_link_amends_only_a_receipt_asked_for_without_it():
    txn = _paid_stripe
    link = "https://pay.stripe.com/receipts/payment/x"
    [amendment] = link_amendments(txn(), txn(receipt_url=link))
    assert amendment == EmailAmendment("txn:t1:payment_received", "payment_received", "receipt_url", link)
    assert link_amendments(txn(receipt_url=link), txn(receipt_url=link)) == []  # the receipt had it
    assert link_amendments(None, txn(receipt_url=link)) == []  # the receipt is asked for with it
    unreachable = replace(txn(), customer_email=None)
    assert link_amendments(unreachable, txn(receipt_url=link)) == []  # no receipt was asked for


@pytest.mark.parametrize("reverse", [False, True])
async def test_a_receipt_whose_address_comes_only_with_the_charge_is_sent_in_either_order(reverse):
    # Payment intents often carry no receipt_email; the charge's billing details do.
    s = StripeScenario()
    succeeded = s.event("payment_intent.succeeded")
    succeeded["data"]["object"]["receipt_email"] = None
    charge = s.event("charge.succeeded")
    charge["data"]["object"]["receipt_email"] = None
    events = [incoming("stripe", succeeded), incoming("stripe", charge)]
    outbox = await outbox_after(events[::-1] if reverse else events)
    assert kinds(outbox) == Counter({"payment_received": 1})
    [receipt] = outbox.values()
    assert receipt.to_email == "buyer@example.com"


@pytest.mark.parametrize("reverse", [False, True])
async def test_the_activation_email_goes_out_whether_the_subscription_or_its_checkout_comes_first(reverse):
    # The subscription carries no address; the checkout that made it does.
    s = StripeScenario()
    events = [incoming("stripe", s.event("customer.subscription.created")),
              incoming("stripe", s.event("checkout.session.completed"))]
    outbox = await outbox_after(events[::-1] if reverse else events)
    assert kinds(outbox) == Counter({"subscription_activated": 1})
    [activated] = outbox.values()
    assert (activated.to_email, activated.content.plan) == ("buyer@example.com", "Pro monthly")


# A lookup key is a key for the merchant's code (pro_monthly), as much an id as the price's own.
@pytest.mark.parametrize(("lookup_key", "nickname", "named"), [
    ("pro_monthly", "Pro monthly", "Pro monthly"), (None, "Pro monthly", "Pro monthly"),
    ("pro_monthly", None, None), (None, None, None)])
async def test_subscription_emails_name_the_plan_by_the_merchants_name_for_it_never_by_an_id_or_key(
        lookup_key, nickname, named):
    s = StripeScenario()
    events = [s.event("checkout.session.completed"), s.event("customer.subscription.created"),
              s.event("customer.subscription.deleted")]
    for event in events[1:]:
        [item] = event["data"]["object"]["items"]["data"]
        item["price"].update(id="price_1PwdFrHrIm3tRwvjHgQieMjV", lookup_key=lookup_key, nickname=nickname)
    outbox = await outbox_after([incoming("stripe", e) for e in events])
    assert kinds(outbox) == Counter({"subscription_activated": 1, "subscription_cancelled": 1})
    assert [i.content.plan for i in outbox.values()] == [named, named]
    # Each names its plan for the catalog, whose name takes the place of this one when it is handed over.
    assert {i.plan_ref for i in outbox.values()} == {"stripe:price_1PwdFrHrIm3tRwvjHgQieMjV"}


async def test_a_razorpay_subscriptions_emails_name_no_plan_for_razorpay_knows_it_by_id_only():
    # "Your plan_pro_monthly subscription has been cancelled" read as a system's output: Razorpay's events
    # carry the plan's id, never its name, so the emails word it without one.
    events = [incoming("razorpay", e) for e in FLOWS["razorpay-subscription"].build("acme", "u1")]
    outbox = await outbox_after(events)
    told = [i for i in outbox.values() if i.kind.startswith("subscription_")]
    assert {i.kind for i in told} == {"subscription_activated", "subscription_cancelled"}
    assert all(i.content.plan is None for i in told)


def _priced(items: list[dict], **subscription) -> list:
    """A checkout and a subscription.created whose items are these."""
    s = StripeScenario()
    events = [s.event("checkout.session.completed"), s.event("customer.subscription.created")]
    events[1]["data"]["object"]["items"]["data"] = items
    events[1]["data"]["object"].update(subscription)
    return [incoming("stripe", e) for e in events]


def _item(**price) -> dict:
    quantity = price.pop("quantity", 1)
    return {"object": "subscription_item", "quantity": quantity,
            "price": {"id": "price_x", "object": "price", "currency": "usd", "unit_amount": 4900,
                      "billing_scheme": "per_unit", "recurring": {"interval": "month", "usage_type": "licensed"},
                      **price}}


@pytest.mark.parametrize(("items", "subscription", "price"), [
    ([_item()], {}, Money(4900, "USD")),
    ([_item(quantity=3)], {}, Money(14700, "USD")),  # three seats
    ([_item(), _item(unit_amount=1500)], {}, Money(6400, "USD")),  # plan and an add-on
    ([_item(currency="isk", unit_amount=500000)], {}, Money(5000, "ISK")),  # in ISO units
    # The older shape: a plan, not a price.
    ([{"object": "subscription_item", "quantity": 1, "plan": {"id": "pro", "amount": 900, "currency": "eur"}}], {},
     Money(900, "EUR")),
    # No one figure tells what the customer pays: these name no price.
    ([_item()], {"discount": {"coupon": {"percent_off": 20}}}, None),
    ([_item()], {"discounts": ["di_1"]}, None),
    ([_item(recurring={"interval": "month", "usage_type": "metered"})], {}, None),
    ([_item(unit_amount=None, billing_scheme="tiered")], {}, None),
    ([_item(), _item(currency="eur")], {}, None),
    ([_item(unit_amount="49.00")], {}, None),  # unreadable: left out, the event still applied
    ([_item(recurring="monthly")], {}, None),
])
async def test_the_activation_email_names_the_price_of_a_period_only_where_one_fixed_price_states_it(
        items, subscription, price):
    store = InMemoryEventStore()
    for event in _priced(items, **subscription):
        await IngestEvents(store).execute([event])
    [activated] = [i for i in store.outbox.values() if i.kind == "subscription_activated"]
    assert activated.content.price == price
    [row] = store.subscriptions.values()
    assert (row.price_amount, row.price_currency) == ((price.amount_minor, price.currency) if price else
                                                      (None, None))


async def test_a_razorpay_plan_is_known_by_its_id_alone_so_its_emails_name_no_plan():
    r = RazorpayScenario()
    events = [r.event(t) for t in ("subscription.activated", "subscription.charged")]
    for event in events:
        event["payload"]["subscription"]["entity"]["plan_id"] = "plan_00000000000001"
    outbox = await outbox_after([incoming("razorpay", e) for e in events])
    [activated] = [i for i in outbox.values() if i.kind == "subscription_activated"]
    assert activated.content.plan is None


async def test_razorpay_subscription_emails_go_to_the_address_its_payment_carries():
    # A Razorpay subscription names only a customer id; subscription.charged brings the payment, and
    # with it the address the activation and cancellation emails need.
    r = RazorpayScenario()
    events = [r.event(t) for t in ("subscription.activated", "subscription.charged", "subscription.cancelled")]
    outbox = await outbox_after([incoming("razorpay", e) for e in events])
    assert kinds(outbox) == Counter({"subscription_activated": 1, "subscription_cancelled": 1,
                                     "payment_received": 1})
    assert {i.to_email for i in outbox.values()} == {"buyer@example.in"}


async def test_an_address_that_comes_long_after_the_change_brings_no_stale_email():
    # A Razorpay subscription active for a month before any payment told its address (as every one
    # was before addresses were taken from payments): the renewal's charge brings it, but "your
    # subscription is active" a month late would be stale news. Its cancellation is news.
    r = RazorpayScenario()
    activated = r.event("subscription.activated")
    r.clock.now += 30 * 86400
    renewal = r.event("subscription.charged")
    cancelled = r.event("subscription.cancelled")
    outbox = await outbox_after([incoming("razorpay", e) for e in (activated, renewal, cancelled)])
    assert kinds(outbox) == Counter({"payment_received": 1, "subscription_cancelled": 1})
    # A Stripe payment whose address comes only with a refund two months later: the refund is news,
    # the receipt is not.
    s = StripeScenario()
    paid = s.event("payment_intent.succeeded")
    paid["data"]["object"]["receipt_email"] = None
    s.clock.now += 60 * 86400
    refunded = s.event("charge.refunded")
    outbox = await outbox_after([incoming("stripe", paid), incoming("stripe", refunded)])
    assert kinds(outbox) == Counter({"payment_refunded": 1})


@pytest.mark.parametrize("together", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
async def test_a_subscription_payment_whose_owner_comes_with_the_subscription_gets_its_receipt(reverse, together):
    # An invoice without metadata that comes before its subscription has no tenant to write as; the
    # subscription brings the tenant, and with it the receipt, whichever comes first, in one batch or two.
    s = StripeScenario(tenant_id="acme")
    invoice = s.event("invoice.paid")
    invoice["data"]["object"]["subscription_details"] = {"metadata": {}}
    events = [incoming("stripe", invoice), incoming("stripe", s.event("customer.subscription.created"))]
    events = events[::-1] if reverse else events
    store = InMemoryEventStore()
    for batch in ([events] if together else [[e] for e in events]):
        await IngestEvents(store).execute(batch)
    [txn] = store.transactions.values()
    receipts = [i for i in store.outbox.values() if i.kind == "payment_received"]
    assert [(r.tenant_id, r.content.transaction_id, r.to_email) for r in receipts] == [
        ("acme", txn.id, "buyer@example.com")]


def _scheduled_cancellation(s: StripeScenario):
    """A subscription, its checkout, the customer asking to cancel at the end of the paid period, and the
    deletion Stripe sends when that period ends."""
    created = s.event("customer.subscription.created")
    period = {k: created["data"]["object"][k] for k in ("current_period_start", "current_period_end")}
    asked = s.event("customer.subscription.updated")
    asked["data"]["object"].update(period, cancel_at_period_end=True, cancel_at=period["current_period_end"],
                                   canceled_at=s.clock.now)
    deleted = s.event("customer.subscription.deleted")
    deleted["data"]["object"].update(period, cancel_at_period_end=True, cancel_at=period["current_period_end"],
                                     canceled_at=asked["data"]["object"]["canceled_at"],
                                     ended_at=period["current_period_end"])
    return s.event("checkout.session.completed"), created, asked, deleted


async def test_a_cancellation_at_period_end_is_confirmed_when_asked_with_the_day_it_takes_effect():
    # "Your subscription ends on <date>. You keep access until then." is news when the customer cancels,
    # not a month later when the period runs out; one email either way, whatever the order.
    s = StripeScenario()
    checkout, created, asked, deleted = _scheduled_cancellation(s)
    ends = datetime.fromtimestamp(created["data"]["object"]["current_period_end"], UTC)
    store = InMemoryEventStore()
    for event in (checkout, created, asked):
        await IngestEvents(store).execute([incoming("stripe", event)])
    [sub] = store.subscriptions.values()
    assert (sub.status, sub.cancel_at) == (SubStatus.ACTIVE, ends)
    [cancelled] = [i for i in store.outbox.values() if i.kind == "subscription_cancelled"]
    assert (cancelled.content.effective_date, cancelled.content.ended) == (ends, False)
    for order in itertools.permutations([checkout, created, asked, deleted]):
        outbox = await outbox_after([incoming("stripe", e) for e in order])
        assert [i.content.effective_date for i in outbox.values() if i.kind == "subscription_cancelled"] == [ends]


async def test_a_subscription_cancelled_at_once_is_told_it_has_ended_that_day():
    s = StripeScenario()
    events = [s.event("checkout.session.completed"), s.event("customer.subscription.created"),
              s.event("customer.subscription.deleted")]
    outbox = await outbox_after([incoming("stripe", e) for e in events])
    [cancelled] = [i for i in outbox.values() if i.kind == "subscription_cancelled"]
    ended_at = datetime.fromtimestamp(events[2]["data"]["object"]["canceled_at"], UTC)
    assert (cancelled.content.effective_date, cancelled.content.ended) == (ended_at, True)


async def test_a_cancellation_withdrawn_before_the_period_ends_leaves_the_subscription_running():
    s = StripeScenario()
    checkout, created, asked, _ = _scheduled_cancellation(s)
    kept = s.event("customer.subscription.updated")  # the customer changed their mind
    kept["data"]["object"].update({k: asked["data"]["object"][k] for k in ("current_period_start", "current_period_end")})
    store = InMemoryEventStore()
    for event in (checkout, kept, asked, created):
        await IngestEvents(store).execute([incoming("stripe", event)])
    [sub] = store.subscriptions.values()
    assert (sub.status, sub.cancel_at) == (SubStatus.ACTIVE, None)


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
async def test_a_trials_zero_invoice_records_no_payment_and_sends_no_receipt(event_type):
    # Stripe marks a trial's first invoice (or one a coupon covers) paid, with nothing charged.
    s = StripeScenario()
    trial = s.event(event_type)
    trial["data"]["object"].update(amount_due=0, amount_paid=0, payment_intent=None)
    store = InMemoryEventStore()
    [result] = await IngestEvents(store).execute([incoming("stripe", trial)])
    assert (result.outcome.value, result.transaction_ids) == ("processed", ())
    assert not store.transactions and not store.outbox


async def test_each_retry_of_a_failed_renewal_is_told_but_one_attempt_only_once():
    # Stripe retries a failed renewal days later; each retry is reported failed, with nothing in progress
    # between. One attempt is reported by the invoice and the intent seconds apart.
    s = StripeScenario()
    s.pi = s.renewal_pi  # the renewal invoice's intent
    first = [s.event("invoice.payment_failed"), s.event("payment_intent.payment_failed")]
    s.clock.now += 3 * 86400
    retry = [s.event("invoice.payment_failed"), s.event("payment_intent.payment_failed")]
    outbox = await outbox_after([incoming("stripe", e) for e in first + retry])
    assert kinds(outbox) == Counter({"payment_failed": 2})


async def test_a_failed_renewals_email_links_its_invoice_page_whatever_the_order_of_its_reports():
    # The invoice, its intent and its charge each report the failure. Stripe gives an invoice's intent and
    # charge no metadata, so only the invoice names the tenant, and it brings its page with it: there the
    # customer pays with another card, or gives the authentication their bank asks for.
    s = StripeScenario()
    s.pi = s.renewal_pi
    reports = [s.event("charge.failed"), s.event("payment_intent.payment_failed"), s.event("invoice.payment_failed")]
    for report in reports[:2]:
        report["data"]["object"].update(metadata={}, receipt_email=None)
    for order in itertools.permutations(reports):
        outbox = await outbox_after([incoming("stripe", e) for e in order])
        [failed] = outbox.values()
        assert failed.kind == "payment_failed", [e["type"] for e in order]
        assert failed.content.retry_url == f"https://invoice.stripe.com/i/{s.renewal_invoice}"
        assert failed.tenant_id == s.tenant_id


async def test_a_failed_payment_of_no_invoice_is_told_at_once_with_no_page_to_pay_on():
    s = StripeScenario()
    [failed] = (await outbox_after([incoming("stripe", s.event("payment_intent.payment_failed"))])).values()
    assert failed.kind == "payment_failed" and failed.content.retry_url is None


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(events=provider_event_sets(), data=st.data())
def test_any_delivery_asks_for_exactly_the_emails_in_order_delivery_does(events, data):
    arrival = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events), max_size=3))))
    got, expected = asyncio.run(outbox_after(arrival)), asyncio.run(outbox_after(events))
    assert_same_emails(emails(got.values()), emails(expected.values()), news_as_learned=True)


@pytest.mark.parametrize(("days_later", "receipts"), [(0, 1), (2, 0)])
async def test_a_payment_given_its_tenant_by_an_operator_gets_the_receipt_it_waited_for_while_news(
        days_later, receipts):
    s = StripeScenario()
    paid = s.event("payment_intent.succeeded")
    paid["data"]["object"]["metadata"] = {}  # a payment link: no tenant
    store = InMemoryEventStore()
    use_case = IngestEvents(store)
    await use_case.execute([incoming("stripe", paid)])
    [stray] = store.transactions.values()
    assert stray.tenant_id is None and store.outbox == {}
    at = stray.paid_at + timedelta(days=days_later)
    given = await use_case.assign_tenant(stray, Owner("acme", "u9"), at)
    assert (given.id, given.tenant_id, given.user_id) == (stray.id, "acme", "u9")
    assert store.transactions[stray.id] == given
    assert kinds(store.outbox) == Counter({"payment_received": receipts} if receipts else {})
    # Given again, or to another tenant: the payment keeps the tenant it has, and no email is asked twice.
    assert (await use_case.assign_tenant(stray, Owner("other"), at)).tenant_id == "acme"
    assert len(store.outbox) == receipts


async def test_a_subscription_given_its_tenant_by_an_operator_brings_its_payments_along():
    # A subscription made in Stripe's dashboard carries none of the platform's metadata, nor its invoices.
    s = StripeScenario()
    s.pi = s.invoice_pi
    created, paid = s.event("customer.subscription.created"), s.event("invoice.paid")
    created["data"]["object"]["metadata"] = {}
    paid["data"]["object"]["subscription_details"]["metadata"] = {}
    store = InMemoryEventStore()
    use_case = IngestEvents(store)
    for event in (created, paid):
        await use_case.execute([incoming("stripe", event)])
    assert {r.tenant_id for r in [*store.transactions.values(), *store.subscriptions.values()]} == {None}
    [sub] = store.subscriptions.values()
    given = await use_case.assign_subscription_tenant(SubRef(sub.provider, s.sub), Owner("acme", "u9"), sub.status_at)
    assert (given.id, given.tenant_id) == (sub.id, "acme")
    [payment] = store.transactions.values()
    assert (payment.tenant_id, payment.user_id) == ("acme", "u9")
    assert kinds(store.outbox) == Counter({"payment_received": 1})  # the invoice's address; none for the sub
    assert await use_case.assign_subscription_tenant(SubRef(sub.provider, "sub_unknown"), Owner("acme"),
                                                   sub.status_at) is None


async def test_a_subscription_keeps_the_price_of_its_newest_snapshot_whatever_the_arrival_order():
    s = StripeScenario()
    created, upgraded = s.event("customer.subscription.created"), s.event("customer.subscription.updated")
    upgraded["data"]["object"]["items"]["data"] = [_item(unit_amount=9900)]
    for order in ([created, upgraded], [upgraded, created]):
        store = InMemoryEventStore()
        for event in order:
            await IngestEvents(store).execute([incoming("stripe", event)])
        [row] = store.subscriptions.values()
        assert (row.price_amount, row.price_currency) == (9900, "USD")


async def test_a_trial_ending_is_told_once_while_the_subscription_is_still_in_its_trial():
    s = StripeScenario()
    checkout, notice = s.event("checkout.session.completed"), s.event("customer.subscription.trial_will_end")
    ends = notice["data"]["object"]["trial_end"]
    store = InMemoryEventStore()
    for event in (checkout, notice, notice):  # Stripe may deliver the notice twice
        await IngestEvents(store).execute([incoming("stripe", event)])
    [told] = [i for i in store.outbox.values() if i.kind == "subscription_trial_ending"]
    assert told.to_email == "buyer@example.com"
    assert told.content == SubscriptionTrialEnding(plan="Pro monthly", trial_end=datetime.fromtimestamp(ends, UTC),
                                                   price=Money(4999, "USD"))


@pytest.mark.parametrize("batched", [False, True])
async def test_a_trial_notice_that_comes_before_the_customers_address_is_sent_when_the_address_comes(batched):
    s = StripeScenario()
    checkout, notice = s.event("checkout.session.completed"), s.event("customer.subscription.trial_will_end")
    events = [incoming("stripe", notice), incoming("stripe", checkout), incoming("stripe", notice)]
    store = InMemoryEventStore()
    for batch in ([events] if batched else [[e] for e in events]):
        await IngestEvents(store).execute(batch)
    [told] = [i for i in store.outbox.values() if i.kind == "subscription_trial_ending"]
    assert told.to_email == "buyer@example.com" and told.tenant_id
    [sub] = store.subscriptions.values()
    assert sub.trial_ends == datetime.fromtimestamp(notice["data"]["object"]["trial_end"], UTC)


async def test_a_trial_notice_received_after_the_trial_ended_tells_nothing():
    # Recovered from Stripe's list days later, before the event that converted the trial.
    s = StripeScenario()
    checkout, notice = s.event("checkout.session.completed"), s.event("customer.subscription.trial_will_end")
    late = replace(incoming("stripe", notice),
                   received_at=datetime.fromtimestamp(notice["data"]["object"]["trial_end"] + 60, UTC))
    outbox = await outbox_after([incoming("stripe", checkout), late])
    assert "subscription_trial_ending" not in kinds(outbox)


async def test_a_trial_notice_that_comes_after_the_trial_converted_tells_nothing():
    s = StripeScenario()
    events = [s.event("checkout.session.completed"), s.event("customer.subscription.trial_will_end"),
              s.event("customer.subscription.updated")]  # the trial ended: active, and charged
    outbox = await outbox_after([incoming("stripe", e) for e in (events[0], events[2], events[1])])
    assert "subscription_trial_ending" not in kinds(outbox)


@pytest.mark.parametrize(("metadata_locale", "asked"), [("hi-IN", "hi-IN"), ("en", "en"), ("klingon", ""),
                                                        (None, ""), (7, "")])
async def test_a_customers_language_from_the_platforms_metadata_goes_with_their_emails(metadata_locale, asked):
    s = StripeScenario(tenant_id="t1")
    paid = s.event("payment_intent.succeeded")
    paid["data"]["object"]["metadata"]["locale"] = metadata_locale
    outbox = await outbox_after([incoming("stripe", paid)])
    [receipt] = outbox.values()
    assert receipt.locale == asked  # a tag that is no locale is left out, and the event is applied all the same


async def test_a_checkouts_language_goes_with_the_subscriptions_emails():
    s = StripeScenario(tenant_id="t1", checkout_mode="subscription")
    checkout = s.event("checkout.session.completed")
    checkout["data"]["object"]["locale"] = "hi"
    outbox = await outbox_after([incoming("stripe", e) for e in (checkout, s.event("customer.subscription.created"))])
    assert [(i.kind, i.locale) for i in outbox.values()] == [("subscription_activated", "hi")]
