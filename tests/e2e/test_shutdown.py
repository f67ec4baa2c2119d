"""Rolling a service under load loses nothing: every webhook answered 2xx is committed, whichever
service gets SIGTERM mid-burst, and the service exits 0."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from trigger.delivery import Response, send, sign
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


@pytest.mark.parametrize("victim", ["webhook-gateway", "billing"])
async def test_sigterm_under_load_commits_every_acknowledged_webhook(stack, db, victim):
    queue = iter(list(deliveries(1500)))
    answered: list[Response] = []
    failed: list = []
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(stack.gateway_url, queue, answered, failed, stop)) for _ in range(16)]
    deadline = time.monotonic() + 30
    while len(answered) < 100:  # mid-burst: wait until the load is flowing
        assert time.monotonic() < deadline, "load did not start"
        await asyncio.sleep(0.01)
    service = stack.service(victim)
    service.signal()
    code = await asyncio.to_thread(service.wait, 30)
    stop.set()
    await asyncio.gather(*workers)
    assert code == 0
    acknowledged = [r.delivery for r in answered if 200 <= r.status < 300]
    refused = [r for r in answered if not 200 <= r.status < 300]
    assert all(r.status == 503 for r in refused), {r.status for r in refused}
    stored = {(r["provider"], r["event_id"]) for r in await db.fetch("SELECT provider, event_id FROM billing.webhook_events")}
    assert acknowledged, "nothing was acknowledged before the shutdown"
    assert {(d.provider, d.event_id) for d in acknowledged} <= stored
