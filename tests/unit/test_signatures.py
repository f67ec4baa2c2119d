"""Webhook signatures: known-answer vectors, and agreement with the providers' own SDKs."""

from __future__ import annotations

import time

import pytest
import razorpay
import stripe
from gateway.domain.signatures import (
    SignatureError,
    razorpay_signature,
    stripe_signature,
    verify_razorpay,
    verify_stripe,
)
from trigger.delivery import razorpay_header, stripe_header

# Known answers, computed independently (openssl dgst -sha256 -hmac).
STRIPE_KAT = ("whsec_test", 1700000000, b'{"a":1}',
              "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789")
RAZORPAY_KAT = ("rzp_test", b'{"event":"payment.captured"}',
                "b3891aae40bcc9af7a26982b524b82b576e2257581ebec6f4bc745d71c11686f")
BODY = b'{"id": "evt_1", "type": "payment_intent.succeeded", "created": 1700000000, "data": {"object": {}}}'


def test_stripe_signature_matches_known_answer():
    secret, t, body, expected = STRIPE_KAT
    assert stripe_signature(secret, t, body) == expected
    assert verify_stripe(f"t={t},v1={expected}", body, [secret], now=t, tolerance=300) == t


def test_razorpay_signature_matches_known_answer():
    secret, body, expected = RAZORPAY_KAT
    assert razorpay_signature(secret, body) == expected
    verify_razorpay(expected, body, [secret])


def test_stripe_sdk_signed_header_is_accepted():
    now = int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), "whsec_abc", timestamp=now)
    assert verify_stripe(header, BODY, ["whsec_abc"], now=now, tolerance=300) == now


def test_header_we_accept_is_accepted_by_stripe_sdk_and_wrong_secret_by_neither():
    header = stripe_header(BODY, "whsec_abc")
    now = time.time()
    verify_stripe(header, BODY, ["whsec_abc"], now=now, tolerance=300)
    assert stripe.WebhookSignature.verify_header(BODY.decode(), header, "whsec_abc", tolerance=300)
    with pytest.raises(SignatureError):
        verify_stripe(header, BODY, ["whsec_other"], now=now, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY.decode(), header, "whsec_other", tolerance=300)


def test_razorpay_signature_agrees_with_razorpay_sdk():
    body = b'{"event":"order.paid","payload":{}}'
    signature = razorpay_header(body, "rzp_secret")
    verify_razorpay(signature, body, ["rzp_secret"])
    assert razorpay.Utility().verify_webhook_signature(body.decode(), signature, "rzp_secret")
    with pytest.raises(SignatureError):
        verify_razorpay(signature, body, ["rzp_other"])
    with pytest.raises(razorpay.errors.SignatureVerificationError):
        razorpay.Utility().verify_webhook_signature(body.decode(), signature, "rzp_other")


def test_any_configured_secret_verifies_during_rotation():
    header = stripe_header(BODY, "whsec_new")
    verify_stripe(header, BODY, ["whsec_old", "whsec_new"], now=time.time(), tolerance=300)
    verify_razorpay(razorpay_header(BODY, "rzp_new"), BODY, ["rzp_old", "rzp_new"])


def test_any_of_several_v1_signatures_may_match():
    t = int(time.time())
    header = f"t={t},v1={'0' * 64},v1={stripe_signature('whsec_abc', t, BODY)},v0=ignored"
    assert verify_stripe(header, BODY, ["whsec_abc"], now=t, tolerance=300) == t


@pytest.mark.parametrize("offset", [-301, 301, -86400, 86400])
def test_stripe_timestamp_outside_tolerance_is_refused_in_both_directions(offset):
    t = int(time.time())
    header = stripe_header(BODY, "whsec_abc", timestamp=t + offset)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_stripe(header, BODY, ["whsec_abc"], now=t, tolerance=300)


def test_stripe_signature_over_other_body_is_refused():
    header = stripe_header(BODY, "whsec_abc")
    with pytest.raises(SignatureError):
        verify_stripe(header, BODY + b" ", ["whsec_abc"], now=time.time(), tolerance=300)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "t=,v1=abc", "t=abc,v1=abc", "v1=abc", "t=1700000000", "t=1700000000,v0=abc",
     "t=99999999999999999999,v1=abc", "t=-5,v1=abc"],
)
def test_malformed_stripe_headers_are_refused(header):
    with pytest.raises(SignatureError):
        verify_stripe(header, BODY, ["whsec_abc"], now=1700000000, tolerance=300)


@pytest.mark.parametrize("header", [None, "", "zz", "a" * 64, razorpay_signature("rzp_secret", b"{}").upper()])
def test_bad_razorpay_signatures_are_refused(header):
    with pytest.raises(SignatureError):
        verify_razorpay(header, b"{}", ["rzp_secret"])
