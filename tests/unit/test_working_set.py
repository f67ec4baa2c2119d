"""The rows a batch works on: found by the ids events name, as those ids change within the batch."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from billing.domain.model import Provider, SubRef, Transaction, TxnRef, TxnStatus
from billing.domain.working_set import WorkingSet

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _row(row_id: str, **ids) -> Transaction:
    return Transaction(id=row_id, provider=Provider.STRIPE, status=TxnStatus.PENDING, status_at=AT, **ids)


def _stripe(**ids) -> TxnRef:
    return TxnRef(Provider.STRIPE, **ids)


def test_a_row_is_found_by_the_ids_it_has_now_not_those_it_had():
    ws = WorkingSet()
    ws.transactions = [_row("a", stripe_charge_id="ch_1")]
    ws.put_transaction(_row("a", stripe_payment_intent_id="pi_1", stripe_charge_id="ch_2"))
    assert ws.find_transaction(_stripe(stripe_payment_intent_id="pi_1")).id == "a"
    assert ws.find_transaction(_stripe(stripe_charge_id="ch_2")).id == "a"
    assert ws.find_transaction(_stripe(stripe_charge_id="ch_1")) is None
    assert ws.find_transaction(TxnRef(Provider.RAZORPAY, razorpay_payment_id="ch_2")) is None  # another provider


def test_of_rows_that_both_qualify_the_one_put_longest_ago_is_found():
    ws = WorkingSet()
    ws.transactions = [_row("a", stripe_charge_id="ch_1"), _row("b", stripe_charge_id="ch_1")]
    assert ws.find_transaction(_stripe(stripe_charge_id="ch_1")).id == "a"
    ws.put_transaction(_row("a", stripe_charge_id="ch_1", amount=5))  # put again: now the latest
    assert ws.find_transaction(_stripe(stripe_charge_id="ch_1")).id == "b"


def test_an_invoice_row_is_adopted_by_its_payment_intent_and_a_merged_row_is_gone():
    ws = WorkingSet()
    invoice, intent = _row("inv", stripe_invoice_id="in_1"), _row("pi", stripe_payment_intent_id="pi_1")
    ws.transactions = [invoice, intent]
    ref = _stripe(stripe_payment_intent_id="pi_1", stripe_invoice_id="in_1")
    found = ws.find_transaction(ref)
    assert (found.id, ws.find_twin(ref, found).id) == ("pi", "inv")
    ws.merge_transactions(invoice, intent, replace(invoice, stripe_payment_intent_id="pi_1"))
    assert ws.find_transaction(ref).id == "inv" and ws.find_twin(ref, ws.find_transaction(ref)) is None
    assert [t.id for t in ws.transactions] == ["inv"] and ws.merged_transactions == {"pi": "inv"}


def test_a_subscriptions_payments_are_listed_in_the_order_they_were_put():
    ws = WorkingSet()
    ws.transactions = [_row("b", stripe_subscription_id="sub_1"), _row("c", stripe_subscription_id="sub_2"),
                       _row("a", stripe_subscription_id="sub_1")]
    assert [t.id for t in ws.payments_of(SubRef(Provider.STRIPE, "sub_1"))] == ["b", "a"]
    assert ws.payments_of(SubRef(Provider.RAZORPAY, "sub_1")) == []


def test_restore_undoes_everything_done_after_the_snapshot():
    ws = WorkingSet()
    ws.transactions = [_row("a", stripe_charge_id="ch_1")]
    ws.emails.append("kept")
    before = ws.snapshot()
    ws.put_transaction(_row("a", stripe_charge_id="ch_9"))
    ws.put_transaction(_row("z", stripe_charge_id="ch_1"))
    ws.emails.append("dropped")
    ws.restore(before)
    assert [t.stripe_charge_id for t in ws.transactions] == ["ch_1"] and ws.changed_transactions == {}
    assert ws.find_transaction(_stripe(stripe_charge_id="ch_1")).id == "a"
    assert ws.find_transaction(_stripe(stripe_charge_id="ch_9")) is None and ws.emails == ["kept"]
