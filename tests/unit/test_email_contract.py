"""Billing's typed emails reach the notifier field for field, through the proto and the outbox's bytes."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import pytest
from billing.adapters.email_messages import appendix, email_content, from_stored, stored
from billing.domain import email_contents as c
from billing.domain.notifications import EmailAmendment, EmailIntent
from notifier.api.content_codec import decode_content
from notifier.domain.model import validate

WHEN = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
USD = c.Money(4999, "USD")
EVERY_FIELD_SET = [
    c.PaymentReceived(transaction_id="t1", amount=USD, payment_date=WHEN, payment_method="Visa",
                      receipt_url="https://pay.stripe.com/receipts/payment/x"),
    c.PaymentFailed(amount=USD, reason="Your card was declined.", retry_url="https://invoice.stripe.com/i/x"),
    c.PaymentActionRequired(amount=USD, action_url="https://invoice.stripe.com/i/x",
                            instructions="Your bank asks you to confirm this payment."),
    c.PaymentRefunded(transaction_id="t1", refunded=c.Money(1000, "USD"), original=USD, full=True),
    c.PaymentRefundFailed(transaction_id="t1", amount=USD, reason="the card was reported lost or stolen"),
    c.SubscriptionActivated(plan="Pro monthly", price=USD, next_billing_date=WHEN),
    c.SubscriptionCancelled(plan="Pro monthly", effective_date=WHEN, ended=True),
    c.SubscriptionTrialEnding(plan="Pro monthly", trial_end=WHEN, price=USD),
]


def test_every_kind_billing_sends_is_in_the_contract_test():
    assert sorted(content.kind for content in EVERY_FIELD_SET) == sorted(c.EMAIL_KINDS)


def _intent(content) -> EmailIntent:
    return EmailIntent(f"k:{content.kind}", "acme", "u1", "asha@example.com", "Asha", content)


@pytest.mark.parametrize("content", EVERY_FIELD_SET, ids=lambda content: content.kind)
def test_every_field_billing_sets_is_what_the_notifier_reads(content):
    request = validate(decode_content(from_stored(content.kind, stored(_intent(content)))))
    assert (request.kind.value, request.tenant_id, request.to_email, request.to_name) == (
        content.kind, "acme", "asha@example.com", "Asha")
    for field in fields(content):
        sent, read = getattr(content, field.name), getattr(request.content, field.name)
        if isinstance(sent, c.Money):
            read = c.Money(read.amount_minor, read.currency)
        assert read == sent, field.name


@pytest.mark.parametrize(("kind", "link"), [("payment_received", "receipt_url"), ("payment_failed", "retry_url")])
def test_a_link_appended_to_a_stored_email_is_read_as_part_of_it(kind, link):
    # The outbox adds a late link by appending bytes; protobuf merges concatenated messages on reading.
    [content] = [e for e in EVERY_FIELD_SET if e.kind == kind]
    intent = _intent(content.amended(link, "https://first.example/old"))
    amendment = EmailAmendment(intent.idempotency_key, kind, link, "https://pay.example/new")
    appended = stored(intent) + appendix(kind, link, amendment.value)
    assert from_stored(kind, appended) == email_content(intent.amended(amendment))


def test_a_field_billing_leaves_unset_is_absent_not_empty_text():
    content = c.PaymentFailed(amount=USD)
    message = email_content(_intent(content)).payment_failed
    assert [f.name for f, _ in message.ListFields()] == ["amount"]
