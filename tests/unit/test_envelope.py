"""The edge's reading of an authenticated body: only the provider's documented event shape passes."""

from __future__ import annotations

import json

import pytest
from gateway.domain.envelope import Envelope, InvalidEvent, parse_razorpay, parse_stripe
from trigger.events import RazorpayScenario, StripeScenario


def test_stripe_event_yields_id_and_type():
    event = StripeScenario().event("charge.refunded")
    assert parse_stripe(json.dumps(event).encode()) == Envelope(event["id"], "charge.refunded")


def test_razorpay_event_id_comes_from_the_header():
    body = json.dumps(RazorpayScenario().event("payment.captured")).encode()
    assert parse_razorpay(body, "evt_header1") == Envelope("evt_header1", "payment.captured")


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"\xff\xfe", b"[]", b"42", b'"evt"', b"null",
     b'{"type": "x", "created": 1, "data": {"object": {}}}',
     b'{"id": 7, "type": "x", "created": 1, "data": {"object": {}}}',
     b'{"id": "evt_1", "type": ["x"], "created": 1, "data": {"object": {}}}',
     b'{"id": "evt_1", "type": "x", "created": "1", "data": {"object": {}}}',
     b'{"id": "evt_1", "type": "x", "created": true, "data": {"object": {}}}',
     b'{"id": "evt_1", "type": "x", "created": 1, "data": []}',
     b'{"id": "evt_1", "type": "x", "created": 1, "data": {"object": "pi_1"}}',
     b'{"id": "evt_1", "type": "x", "created": 1, "data": {"object": {"name": "\\u0000"}}}',
     json.dumps({"id": "e" * 300, "type": "x", "created": 1, "data": {"object": {}}}).encode()],
)
def test_malformed_stripe_bodies_are_refused(body):
    with pytest.raises(InvalidEvent):
        parse_stripe(body)


@pytest.mark.parametrize(
    ("body", "event_id"),
    [(b'{"event": "payment.captured", "payload": {}, "created_at": 1}', None),
     (b'{"event": "payment.captured", "payload": {}, "created_at": 1}', ""),
     (b'{"payload": {}, "created_at": 1}', "evt_1"),
     (b'{"event": "payment.captured", "payload": [], "created_at": 1}', "evt_1"),
     (b'{"event": "payment.captured", "payload": {}}', "evt_1"),
     (b"[1, 2]", "evt_1")],
)
def test_malformed_razorpay_bodies_are_refused(body, event_id):
    with pytest.raises(InvalidEvent):
        parse_razorpay(body, event_id)
