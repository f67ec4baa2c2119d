"""Rolling or crashing a service under load loses nothing: every webhook answered 2xx is committed,
whichever service gets SIGTERM (and exits 0) or SIGKILL mid-burst, and the provider's redelivery of
everything applies each event once."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest
from trigger.delivery import DeliveryPlan, Response, deliver, send, sign
from trigger.events import RazorpayScenario, StripeScenario

from tests.e2e.conftest import RAZORPAY_SECRET, STRIPE_SECRET


def deliveries(count: int):
    for i in range(count):
        if i % 2:
            yield sign("razorpay", RazorpayScenario().event("payment.captured"), RAZORPAY_SECRET)
        else:
            yield sign("stripe", StripeScenario().event("payment_intent.succeeded"), STRIPE_SECRET)


async def load(url: str, queue, answered: list[Response], failed: list, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        for delivery in queue:
            if stop.is_set():
                return
            try:
                answered.append(await send(session, url, delivery))
            except (aiohttp.ClientError, TimeoutError) as exc:  # refused once the gateway stopped listening
                failed.append((delivery, exc))


async def signal_mid_burst(stack, victim: str, sent, sig: int) -> tuple[list[Response], int | None]:
    """Send `sent` from 16 connections, signal the victim once 100 are answered, and stop sending once it
    has exited: the answers received, and its exit code."""
    queue = iter(sent)
    answered: list[Response] = []
    failed: list = []
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(stack.gateway_url, queue, answered, failed, stop)) for _ in range(16)]
    deadline = time.monotonic() + 30
    while len(answered) < 100:  # mid-burst: wait until the load is flowing
        assert time.monotonic() < deadline, "load did not start"
        await asyncio.sleep(0.01)
    service = stack.service(victim)
    service.signal(sig)
    code = await asyncio.to_thread(service.wait, 30)
    stop.set()
    await asyncio.gather(*workers)
    return answered, code


@pytest.mark.parametrize("victim", ["webhook-gateway", "billing"])
async def test_sigterm_under_load_commits_every_acknowledged_webhook(stack, db, victim):
    answered, code = await signal_mid_burst(stack, victim, list(deliveries(1500)), signal.SIGTERM)
    assert code == 0
    acknowledged = [r.delivery for r in answered if 200 <= r.status < 300]
    refused = [r for r in answered if not 200 <= r.status < 300]
    assert all(r.status == 503 for r in refused), {r.status for r in refused}
    stored = {(r["provider"], r["event_id"]) for r in await db.fetch("SELECT provider, event_id FROM billing.webhook_events")}
    assert acknowledged, "nothing was acknowledged before the shutdown"
    assert {(d.provider, d.event_id) for d in acknowledged} <= stored


@pytest.mark.parametrize("victim", ["webhook-gateway", "billing"])
async def test_a_crash_under_load_loses_nothing_acknowledged_and_redelivery_applies_each_event_once(
    stack, db, victim
):
    sent = list(deliveries(1000))
    answered, code = await signal_mid_burst(stack, victim, sent, signal.SIGKILL)
    assert code == -signal.SIGKILL
    acknowledged = {(r.delivery.provider, r.delivery.event_id) for r in answered if 200 <= r.status < 300}
    stored = {(r["provider"], r["event_id"])
              for r in await db.fetch("SELECT provider, event_id FROM billing.webhook_events")}
    assert acknowledged, "nothing was acknowledged before the crash"
    assert acknowledged <= stored
    assert len(stored) < len(sent), "the crash came after the last event: it proves nothing"

    # The provider delivers again every event it has no 2xx for, and (at least once) some it has: all of them.
    stack.service(victim).start()
    await stack.wait_ready()
    again = await deliver(stack.gateway_url, sent, DeliveryPlan(concurrent=True))
    assert {r.status for r in again} == {200}, [r.body for r in again if r.status != 200][:3]
    outcome = {(r.delivery.provider, r.delivery.event_id): r.body["processing_result"]["status"] for r in again}
    # Whatever billing committed before the crash, answered or not, is known; the rest is applied now.
    assert {key for key, status in outcome.items() if status == "duplicate"} == stored
    assert {status for key, status in outcome.items() if key not in stored} == {"processed"}
    # Each event was one new payment, with one receipt: none is there twice, none is missing.
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == len(sent)
    assert await db.fetchval("SELECT count(*) FROM billing.transactions WHERE status = 'succeeded'") == len(sent)
    assert await db.fetchval("SELECT count(DISTINCT idempotency_key) FROM billing.email_outbox "
                             "WHERE kind = 'payment_received'") == len(sent)
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == len(sent)
