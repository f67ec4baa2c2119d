"""The gateway keeps billing busy: once billing answers a batch, the next batch's call starts before the
webhooks of the answered batch are written back. Billing is not left idle while the gateway answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from boxcost.billing.v1 import billing_pb2
from gateway.adapters.billing_client import BatchingBillingClient
from gateway.domain.receive import AuthenticatedEvent, Provider

from tests.support import wait_for


class _Call:
    """A unary call as grpc.aio makes one: its invocation runs in a task made with the call."""

    def __init__(self, invocation) -> None:
        self._task = asyncio.get_running_loop().create_task(invocation)

    def __await__(self):
        return self._task.__await__()


class _Billing:
    """A channel to a billing that notes each batch it gets and answers a call when the test says so."""

    def __init__(self, timeline: list[str]) -> None:
        self.timeline = timeline
        self.answers: list[asyncio.Event] = []

    def unary_unary(self, _method: str, *_args, **_kwargs):
        return lambda request, **_options: _Call(self._ingest(request))

    unary_stream = unary_unary  # the health stub's Watch, never called here

    async def calls(self, count: int) -> bool:
        return len(self.answers) == count

    async def _ingest(self, request: billing_pb2.IngestEventsRequest) -> billing_pb2.IngestEventsResponse:
        self.timeline.append("billing got " + " ".join(e.event_id for e in request.events))
        answer = asyncio.Event()
        self.answers.append(answer)
        await answer.wait()
        return billing_pb2.IngestEventsResponse(results=[
            billing_pb2.IngestResult(event_id=e.event_id, status=billing_pb2.INGEST_STATUS_PROCESSED)
            for e in request.events])

    async def close(self) -> None:
        pass


def _event(event_id: str) -> AuthenticatedEvent:
    return AuthenticatedEvent(Provider.STRIPE, event_id, "payment_intent.succeeded", b"{}", datetime.now(UTC),
                              "req-1")


async def test_the_next_batch_goes_to_billing_before_the_last_batchs_webhooks_are_answered():
    timeline: list[str] = []
    billing = _Billing(timeline)
    client = BatchingBillingClient(billing, timeout_seconds=5, max_in_flight=1)

    async def webhook(event_id: str) -> None:
        result = await client.ingest(_event(event_id))
        timeline.append(f"answered {event_id} {result.status}")

    try:
        webhooks = [asyncio.ensure_future(webhook("evt_1"))]
        await wait_for(lambda: billing.calls(1), timeout=5, what="the first call")
        webhooks += [asyncio.ensure_future(webhook(event_id)) for event_id in ("evt_2", "evt_3")]
        await asyncio.sleep(0)  # let both join the queue behind the call in flight
        billing.answers[0].set()
        await wait_for(lambda: billing.calls(2), timeout=5, what="the second call")
        billing.answers[1].set()
        await asyncio.gather(*webhooks)
    finally:
        await client.close()
    assert timeline == ["billing got evt_1", "billing got evt_2 evt_3", "answered evt_1 processed",
                        "answered evt_2 processed", "answered evt_3 processed"]
