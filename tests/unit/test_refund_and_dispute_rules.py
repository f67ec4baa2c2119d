"""Refunds and disputes: what each report changes, whatever their order, and what finance hears of."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.model import TxnStatus
from trigger.events import RazorpayScenario, StripeScenario
from trigger.flows import FLOWS

from tests.fakes import InMemoryEventStore
from tests.support import incoming
from tests.unit.rules_support import flow_events, ingest_one_by_one, same_rows_in_every_order, after_partial_capture, partially_captured, refund_states


async def test_razorpay_payment_failed_then_captured_on_one_order_ends_captured_and_refunded_in_part():
    store = await ingest_one_by_one(flow_events("razorpay-payment"))
    [txn] = store.transactions.values()
    assert txn.status is TxnStatus.PARTIALLY_REFUNDED
    assert (txn.amount, txn.currency, txn.amount_refunded) == (125000, "INR", 31250)
    assert txn.failure_code == "BAD_REQUEST_ERROR"  # the failed attempt stays visible
    assert txn.razorpay_payment_id and txn.razorpay_order_id


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


async def test_a_partial_capture_records_the_amount_captured_and_its_release_refunds_nothing():
    # Manual capture of 30.00 of a 50.00 authorisation: Stripe releases the other 20.00 as a refund, and
    # may tell of it by charge.refunded. The customer paid 30.00 and got nothing back.
    s = StripeScenario(amount=5000)
    raw = [*partially_captured(s, 3000), after_partial_capture(s, 3000, [])]
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
    raw = [*partially_captured(s, 3000), after_partial_capture(s, 3000, refunds, listed=listed)]
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    assert (txn.amount, txn.amount_refunded, txn.status) == (3000, refunds[0], expected)
    assert [r.amount for r in txn.refunds] == (refunds if listed else [])
    [told] = [i for i in store.outbox.values() if i.kind == "payment_refunded"]
    assert told.content.refunded.amount_minor == refunds[0]


async def test_a_refund_that_fails_no_longer_counts_and_the_payment_shows_paid_in_any_order():
    # A refund can fail days later (the card was closed): the money is back with the merchant. The payment
    # was counted refunded in full for good before; now it is paid again, and says why.
    raw = FLOWS["stripe-refund-failed"].build("t1", "u1")
    store = await same_rows_in_every_order([incoming("stripe", e) for e in raw])
    [txn] = store.transactions.values()
    refund = raw[-1]["data"]["object"]
    assert (txn.status, txn.provider_status, txn.amount, txn.amount_refunded) == (
        TxnStatus.SUCCEEDED, "refund_failed", 4999, 0)
    assert refund_states(txn) == {refund["id"]: (4999, "failed", "expired_or_canceled_card")}
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
    assert refund_states(txn)[failed] == (200, "failed", "expired_or_canceled_card")
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
    assert (txn.status, txn.amount_refunded, refund_states(txn)) == (
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
