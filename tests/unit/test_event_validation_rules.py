"""Events billing cannot apply are kept as failed or ignored, with the reason, and never touch money."""

from __future__ import annotations

import pytest
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from trigger.events import RazorpayScenario, StripeScenario

from tests.fakes import InMemoryEventStore
from tests.support import incoming
from tests.unit.rules_support import ingest_one_by_one, with_fields


async def test_a_fractional_krona_from_stripe_is_kept_failed_naming_the_amount():
    # Stripe has refused fractional krónur since April 2023; one from before has no ISO minor unit to be.
    event = incoming("stripe", StripeScenario(amount=4010, currency="isk").event("payment_intent.succeeded"))
    store = await ingest_one_by_one([event])
    [record] = store.events.values()
    assert store.transactions == {} and record.status is Outcome.FAILED and "4010 ISK" in record.error


@pytest.mark.parametrize(("provider", "build", "what"), [
    ("stripe", lambda: with_fields(StripeScenario().event("customer.subscription.updated"), "data", "object"),
     "subscription status"),
    ("stripe", lambda: with_fields(StripeScenario().event("refund.failed"), "data", "object"), "refund status"),
    ("razorpay", lambda: with_fields(RazorpayScenario().event("refund.failed"), "payload", "refund", "entity"),
     "refund status"),
])
async def test_a_status_word_the_provider_added_is_kept_failed_naming_it_not_read_as_another(provider, build, what):
    event, obj = build()
    obj["status"] = "on_the_moon"
    store = InMemoryEventStore()
    [result] = await IngestEvents(store).execute([incoming(provider, event)])
    assert result.outcome is Outcome.FAILED and result.error.endswith(f": unknown {what} 'on_the_moon'")
    assert not store.transactions and not store.subscriptions


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
