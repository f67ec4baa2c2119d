"""Random requests at both webhook endpoints: never a 5xx, never anything handed to billing unless
genuinely signed and well-formed."""

from __future__ import annotations

import json

import pytest
from gateway.web.app import create_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trigger.delivery import razorpay_header, stripe_header

from tests.integration.test_gateway_http import RAZORPAY_SECRET, STRIPE_SECRET, FakeBilling, served
from tests.integration.test_gateway_http import settings as gateway_settings

header_names = st.sampled_from(["Stripe-Signature", "X-Razorpay-Signature", "X-Razorpay-Event-Id",
                                "Content-Type", "Content-Length", "X-Forwarded-For", "X-Request-Id"])
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(st.binary(max_size=2000), json_values.map(lambda v: json.dumps(v).encode()),
                   st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 5000)))


@pytest.fixture
async def client_and_billing():
    billing = FakeBilling()
    client = served(create_app(gateway_settings(), billing=billing))
    await client.start_server()
    yield client, billing
    await client.close()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(provider=st.sampled_from(["stripe", "razorpay"]), body=bodies,
       headers=st.dictionaries(header_names, header_values, max_size=5))
async def test_random_unsigned_requests_get_a_4xx_and_reach_nothing(client_and_billing, provider, body, headers):
    client, billing = client_and_billing
    headers.pop("Content-Length", None)
    response = await client.post(f"/webhooks/{provider}", data=body, headers=headers)
    assert 400 <= response.status < 500
    assert "error" in await response.json()
    assert billing.received == []


@FUZZ
@given(provider=st.sampled_from(["stripe", "razorpay"]), body=bodies, event_id=header_values)
async def test_random_signed_bodies_never_cause_a_5xx(client_and_billing, provider, body, event_id):
    client, billing = client_and_billing
    if provider == "stripe":
        headers = {"Stripe-Signature": stripe_header(body, STRIPE_SECRET)}
    else:
        headers = {"X-Razorpay-Signature": razorpay_header(body, RAZORPAY_SECRET), "X-Razorpay-Event-Id": event_id}
    before = len(billing.received)
    response = await client.post(f"/webhooks/{provider}", data=body, headers=headers)
    assert response.status in (200, 400)
    assert len(billing.received) == before + (response.status == 200)
