"""End-to-end: billing and the gateway as real processes, on a fresh database, driven over HTTP."""

from __future__ import annotations

import contextlib

import pytest
from devstack.mailsink import MailSink
from devstack.stack import Stack, free_port

STRIPE_SECRET = "whsec_e2e_secret"
RAZORPAY_SECRET = "rzp_e2e_secret"


@pytest.fixture
def mail_sink():
    """The SMTP server the notifier sends to (a real aiosmtpd server)."""
    sink = MailSink(free_port()).start()
    yield sink
    sink.stop()


@pytest.fixture
async def stack(database_url, tmp_path, monkeypatch, mail_sink):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"whsec_previous,{STRIPE_SECRET}")
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", RAZORPAY_SECRET)
    env = {"DATABASE_URL": database_url, "BILLING_TIMEOUT_SECONDS": "3", "SMTP_HOST": "127.0.0.1",
           "SMTP_PORT": str(mail_sink.port), "SMTP_TLS": "none"}
    async with running(Stack(env, log_dir=tmp_path)) as stack:
        yield stack


@contextlib.asynccontextmanager
async def running(stack: Stack):
    """The stack started and ready; stopped at the end, every process having exited 0 (else its logs say why).
    Replicas start a service at a time, so that each client's first connections find every replica up."""
    try:
        if stack.replicas > 1:
            await stack.start_in_order()
        else:
            stack.start()
            await stack.wait_ready()
        yield stack
    finally:
        codes = stack.stop()
        logs = "\n".join(p.read_text()[-3000:] for p in stack.log_dir.glob("*.log")) if stack.log_dir else ""
        assert all(code == 0 for code in codes.values()), f"unclean exit {codes}\n{logs}"
