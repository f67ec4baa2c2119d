"""End-to-end: billing and the gateway as real processes, on a fresh database, driven over HTTP."""

from __future__ import annotations

import pytest
from devstack.stack import Stack

STRIPE_SECRET = "whsec_e2e_secret"
RAZORPAY_SECRET = "rzp_e2e_secret"


@pytest.fixture
async def stack(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"whsec_previous,{STRIPE_SECRET}")
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", RAZORPAY_SECRET)
    stack = Stack({"DATABASE_URL": database_url, "BILLING_TIMEOUT_SECONDS": "3"}, log_dir=tmp_path)
    stack.start()
    try:
        await stack.wait_ready()
        yield stack
    finally:
        codes = stack.stop()
        logs = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("*.log"))
        assert all(code == 0 for code in codes.values()), f"unclean exit {codes}\n{logs}"
