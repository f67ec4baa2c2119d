"""Helpers shared by tests: billing's incoming events from the trigger tool's events, polling, and
running the project's command lines as processes of their own."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from billing.adapters.email_messages import email_content, from_stored
from billing.domain.notifications import EmailIntent
from billing.domain.events import IncomingEvent
from billing.domain.model import Provider
import grpc
import pytest
from hypothesis import strategies as st
from trigger.events import RazorpayScenario, StripeScenario, new_event_id


def incoming(provider: str, event: dict[str, Any], event_id: str | None = None) -> IncomingEvent:
    if provider == "stripe":
        event_id, event_type = event["id"], event["type"]
    else:
        event_id, event_type = event_id or new_event_id(), event["event"]
    return IncomingEvent(
        provider=Provider(provider),
        event_id=event_id,
        event_type=event_type,
        payload=json.dumps(event).encode(),
        received_at=datetime.now(UTC),
        request_id="test",
    )


# Fields that depend on when or in which process a row was written, not on the events; and the key
# that only CreatePendingTransaction sets.
VOLATILE = {"id", "created_at", "updated_at", "idempotency_key"}


def state(rows) -> list[dict[str, Any]]:
    """Rows as comparable dicts, without ids and write times, in a stable order: domain rows and database
    rows alike (a transaction's refunds are a tuple of dataclasses in one, jsonb text in the other)."""
    def plain(value):
        if hasattr(value, "__dataclass_fields__"):
            return {k: plain(v) for k, v in vars(value).items()}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value.value if hasattr(value, "value") else value

    def clean(row) -> dict[str, Any]:
        data = dict(row) if not hasattr(row, "__dataclass_fields__") else dict(vars(row))
        if isinstance(data.get("refunds"), str):
            data["refunds"] = json.loads(data["refunds"])
        return {k: plain(v) for k, v in data.items() if k not in VOLATILE}
    return sorted((clean(r) for r in rows), key=lambda d: json.dumps(d, sort_keys=True, default=str))


async def wait_for(predicate, timeout=20.0, what="condition"):
    """Poll `predicate` (async) until true, within a deadline."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def run_module(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`python -m module args` as a process of its own: its exit code, and all it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


def operator_env(stack) -> dict[str, str]:
    """What an operator's command line needs to reach a running stack's services, TLS settings included."""
    return {**stack.env, "BILLING_ADDR": stack.billing_addr, "NOTIFIER_ADDR": stack.notifier_addr}


@st.composite
def _stripe_event_sets(draw):
    """Any of Stripe's events of one customer's payments: a one-off payment's, or a subscription's first
    invoice's and renewal's, each intent with its own charges, in the order Stripe made them."""
    s = StripeScenario(api_version=draw(st.sampled_from(["2024-06-20", "2025-03-31"])),
                       checkout_mode=draw(st.sampled_from(["payment", "subscription"])))
    payments = [s.pi] if s.checkout_mode == "payment" else [s.invoice_pi, s.renewal_pi]
    events = []
    for event_type in draw(st.lists(st.sampled_from(StripeScenario.TYPES), min_size=2, max_size=7)):
        s.pi = draw(st.sampled_from(payments))
        # A failed attempt is a charge of its own; the one that succeeded is refunded and disputed.
        s.charge = f"ch_{'declined_' if event_type == 'charge.failed' else ''}{s.pi[3:]}"
        events.append(incoming("stripe", s.event(event_type)))
    return events


@st.composite
def _razorpay_event_sets(draw):
    r = RazorpayScenario()
    return [incoming("razorpay", r.event(t))
            for t in draw(st.lists(st.sampled_from(RazorpayScenario.TYPES), min_size=2, max_size=7))]


def provider_event_sets() -> st.SearchStrategy[list[IncomingEvent]]:
    """Random sets of one customer's events, Stripe's or Razorpay's, for properties of any delivery."""
    return st.one_of(_stripe_event_sets(), _razorpay_event_sets())


def sampled_orders(events: list, count: int, seed: int) -> list[list]:
    """Up to `count` distinct random arrival orders of `events`, drawn one at a time (never all built)."""
    rng, orders = random.Random(seed), {}
    for _ in range(count * 4):
        order = rng.sample(events, len(events))
        orders.setdefault(tuple(id(e) for e in order), order)
        if len(orders) == count:
            break
    return list(orders.values())


def emails(outbox) -> Counter:
    """The emails an outbox asks for: kind, tenant, recipient and the amounts it states (a date or a link
    may rightly come from whichever event told it first). Takes the in-memory outbox's intents or the rows
    of billing.email_outbox."""
    def seen(kind: str, content) -> tuple:
        told = getattr(content, kind)
        amounts = {f.name: [v.amount_minor, v.currency] for f, v in told.ListFields() if f.message_type is not None
                   and f.message_type.name == "Money"}
        return (kind, content.tenant_id, content.to.email, json.dumps(amounts, sort_keys=True))

    told: Counter = Counter()
    for item in outbox:
        if isinstance(item, EmailIntent):  # the in-memory outbox's intent
            told[seen(item.kind, email_content(item))] += 1
        else:  # a row of billing.email_outbox
            told[seen(item["kind"], from_stored(item["kind"], item["content"]))] += 1
    return told


# News that is no longer true when billing learns of it is not told: a payment's failure once it is paid,
# a request to act on a payment once it went on, a refund once it failed, an activation once the
# subscription ended. In the providers' own orders (the
# trigger tool's flows) that is the only difference order makes: of these, only what in-order delivery
# tells may be told. Every other email is asked for exactly as in-order delivery asks for it.
NEWS_WHILE_TRUE = frozenset({"payment_failed", "payment_action_required", "payment_refunded",
                             "subscription_activated"})


def assert_same_emails(got: Counter, expected: Counter, context: object = None, *,
                       news_as_learned: bool = False) -> None:
    """Exactly the emails in-order delivery asks for: none missing, none twice, none more; of the news that
    may be outdated by the time it arrives, only what in-order delivery also tells. With `news_as_learned`
    (events in orders no provider makes, such as a refund before its payment), the news is not compared:
    a failure arriving before an earlier success is told, and refunds learned before their payment's amount
    are told as one total."""
    def split(told: Counter) -> tuple[Counter, Counter]:
        news = Counter({k: n for k, n in told.items() if k[0] in NEWS_WHILE_TRUE})
        return told - news, news

    got_rest, got_news = split(got)
    expected_rest, expected_news = split(expected)
    diff = f"{context}: extra {dict(got - expected)}, missing {dict(expected - got)}"
    assert got_rest == expected_rest, diff
    if not news_as_learned:
        assert got_news <= expected_news, diff


async def expect_code(call, code):
    """The details of the gRPC error the call ends in, which must have the code."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() is code, error.value.details()
    return error.value.details()
