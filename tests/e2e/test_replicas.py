"""Two processes of each service on one database: calls spread over the replicas, and every event is
applied once whichever replica takes it."""

from __future__ import annotations

import pytest
from devstack.stack import Stack
from trigger.delivery import DeliveryPlan, deliver

from tests.e2e.conftest import RAZORPAY_SECRET, STRIPE_SECRET
from tests.e2e.test_shutdown import deliveries, gateway_metric


@pytest.fixture
async def replicated(database_url, tmp_path, monkeypatch, mail_sink):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", RAZORPAY_SECRET)
    stack = Stack({"DATABASE_URL": database_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail_sink.port),
                   "SMTP_TLS": "none"}, log_dir=tmp_path, replicas=2, metrics=True)
    stack.start()
    try:
        await stack.wait_ready()
        yield stack
    finally:
        codes = stack.stop()
        assert set(codes.values()) == {0}, codes


async def events_applied(stack: Stack, replica: str) -> float:
    """How many events a billing replica applied, from its own metrics."""
    return await gateway_metric(stack.metrics_ports[replica], "billing_webhook_events_total") or 0.0


async def test_a_burst_through_the_gateways_reaches_both_billing_replicas_in_fair_shares(replicated, db):
    sent = list(deliveries(600))
    answers = await deliver(replicated.gateway_url, sent, DeliveryPlan(concurrent=True))
    assert {r.status for r in answers} == {200}
    shares = [await events_applied(replicated, name) for name in ("billing", "billing-2")]
    assert sum(shares) == len(sent)
    assert min(shares) >= len(sent) / 4, shares  # round robin over the replicas: about half each
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == len(sent)
