"""The gateway's billing client over real gRPC: each webhook gets its own event's answer, and a call that
fails gets every webhook of it a 503-bound BillingUnavailable, never a hang or a leaked error."""

from __future__ import annotations

import asyncio
import gc

import pytest
from gateway.adapters.billing_client import BatchingBillingClient, open_channel
from gateway.domain.receive import BillingUnavailable
from servicekit.tls import PLAINTEXT

from tests.fakes import RecordingBilling, gateway_event, serving_billing
from tests.support import wait_for


@pytest.fixture
async def billing():
    async for served in serving_billing(RecordingBilling()):
        yield served


@pytest.fixture
async def stalled():
    async for served in serving_billing(RecordingBilling(stalled=True)):
        yield served


@pytest.fixture
async def leaked_errors():
    """What the event loop would report as an exception nobody retrieved."""
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    yield reported
    loop.set_exception_handler(None)


async def test_concurrent_webhooks_each_get_their_own_events_answer(billing):
    servicer, addr = billing
    client = BatchingBillingClient(open_channel(addr, PLAINTEXT), timeout_seconds=5)
    try:
        results = await asyncio.gather(*(client.ingest(gateway_event(f"evt_{i}")) for i in range(50)))
    finally:
        await client.close()
    assert [r.transaction_ids for r in results] == [(f"txn-of-evt_{i}",) for i in range(50)]
    assert sorted(e for call in servicer.calls for e in call) == sorted(f"evt_{i}" for i in range(50))


async def test_a_call_that_fails_before_billing_answers_fails_its_webhooks_and_nothing_leaks(
        billing, leaked_errors):
    servicer, addr = billing
    client = BatchingBillingClient(open_channel(addr, PLAINTEXT), timeout_seconds=5)
    try:
        # gRPC refuses this metadata before sending (the gateway's edge never passes such an id on).
        with pytest.raises(BillingUnavailable):
            await client.ingest(gateway_event("evt_refused", request_id="caf\u00e9"))
        after = await client.ingest(gateway_event("evt_next"))
    finally:
        await client.close()
    gc.collect()
    assert after.status == "processed"
    assert servicer.calls == [["evt_next"]]
    assert leaked_errors == []


async def test_a_call_grpc_refuses_to_make_fails_its_webhooks_at_once_and_later_ones_still_get_an_answer(
        billing, leaked_errors):
    _, addr = billing
    channel = open_channel(addr, PLAINTEXT)
    client = BatchingBillingClient(channel, timeout_seconds=30)
    await channel.close()  # a closed channel refuses a call as it is made, not once it runs
    try:
        for event_id in ("evt_1", "evt_2"):
            # Well within the timeout: the batch is answered as refused, and the client goes on batching.
            with pytest.raises(BillingUnavailable, match="UsageError"):
                await asyncio.wait_for(client.ingest(gateway_event(event_id)), timeout=5)
    finally:
        await client.close()
    gc.collect()
    assert leaked_errors == []


async def test_a_burst_of_large_events_goes_in_calls_within_the_byte_budget(billing):
    servicer, addr = billing
    client = BatchingBillingClient(open_channel(addr, PLAINTEXT), timeout_seconds=5, max_batch_bytes=3000,
                                   max_in_flight=1)
    try:
        sizes = [1000] * 9 + [5000]  # the last is over the budget on its own
        results = await asyncio.gather(*(client.ingest(gateway_event(f"evt_{i}", payload=b"x" * size))
                                         for i, size in enumerate(sizes)))
    finally:
        await client.close()
    assert all(r.status == "processed" for r in results)
    size_of = {f"evt_{i}": size for i, size in enumerate(sizes)}
    assert all(len(call) == 1 or sum(size_of[e] for e in call) <= 3000 for call in servicer.calls)
    assert ["evt_9"] in servicer.calls
    assert sorted(e for call in servicer.calls for e in call) == sorted(size_of)


async def test_a_webhook_queued_behind_a_stalled_call_waits_no_longer_than_the_timeout_and_is_not_sent(
        stalled, leaked_errors):
    servicer, addr = stalled
    # A call slot frees only when the stalled call runs out of time; an event with under half its time left
    # by then is refused rather than sent.
    client = BatchingBillingClient(open_channel(addr, PLAINTEXT), timeout_seconds=2.0, max_in_flight=1,
                                   min_send_seconds=1.0)
    loop = asyncio.get_running_loop()
    try:
        in_flight = asyncio.ensure_future(client.ingest(gateway_event("evt_in_flight")))
        while not servicer.calls:  # the one call slot is taken, and billing does not answer
            await asyncio.sleep(0.005)
        started = loop.time()
        with pytest.raises(BillingUnavailable, match="did not answer within 2 s"):
            await client.ingest(gateway_event("evt_queued"))
        waited = loop.time() - started
        with pytest.raises(BillingUnavailable):
            await in_flight
        servicer.release.set()
        after = await client.ingest(gateway_event("evt_after"))
    finally:
        await client.close()
    gc.collect()
    # Answered within its own timeout (2 s), not after the stalled call's timeout and a call of its own (4 s).
    assert waited < 3, waited
    assert after.status == "processed"
    # The refused event was never sent: its provider will deliver it again.
    assert [e for call in servicer.calls for e in call] == ["evt_in_flight", "evt_after"]
    assert leaked_errors == []


async def test_events_waiting_past_the_byte_bound_are_refused_at_once(stalled):
    servicer, addr = stalled
    client = BatchingBillingClient(open_channel(addr, PLAINTEXT), timeout_seconds=30, max_in_flight=1,
                                   max_queued_bytes=2500)
    try:
        first = asyncio.ensure_future(client.ingest(gateway_event("evt_0", payload=b"x" * 1000)))
        while not servicer.calls:
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(client.ingest(gateway_event(f"evt_{i}", payload=b"x" * 1000))) for i in (1, 2)]

        async def both_queued() -> bool:
            return client.queued_events == 2

        await wait_for(both_queued, timeout=5, what="both events to join the queue")
        with pytest.raises(BillingUnavailable, match="too many events are waiting"):
            await client.ingest(gateway_event("evt_3", payload=b"x" * 1000))
        servicer.release.set()
        results = await asyncio.gather(first, *queued)
        # Once the queue drained, events are let in again.
        after = await client.ingest(gateway_event("evt_4", payload=b"x" * 1000))
    finally:
        await client.close()
    assert [r.status for r in results] == ["processed"] * 3 and after.status == "processed"
    assert sorted(e for call in servicer.calls for e in call) == ["evt_0", "evt_1", "evt_2", "evt_4"]
