"""What the gateway puts on the wire to billing: the event as received, to the microsecond."""

from __future__ import annotations

from datetime import UTC, datetime

from boxcost.billing.v1 import billing_pb2
from gateway.adapters.billing_client import _to_pb
from gateway.domain.receive import AuthenticatedEvent, Provider
from hypothesis import given
from hypothesis import strategies as st


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_received_at_crosses_exactly(received_at):
    event = AuthenticatedEvent(Provider.RAZORPAY, "evt_1", "payment.captured", b"{}", received_at, "req-1")
    wire = _to_pb(event)
    assert wire.received_at.ToDatetime(tzinfo=UTC) == received_at
    assert 0 <= wire.received_at.nanos < 1_000_000_000


def test_the_event_is_carried_as_received():
    received_at = datetime(2026, 3, 14, 9, 30, 0, 123456, tzinfo=UTC)
    wire = _to_pb(AuthenticatedEvent(Provider.STRIPE, "evt_1", "charge.refunded", b'{"id":"evt_1"}', received_at,
                                     "req-9"))
    assert (wire.provider, wire.event_id, wire.event_type, wire.payload, wire.request_id) == (
        billing_pb2.PROVIDER_STRIPE, "evt_1", "charge.refunded", b'{"id":"evt_1"}', "req-9")
