"""`python -m devstack fill --events N`: a database holding N stored events as billing and the notifier store
them, to measure the system with a history behind it (`make bench STORED=N`).

The mix is the bench's: half Razorpay captures, half Stripe payments (the intent's success, then its
charge's). Each payment is a real one from the trigger tool's scenarios with fresh ids throughout, received
at an even pace over the last `--weeks` weeks, and brings what live traffic leaves: its events (with their
bodies as signed and their ids), its transaction, its receipt in the outbox (delivered) with its key, and the
notifier's log of that receipt (sent, with its rendered bodies) with its key. Rows are written with COPY, a
batch at a time, into the weekly partitions of the weeks covered.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import string
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
from pgkit.partitions import PartitionedTable, ensure_weeks
from trigger.events import RazorpayScenario, StripeScenario

TEMPLATES = 64  # distinct scenarios the payments are made from: ids are fresh, amounts and shapes vary
BATCH = 20_000  # payments per COPY round
_ALPHABET = string.ascii_letters + string.digits

PARTITIONED = (PartitionedTable("billing", "webhook_events", "received_at"),
               PartitionedTable("billing", "email_outbox", "created_at"),
               PartitionedTable("notifier", "email_logs", "created_at"))


@dataclass(frozen=True)
class _Template:
    provider: str
    events: tuple[tuple[str, str, str], ...]  # (type, payload text, the event id in it: Stripe's; "" for Razorpay)
    ids: tuple[str, ...]  # the provider ids in the payloads, replaced by fresh ones of the same shape
    amount: int
    currency: str


def _fresh(provider_id: str) -> str:
    prefix, _, rest = provider_id.partition("_")
    return f"{prefix}_{''.join(random.choices(_ALPHABET, k=len(rest)))}"


def _templates() -> list[_Template]:
    made = []
    for i in range(TEMPLATES):
        if i % 2:
            r = RazorpayScenario(tenant_id=f"t{i % 50}", amount=random.choice([49900, 125000, 249900]))
            captured = orjson.dumps(r.event("payment.captured")).decode()
            made.append(_Template("razorpay", (("payment.captured", captured, ""),), (r.payment, r.order), r.amount,
                                  r.currency))
        else:
            s = StripeScenario(tenant_id=f"t{i % 50}", amount=random.choice([1999, 4999, 9900]))
            events = tuple((t, orjson.dumps(e).decode(), e["id"]) for t in ("payment_intent.succeeded", "charge.succeeded")
                           for e in (s.event(t),))
            made.append(_Template("stripe", events, (s.pi, s.charge, s.customer), s.amount, s.currency.upper()))
    return made


def _receipt() -> tuple[bytes, str, str]:
    """A receipt as billing's outbox stores it, and as the notifier logs it rendered."""
    from billing.adapters.email_messages import stored
    from billing.domain.email_contents import Money, PaymentReceived
    from billing.domain.notifications import EmailIntent
    from notifier.domain.contents import EmailKind
    from notifier.domain.render import Renderer
    from notifier.domain.samples import sample

    content = PaymentReceived(transaction_id=str(uuid.uuid4()), amount=Money(4999, "USD"),
                              payment_date=datetime.now(UTC), payment_method="Card",
                              receipt_url="https://pay.stripe.com/receipts/payment/ch_sample")
    intent = EmailIntent("txn:sample:payment_received", "t1", "user_1", "buyer@example.com", "Asha Rao", content)
    rendered = Renderer().render(sample(EmailKind.PAYMENT_RECEIVED))
    return stored(intent), rendered.html, rendered.text


def _rows(templates: list[_Template], start: datetime, step: timedelta, count: int, receipt: bytes,
          html: str, text: str) -> Iterator[tuple[list, list, list, list, list, list, list]]:
    """Per batch of payments: rows of webhook_events, event_ids, transactions, email_outbox, billing's
    email_keys, email_logs and the notifier's email_keys."""
    at = start
    done = 0
    while done < count:
        events, ids, txns, outbox, keys, logs, log_keys = [], [], [], [], [], [], []
        for _ in range(min(BATCH, count - done)):
            template = random.choice(templates)
            fresh = {old: _fresh(old) for old in template.ids}
            txn_id = uuid.uuid4()
            for event_type, payload, old_event_id in template.events:
                event_id = _fresh("evt_" + "x" * 24)
                for old, new in (*fresh.items(), *(((old_event_id, event_id),) if old_event_id else ())):
                    payload = payload.replace(old, new)
                body = payload.encode()
                row_id = uuid.uuid4()
                events.append((row_id, template.provider, event_id, event_type, payload, None, at, at, "processed",
                               None, 1, [txn_id], [], None, hashlib.sha256(body).digest(), body, "{}", "10.0.0.1",
                               None))
                ids.append((template.provider, event_id, row_id, at))
                at += step / len(template.events)
            pi, charge = (fresh[template.ids[0]], fresh[template.ids[1]]) if template.provider == "stripe" else (None, None)
            payment, order = (fresh[template.ids[0]], fresh[template.ids[1]]) if template.provider == "razorpay" else (
                None, None)
            tenant = f"t{random.randrange(50)}"
            txns.append((txn_id, tenant, "user_1", template.provider, template.amount, template.currency, "succeeded",
                         "succeeded" if template.provider == "stripe" else "captured", at, pi, charge, order, payment,
                         "card" if template.provider == "stripe" else "upi", "buyer@example.com", at, at, at))
            key = f"txn:{txn_id}:payment_received"
            outbox.append((uuid.uuid4(), key, "payment_received", receipt, "delivered", 1, at, at, at))
            keys.append((key, at))
            logs.append((uuid.uuid4(), tenant, "user_1", "buyer@example.com", "Asha Rao", "Shree Packaging",
                         f"Payment received: {template.amount / 100:.2f}", "payment_received", html, text, "sent", 1,
                         None, at, key, "0" * 64, f"<{uuid.uuid4().hex}@boxcostpro.com>", at, at))
            log_keys.append((key, at))
            done += 1
        yield events, ids, txns, outbox, keys, logs, log_keys


_COLUMNS = {
    "billing.webhook_events": ("id", "provider", "event_id", "event_type", "payload", "request_id", "received_at",
                               "processed_at", "status", "error", "attempts", "transaction_ids", "subscription_ids",
                               "next_retry_at", "payload_sha256", "body", "headers", "client_address", "erased_at"),
    "billing.event_ids": ("provider", "event_id", "id", "received_at"),
    "billing.transactions": ("id", "tenant_id", "user_id", "provider", "amount", "currency", "status",
                             "provider_status", "status_at", "stripe_payment_intent_id", "stripe_charge_id",
                             "razorpay_order_id", "razorpay_payment_id", "payment_method", "customer_email",
                             "paid_at", "created_at", "updated_at"),
    "billing.email_outbox": ("id", "idempotency_key", "kind", "content", "status", "attempts", "next_attempt_at",
                             "created_at", "delivered_at"),
    "billing.email_keys": ("idempotency_key", "created_at"),
    "notifier.email_logs": ("id", "tenant_id", "user_id", "to_email", "to_name", "tenant_name", "subject",
                            "email_type", "html", "body_text", "status", "attempts", "next_attempt_at", "sent_at",
                            "idempotency_key", "request_fingerprint", "message_id", "created_at", "updated_at"),
    "notifier.email_keys": ("idempotency_key", "created_at"),
}


async def _copy(conn: asyncpg.Connection, table: str, rows: list) -> None:
    schema, name = table.split(".")
    await conn.copy_records_to_table(name, schema_name=schema, records=rows, columns=_COLUMNS[table])


async def fill(database_url: str, events: int, weeks: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET synchronous_commit = off")
        now = datetime.now(UTC)
        start = now - timedelta(weeks=weeks)
        for table in PARTITIONED:
            await ensure_weeks(conn, table, start, now)
        templates = _templates()
        receipt, html, text = _receipt()
        per_payment = sum(len(t.events) for t in templates) / len(templates)
        payments = int(events / per_payment)
        step = (now - start) / payments
        began, written = time.monotonic(), 0
        for batch in _rows(templates, start, step, payments, receipt, html, text):
            async with conn.transaction():
                for table, rows in zip(_COLUMNS, batch, strict=True):
                    await _copy(conn, table, rows)
            written += len(batch[0])
            print(f"\r{written:,} events stored, {written / (time.monotonic() - began):,.0f}/s", end="",
                  file=sys.stderr, flush=True)
        print(file=sys.stderr)
        # As a long-lived database is: vacuumed, its rows frozen and its statistics current. Otherwise the
        # first run on it pays for setting hint bits and an autovacuum of millions of fresh rows.
        await conn.execute("VACUUM (FREEZE, ANALYZE)")
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="devstack fill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--weeks", type=int, default=12, help="spread over this many weeks before now")
    parser.add_argument("--database", default=os.environ.get("DATABASE_URL"), help="a migrated database's URL")
    args = parser.parse_args(argv)
    if not args.database:
        parser.error("give --database or DATABASE_URL (a database migrated by billing and the notifier)")
    asyncio.run(fill(args.database, args.events, args.weeks))
    return 0
