"""Two processes of each service on one database: calls spread over the replicas, and every event is
applied once whichever replica takes it."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import pytest
from devstack.stack import Stack
from notifier.domain.deliver import ROUND_SIZE
from trigger.delivery import DeliveryPlan, deliver

from tests.e2e.conftest import RAZORPAY_SECRET, STRIPE_SECRET, running
from tests.e2e.test_shutdown import deliveries, gateway_metric
from tests.support import wait_for


@pytest.fixture
async def replicated(database_url, tmp_path, monkeypatch, mail_sink):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", RAZORPAY_SECRET)
    # SMTP steps of at most 2 s: a lease runs out after 24 s, so the emails a killed notifier held are
    # sent by the other one within a test's time.
    monkeypatch.setenv("SMTP_TIMEOUT_SECONDS", "2")
    async with running(Stack({"DATABASE_URL": database_url, "SMTP_HOST": "127.0.0.1",
                              "SMTP_PORT": str(mail_sink.port), "SMTP_TLS": "none"},
                             log_dir=tmp_path, replicas=2, metrics=True)) as stack:
        yield stack


async def events_applied(stack: Stack, replica: str) -> float:
    """How many events a billing replica applied, from its own metrics."""
    return await gateway_metric(stack.metrics_ports[replica], "billing_webhook_events_total") or 0.0


async def test_a_burst_through_the_gateways_reaches_both_billing_replicas_in_turn(replicated, db):
    sent = list(deliveries(600))
    answers = await deliver(replicated.gateway_url, sent, DeliveryPlan(concurrent=True))
    assert {r.status for r in answers} == {200}
    shares = [await events_applied(replicated, name) for name in ("billing", "billing-2")]
    assert sum(shares) == len(sent) and min(shares) > 0, shares
    # Round robin, call by call: the replicas take about half the calls each. (Not half the events: the
    # events a call carries vary with how many were waiting when it was made.)
    calls = [await gateway_metric(replicated.metrics_ports[name], "billing_ingest_batch_events_count")
             for name in ("billing", "billing-2")]
    assert min(calls) >= sum(calls) / 3, calls
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == len(sent)


async def test_two_dispatchers_and_two_delivery_loops_never_claim_one_email_twice(replicated, db, mail_sink):
    payments = 300
    sent = [d for d in deliveries(payments * 2) if d.provider == "razorpay"]  # one receipt each
    assert {r.status for r in await deliver(replicated.gateway_url, sent, DeliveryPlan(concurrent=True))} == {200}

    async def all_sent() -> bool:
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == len(sent)

    await wait_for(all_sent, timeout=60, what="every receipt to be sent")
    # Each email was handed over once and sent once: no dispatcher or delivery loop took another's.
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox WHERE attempts <> 1") == 0
    assert await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE attempts <> 1") == 0
    copies = Counter(message["Message-ID"] for message in mail_sink.messages)
    assert len(copies) == len(sent) and set(copies.values()) == {1}
    # Both replicas of each did their part.
    handed = [await gateway_metric(replicated.metrics_ports[n], "notifier_emails_total", {"status": "sent"}) or 0
              for n in ("notifier", "notifier-2")]
    assert min(handed) > 0, handed


async def test_killing_a_billing_and_a_notifier_replica_mid_burst_loses_nothing_and_repeats_no_receipt(
        replicated, db, mail_sink, monkeypatch):
    sent = [d for d in deliveries(1200) if d.provider == "razorpay"]  # 600 payments, one receipt each

    async def sending() -> bool:
        return mail_sink.count >= 50

    burst = asyncio.ensure_future(deliver(replicated.gateway_url, sent, DeliveryPlan(concurrent=True)))
    await wait_for(sending, timeout=60, what="receipts to be sent")
    killed = [replicated.service(name) for name in ("billing-2", "notifier-2")]
    for service in killed:
        service.signal(signal.SIGKILL)
    try:
        # Mid-burst: receipts are still being handed over and sent (the webhooks may all be in by now).
        assert mail_sink.count < len(sent), "the kill came after the burst"
        await _check_nothing_lost_and_no_receipt_repeated(replicated, db, mail_sink, sent, await burst)
    finally:
        for service in killed:  # back, so that the stack stops cleanly
            assert service.wait(10) == -signal.SIGKILL
            service.start()
        await replicated.wait_ready()


async def _check_nothing_lost_and_no_receipt_repeated(replicated, db, mail_sink, sent, answers) -> None:
    # The provider delivers again every event it has no 2xx for, until it has one.
    unanswered = [r.delivery for r in answers if r.status != 200]
    for _ in range(5):
        if not unanswered:
            break
        again = await deliver(replicated.gateway_url, unanswered, DeliveryPlan(concurrent=True))
        unanswered = [r.delivery for r in again if r.status != 200]
    assert unanswered == []
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == len(sent)
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == len(sent)

    async def all_sent() -> bool:
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == len(sent)

    await wait_for(all_sent, timeout=120, what="every receipt to be sent")
    copies = Counter(message["Message-ID"] for message in mail_sink.messages)
    assert len(copies) == len(sent)  # every customer got their receipt
    repeated = {message_id for message_id, n in copies.items() if n > 1}
    # A repeat only of a send the relay accepted just before the kill, before its outcome was recorded:
    # within the killed worker's round at most, and the same message (same Message-ID) each time.
    assert len(repeated) <= ROUND_SIZE, len(repeated)
    bodies = {}
    for message in mail_sink.messages:
        bodies.setdefault(message["Message-ID"], set()).add(message.get_body(("plain",)).get_content())
    assert all(len(b) == 1 for b in bodies.values())


async def test_a_rolling_restart_under_load_answers_every_webhook_200_or_503_and_loses_nothing(replicated, db):
    from tests.e2e.test_shutdown import load

    queue = deliveries(200_000)  # made as they are sent: more than the restarts take
    answered, dropped = [], []
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(replicated.gateway_url, queue, answered, dropped, stop)) for _ in range(8)]
    try:
        for name in ("billing", "billing-2", "notifier", "notifier-2", "webhook-gateway", "webhook-gateway-2"):
            await wait_for(lambda: _answered_more(answered, 100), timeout=60, what="load between restarts")
            service = replicated.service(name)
            service.signal(signal.SIGTERM)
            assert await asyncio.to_thread(service.wait, 30) == 0
            service.start()
            await replicated.wait_ready()
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert dropped == [], [(d.error, d.delivery.event_id) for d in dropped[:5]]
    assert {r.status for r in answered} <= {200, 503}
    acknowledged = {(r.delivery.provider, r.delivery.event_id) for r in answered if r.status == 200}
    rows = await db.fetch("SELECT provider, event_id FROM billing.webhook_events")
    assert acknowledged <= {(r["provider"], r["event_id"]) for r in rows}


_marks: dict[int, int] = {}


async def _answered_more(answered: list, more: int) -> bool:
    """True once `more` answers came since the last time this returned True."""
    mark = _marks.setdefault(id(answered), 0)
    if len(answered) >= mark + more:
        _marks[id(answered)] = len(answered)
        return True
    return False
