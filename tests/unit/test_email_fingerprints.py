"""The notifier tells a retried email from a different one with the same key by a digest of its content.
Emails accepted by an earlier release keep their stored digest, so the digest of a given request never
changes: a change here makes every retry of an email accepted before the upgrade a conflict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from boxcost.notifier.v1 import notifier_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from notifier.api.content_codec import decode_content
from notifier.domain.model import validate


def ts() -> Timestamp:
    t = Timestamp()
    t.FromDatetime(datetime(2026, 3, 14, 9, 30, tzinfo=UTC))
    return t


M = pb.Money(amount_minor=4999, currency="usd")
FULL = {
    "quote_created": pb.QuoteCreated(quote_number="Q-1", total=M, view_url="https://x.test/q", valid_until=ts()),
    "invoice_generated": pb.InvoiceGenerated(invoice_number="I-1", amount=M, due_date=ts(), pay_url="https://x.test/p"),
    "payment_received": pb.PaymentReceived(
        transaction_id="t1", amount=M, payment_method="Card", payment_date=ts(), receipt_url="https://x.test/r"
    ),
    "payment_failed": pb.PaymentFailed(amount=M, reason="declined", retry_url="https://x.test/r"),
    "payment_refunded": pb.PaymentRefunded(transaction_id="t1", refunded=M, original=M, full=True),
    "ticket_created": pb.TicketCreated(ticket_number="T-1", subject="s", ticket_url="https://x.test/t"),
    "ticket_updated": pb.TicketUpdated(
        ticket_number="T-1", subject="s", old_status="open", new_status="closed", ticket_url="https://x.test/t"
    ),
    "subscription_activated": pb.SubscriptionActivated(plan="Pro", price=M, next_billing_date=ts()),
    "subscription_cancelled": pb.SubscriptionCancelled(
        plan="Pro", effective_date=ts(), reactivation_url="https://x.test/a", ended=True
    ),
    "payment_refund_failed": pb.PaymentRefundFailed(transaction_id="t1", amount=M, reason="closed"),
    "subscription_trial_ending": pb.SubscriptionTrialEnding(plan="Pro", trial_end=ts(), price=M),
}
SPARSE = {
    "quote_created": pb.QuoteCreated(quote_number="Q-1", total=M, view_url="https://x.test/q"),
    "payment_received": pb.PaymentReceived(transaction_id="t1", amount=M, payment_date=ts()),
    "payment_failed": pb.PaymentFailed(amount=M),
    "payment_refunded": pb.PaymentRefunded(transaction_id="t1", refunded=M),
    "subscription_activated": pb.SubscriptionActivated(),
    "subscription_cancelled": pb.SubscriptionCancelled(effective_date=ts()),
    "payment_refund_failed": pb.PaymentRefundFailed(transaction_id="t1", amount=M),
    "subscription_trial_ending": pb.SubscriptionTrialEnding(trial_end=ts()),
}

PINNED = {
    "full": {
        "quote_created": "8b26d7a159f7fd7bac0bbbe8e42777d857a66fda37d75517ba083db61fdd3f58",
        "invoice_generated": "169b5fb7838f548bf7c8075a5d2084c88e3bfef9f23bd74bd2a16ff4920b0924",
        "payment_received": "916bb0c283f77a6d8451a3f3ae2e41ee98f903055b0be1a10ff7e50c779a20e1",
        "payment_failed": "524eac75bd2f65c4bf63644e214c4cb96ba097fbba07e35437cdfd8adc063ecf",
        "payment_refunded": "51a0627a1e834df75363f2306cc6f84a49e28bb7256147ce551b12d135f94cd5",
        "ticket_created": "9b5d4bc58f1857db15ea959a729fd218c48787c40221fd564ba6115016248cb4",
        "ticket_updated": "1432ace4a3a0489c392379350e198c1e4da624c14a1aa113366128f974c9e917",
        "subscription_activated": "852b71b0d2c7768bb49e8f2e03bba4311d1fd81866ff3420d2e930028bb8b316",
        "subscription_cancelled": "bcda3de125a8e3378b60e52fe96f2b69cb349c8a4d25de6b2079da318932ea23",
        "payment_refund_failed": "1638c2516899b49973e45fb27d0118835a20cf7623f5da28a19d2d1c2f1bf11c",
        "subscription_trial_ending": "611bc29eac8038c56dd977490c560e77b344f08b41601f02e235a70e06a9589f",
    },
    "sparse": {
        "quote_created": "cff82f0e1b19ab6db736f43d6d337302b5d1545047ea51baad6e47e9bc25abd0",
        "payment_received": "69f93509bb22fd45af4f143ce402985d31dd29fdfaf1df1b9f02add60b6708cf",
        "payment_failed": "602c968cf9ed4d52230b15773ecb2b4f941e28e05c936e4f4790983e8755da9c",
        "payment_refunded": "0878a1af96b2b0fb7b53d79b7699b8e919c8b6d7262acb382b574ae2db8ae3a9",
        "subscription_activated": "e9eee975b8af444e6b676b167ff4454c9add8b6a5063ebebfb910f422538ba03",
        "subscription_cancelled": "621dbf7ee004e7a5407f8f52c8b238897538745ebc0b14366bb2cf007ce7543b",
        "payment_refund_failed": "948a92c5b3ecb368978359dae7ebffadb3d36b5b5f52d5e8f281cd1a51b6de34",
        "subscription_trial_ending": "fc86d493ba2c4d636adb2b38fa2f7fc1526a30fc405f1ef27ac9d07cafa04980",
    },
}

CASES = [(label, kind, data[kind]) for label, data in (("full", FULL), ("sparse", SPARSE)) for kind in data]


@pytest.mark.parametrize(("label", "kind", "message"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_the_digest_of_a_request_is_the_one_earlier_releases_stored(label, kind, message):
    content = pb.EmailContent(
        tenant_id="acme",
        user_id="u1",
        tenant_name="Acme Boxes",
        to=pb.Recipient(email="Asha@Example.com", name="Asha"),
        **{kind: message},
    )
    assert validate(decode_content(content)).fingerprint() == PINNED[label][kind]
