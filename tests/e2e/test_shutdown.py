"""Rolling or crashing a service under load loses nothing: every webhook answered 2xx is committed,
whichever service gets SIGTERM (and exits 0) or SIGKILL mid-burst, and the provider's redelivery of
everything applies each event once."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from trigger.delivery import DeliveryPlan, Response, deliver, send, sign
from trigger.events import RazorpayScenario, StripeScenario

from tests.e2e.conftest import RAZORPAY_SECRET, STRIPE_SECRET
from tests.support import wait_for


def deliveries(count: int):
    for i in range(count):
        if i % 2:
            yield sign("razorpay", RazorpayScenario().event("payment.captured"), RAZORPAY_SECRET)
        else:
            yield sign("stripe", StripeScenario().event("payment_intent.succeeded"), STRIPE_SECRET)


async def gateway_metric(port: int, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The sum of a service's metric samples named `name` (with these labels), None when there are none
    or the endpoint is unreachable."""
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return None
    values = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == name and (labels is None or labels.items() <= sample.labels.items())]
    return sum(values) if values else None


@dataclass(frozen=True)
class Dropped:
    """A request that got no HTTP answer: the connection refused, reset or closed under it."""

    delivery: object
    started: float
    error: BaseException


async def load(url: str, queue, answered: list[Response], dropped: list[Dropped], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        for delivery in queue:
            if stop.is_set():
                return
            started = time.monotonic()
            try:
                answered.append(await send(session, url, delivery))
            except (aiohttp.ClientError, TimeoutError) as exc:
                dropped.append(Dropped(delivery, started, exc))


@dataclass
class Burst:
    answered: list[Response]
    dropped: list[Dropped]
    signalled_at: float
    exit_code: int | None

    def dropped_before_the_signal(self) -> list[Dropped]:
        return [d for d in self.dropped if d.started < self.signalled_at]


async def signal_mid_burst(stack, victim: str, sent, sig: int) -> Burst:
    """Send `sent` from 16 connections, signal the victim once 100 are answered, and stop sending once it
    has exited."""
    queue = iter(sent)
    answered: list[Response] = []
    dropped: list[Dropped] = []
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(stack.gateway_url, queue, answered, dropped, stop)) for _ in range(16)]
    deadline = time.monotonic() + 30
    while len(answered) < 100:  # mid-burst: wait until the load is flowing
        assert time.monotonic() < deadline, "load did not start"
        await asyncio.sleep(0.01)
    service = stack.service(victim)
    signalled_at = time.monotonic()
    service.signal(sig)
    code = await asyncio.to_thread(service.wait, 30)
    stop.set()
    await asyncio.gather(*workers)
    return Burst(answered, dropped, signalled_at, code)


@pytest.mark.parametrize("victim", ["webhook-gateway", "billing"])
async def test_sigterm_under_load_answers_every_webhook_and_commits_every_acknowledged_one(stack, db, victim):
    burst = await signal_mid_burst(stack, victim, list(deliveries(1500)), signal.SIGTERM)
    assert burst.exit_code == 0
    # Every webhook sent before the signal got an answer, 200 or 503: none had its connection dropped. With
    # the gateway up throughout (billing signalled), none at all did.
    dropped = burst.dropped if victim == "billing" else burst.dropped_before_the_signal()
    assert dropped == [], [(d.error, d.started - burst.signalled_at) for d in dropped[:5]]
    assert {r.status for r in burst.answered} <= {200, 503}
    acknowledged = [r.delivery for r in burst.answered if r.status == 200]
    rows = await db.fetch("SELECT provider, event_id FROM billing.webhook_events")
    stored = {(r["provider"], r["event_id"]) for r in rows}
    assert acknowledged, "nothing was acknowledged before the shutdown"
    assert {(d.provider, d.event_id) for d in acknowledged} <= stored


@pytest.mark.parametrize("victim", ["webhook-gateway", "billing"])
async def test_a_crash_under_load_loses_nothing_acknowledged_and_redelivery_applies_each_event_once(
    stack, db, victim
):
    sent = list(deliveries(1000))
    burst = await signal_mid_burst(stack, victim, sent, signal.SIGKILL)
    assert burst.exit_code == -signal.SIGKILL
    acknowledged = {(r.delivery.provider, r.delivery.event_id) for r in burst.answered if 200 <= r.status < 300}
    stored = {(r["provider"], r["event_id"])
              for r in await db.fetch("SELECT provider, event_id FROM billing.webhook_events")}
    assert acknowledged, "nothing was acknowledged before the crash"
    assert acknowledged <= stored
    assert len(stored) < len(sent), "the crash came after the last event: it proves nothing"

    # The provider delivers again every event it has no 2xx for, and (at least once) some it has: all of them.
    stack.service(victim).start()
    await stack.wait_ready()
    # A killed gateway's last calls may still be committing in billing, which lives on: read what is
    # committed once the restart is done, before redelivery.
    committed = {(r["provider"], r["event_id"])
                 for r in await db.fetch("SELECT provider, event_id FROM billing.webhook_events")}
    assert stored <= committed
    again = await deliver(stack.gateway_url, sent, DeliveryPlan(concurrent=True))
    assert {r.status for r in again} == {200}, [r.body for r in again if r.status != 200][:3]
    outcome = {(r.delivery.provider, r.delivery.event_id): r.body["processing_result"]["status"] for r in again}
    # Whatever billing committed before the crash, answered or not, is known; the rest is applied now.
    assert {key for key, status in outcome.items() if status == "duplicate"} == committed
    assert {status for key, status in outcome.items() if key not in committed} == {"processed"}
    # Each event was one new payment, with one receipt: none is there twice, none is missing.
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == len(sent)
    assert await db.fetchval("SELECT count(*) FROM billing.transactions WHERE status = 'succeeded'") == len(sent)
    assert await db.fetchval("SELECT count(DISTINCT idempotency_key) FROM billing.email_outbox "
                             "WHERE kind = 'payment_received'") == len(sent)
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == len(sent)


async def test_when_the_grace_period_runs_out_nothing_in_flight_is_acknowledged_and_redelivery_applies_it_once(
        database_url, tmp_path, mail_sink, monkeypatch, db):
    from devstack.stack import Stack, free_port

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", RAZORPAY_SECRET)
    metrics_port = free_port()
    stack = Stack({"DATABASE_URL": database_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail_sink.port),
                   "SMTP_TLS": "none", "BILLING_TIMEOUT_SECONDS": "30", "SHUTDOWN_GRACE_SECONDS": "1"},
                  log_dir=tmp_path, service_env={"webhook-gateway": {"METRICS_PORT": str(metrics_port)}})
    stack.start()
    billing, gateway = stack.service("billing"), stack.service("webhook-gateway")
    sent = list(deliveries(40))
    try:
        await stack.wait_ready()
        billing.signal(signal.SIGSTOP)  # billing stalls: every webhook waits, longer than the grace period
        in_flight = asyncio.ensure_future(deliver(stack.gateway_url, sent, DeliveryPlan(concurrent=True)))

        async def all_waiting() -> bool:  # received by the gateway, waiting for billing
            return await gateway_metric(metrics_port, "webhook_requests_in_flight") == len(sent)

        await wait_for(all_waiting, timeout=10, what="every webhook to wait for billing")
        started = time.monotonic()
        gateway.signal(signal.SIGTERM)
        assert await asyncio.to_thread(gateway.wait, 20) == 0
        assert time.monotonic() - started < 10  # the grace period (1 s) ended the wait, not billing's timeout
        answers = await asyncio.gather(in_flight, return_exceptions=True)
        # Cut off at the grace period: no webhook was acknowledged, so the provider delivers each again.
        assert not any(isinstance(a, list) and any(r.status == 200 for r in a) for a in answers)
        billing.signal(signal.SIGCONT)
        gateway.start()
        await stack.wait_ready()
        again = await deliver(stack.gateway_url, sent, DeliveryPlan(concurrent=True))
        assert {r.status for r in again} == {200}
        assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == len(sent)
        assert await db.fetchval("SELECT count(*) FROM billing.transactions") == len(sent)
    finally:
        billing.signal(signal.SIGCONT)
        assert set(stack.stop().values()) <= {0}
