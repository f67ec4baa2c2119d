"""Requests PostgreSQL could not store: the NUL character is found wherever it hides, and named."""

from __future__ import annotations

from boxcost.billing.v1 import billing_pb2
from boxcost.notifier.v1 import notifier_pb2
from servicekit.grpcserve import nul_field


def test_a_clean_request_has_no_nul_field():
    request = billing_pb2.IngestEventsRequest(events=[billing_pb2.WebhookEvent(event_id="e", payload=b"\x00 bytes")])
    assert nul_field(request) is None


def test_nul_is_found_in_top_level_nested_and_repeated_strings():
    assert nul_field(billing_pb2.GetTransactionRequest(tenant_id="t\x00", id="x")) == "tenant_id"
    assert nul_field(notifier_pb2.SendEmailRequest(content=notifier_pb2.EmailContent(
        to=notifier_pb2.Recipient(email="a@b.co", name="A\x00")))) == "content.to.name"
    events = [billing_pb2.WebhookEvent(event_id="ok"), billing_pb2.WebhookEvent(event_id="ok", event_type="\x00")]
    assert nul_field(billing_pb2.IngestEventsRequest(events=events)) == "events[1].event_type"
    assert nul_field(billing_pb2.IngestEventsResponse(results=[
        billing_pb2.IngestResult(transaction_ids=["a", "b\x00"])])) == "results[0].transaction_ids[1]"


def test_nul_is_found_in_a_map_key_or_value():
    clean = billing_pb2.WebhookEvent(event_id="e", headers={"stripe-signature": "t=1,v1=ab"})
    assert nul_field(billing_pb2.IngestEventsRequest(events=[clean])) is None
    valued = billing_pb2.WebhookEvent(event_id="e", headers={"user-agent": "x\x00"})
    assert nul_field(billing_pb2.IngestEventsRequest(events=[valued])) == "events[0].headers['user-agent']"
    keyed = billing_pb2.WebhookEvent(event_id="e", headers={"a\x00": "x"})
    assert nul_field(billing_pb2.IngestEventsRequest(events=[clean, keyed])) == "events[1].headers['a\\x00']"
