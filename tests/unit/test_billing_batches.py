"""The gateway keeps billing busy: once billing answers a batch, the next batch's call starts before the
webhooks of the answered batch are written back. Billing is not left idle while the gateway answers."""

from __future__ import annotations

import asyncio

from gateway.adapters.billing_client import BatchingBillingClient

from tests.fakes import RecordingBilling, gateway_event
from tests.support import wait_for


class _Call:
    """A unary call as grpc.aio makes one: its invocation runs in a task made with the call."""

    def __init__(self, invocation) -> None:
        self._task = asyncio.get_running_loop().create_task(invocation)

    def __await__(self):
        return self._task.__await__()


class _Channel:
    """A channel to billing's servicer in this process, calling it as grpc.aio would."""

    def __init__(self, servicer: RecordingBilling) -> None:
        self._servicer = servicer

    def unary_unary(self, _method: str, *_args, **_kwargs):
        return lambda request, **_options: _Call(self._servicer.IngestEvents(request, None))

    unary_stream = unary_unary  # the health stub's Watch, never called here

    async def close(self) -> None:
        pass


async def test_the_next_batch_goes_to_billing_before_the_last_batchs_webhooks_are_answered():
    billing = RecordingBilling(stalled=True)
    client = BatchingBillingClient(_Channel(billing), timeout_seconds=5, max_in_flight=1)
    calls_when_answered: dict[str, int] = {}

    async def webhook(event_id: str) -> str:
        result = await client.ingest(gateway_event(event_id))
        calls_when_answered[event_id] = len(billing.calls)
        return result.status

    async def first_call_in_flight() -> bool:
        return billing.calls == [["evt_1"]]

    try:
        webhooks = [asyncio.ensure_future(webhook("evt_1"))]
        await wait_for(first_call_in_flight, timeout=5, what="the first call")
        webhooks += [asyncio.ensure_future(webhook(event_id)) for event_id in ("evt_2", "evt_3")]

        async def both_queued() -> bool:  # behind the call in flight
            return client.queued_events == 2

        await wait_for(both_queued, timeout=5, what="both events to join the queue")
        billing.release.set()
        statuses = await asyncio.gather(*webhooks)
    finally:
        await client.close()
    assert statuses == ["processed"] * 3
    assert billing.calls == [["evt_1"], ["evt_2", "evt_3"]]
    # evt_1's webhook was answered only once billing had the next batch.
    assert calls_when_answered == {"evt_1": 2, "evt_2": 2, "evt_3": 2}
