"""Reads for billing's internal API, and pending transactions (schema `billing`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from pgkit import queues
from pgkit.keyset import decode_token, encode_token
from pgkit.migrations import lock_id

from billing.adapters.rows import subscription_from_row, transaction_from_row
from billing.domain.model import Provider, Subscription, Transaction, TxnStatus, new_id
from billing.domain.errors import InvalidRequest
from billing.domain.events import IngestResult
from billing.adapters import plan_catalog
from billing.adapters import tenant_profiles
from billing.adapters.erasure import erase_customer
from billing.domain.erasure import Erasure
from billing.domain.plans import Plan
from billing.domain.tenant_profiles import TenantProfile
from billing.domain.api_types import (
    EventSelection,
    Evidence,
    EventFilter,
    Page,
    PendingPayment,
    RefusedEmail,
    Stamped,
    StoredEvent,
    SubFilter,
    TxnFilter,
)


def _after(token: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    try:
        return decode_token(token)
    except ValueError:
        raise InvalidRequest("page_token", "is not a token this service issued") from None


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _page(rows: list, limit: int, build, stamp_key: str) -> Page:
    items = [build(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return Page(items, encode_token(last[stamp_key], last["id"]) if last else None)


def _stamped_txn(row: asyncpg.Record) -> Stamped[Transaction]:
    return Stamped(transaction_from_row(row), row["created_at"], row["updated_at"])


def _stamped_sub(row: asyncpg.Record) -> Stamped[Subscription]:
    return Stamped(subscription_from_row(row), row["created_at"], row["updated_at"])


def _event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(str(row["id"]), Provider(row["provider"]), row["event_id"], row["event_type"], row["status"],
                       row["error"], row["attempts"], row["received_at"], row["processed_at"], row["request_id"],
                       row["next_retry_at"], erased_at=row["erased_at"])


# What a replay or retry applies: the body exactly as it was signed, or for events stored before bodies
# were kept, the parsed document.
_REPLAYED = "coalesce(body, convert_to(payload::text, 'UTF8'))"

_EVENT_COLUMNS = ("id, provider, event_id, event_type, status, error, attempts, received_at, processed_at, "
                  "request_id, next_retry_at, erased_at")

# Operators' list of events, newest first. Failed events are few among many: their filters are written
# out, so that even a generic plan walks the partial index of failed events rather than every event.
_LIST_EVENTS = f"""
    SELECT {_EVENT_COLUMNS} FROM billing.webhook_events
    WHERE {{status}}
      AND ($1::text IS NULL OR provider = $1) AND ($2::text IS NULL OR event_type = $2)
      AND ($3::timestamptz IS NULL OR received_at >= $3) AND ($4::timestamptz IS NULL OR received_at < $4)
      AND ($5::timestamptz IS NULL OR (received_at, id) < ($5, $6::uuid))
    ORDER BY received_at DESC, id DESC LIMIT $7
"""
_LIST_FAILED_EVENTS = {
    "failed": _LIST_EVENTS.format(status="status = 'failed'"),
    "dead_letter": _LIST_EVENTS.format(status="status = 'failed' AND next_retry_at IS NULL"),  # retries ran out
}
_LIST_EVENTS_BY_STATUS = _LIST_EVENTS.format(status="($8::text IS NULL OR status = $8)")


# A transaction merged into another: the one it went to, following merges of merges (each by its key).
_MERGED_INTO = """
WITH RECURSIVE went(id, depth) AS (
    SELECT kept_id, 1 FROM billing.transaction_merges WHERE merged_id = $1
    UNION ALL
    SELECT m.kept_id, w.depth + 1 FROM billing.transaction_merges m JOIN went w ON m.merged_id = w.id
    WHERE w.depth < 16
)
SELECT t.* FROM went JOIN billing.transactions t ON t.id = went.id ORDER BY went.depth LIMIT 1
"""


class PostgresBillingReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_pending(self, p: PendingPayment) -> tuple[Stamped[Transaction], bool, dict[str, Any]]:
        key = (f"stripe:pi:{p.stripe_payment_intent_id}" if p.provider is Provider.STRIPE
               else f"razorpay:order:{p.razorpay_order_id}")
        async with self._pool.acquire() as conn, conn.transaction():
            # The same lock the ingest path takes for this payment: no webhook interleaves.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_id(key))
            existing = await conn.fetchrow(
                """SELECT * FROM billing.transactions
                   WHERE idempotency_key = $1 OR stripe_payment_intent_id = $2 OR razorpay_order_id = $3""",
                p.idempotency_key, p.stripe_payment_intent_id or None, p.razorpay_order_id or None)
            if existing is not None:
                stored = {"idempotency_key": existing["idempotency_key"], "tenant_id": existing["tenant_id"],
                          "amount": existing["requested_amount"], "currency": existing["requested_currency"]}
                return _stamped_txn(existing), False, stored
            row = await conn.fetchrow(
                """
                INSERT INTO billing.transactions (id, tenant_id, user_id, provider, amount, currency, status,
                    status_at, stripe_payment_intent_id, razorpay_order_id, idempotency_key, requested_amount,
                    requested_currency)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING *
                """,
                new_id(), p.tenant_id, p.user_id or None, p.provider.value, p.amount, p.currency,
                TxnStatus.PENDING.value, datetime(1970, 1, 1, tzinfo=UTC),
                p.stripe_payment_intent_id or None, p.razorpay_order_id or None, p.idempotency_key,
                p.amount, p.currency)
        return _stamped_txn(row), True, {}

    async def get_transaction(self, tenant_id: str, txn_id: str) -> Stamped[Transaction] | None:
        # By id, then the tenant: with both in the WHERE, a plan made while the table was small walked
        # the tenant index through all of the tenant's rows to find one id.
        found = await self.payment_by_id(txn_id)
        return found if found and found.row.tenant_id == tenant_id else None

    async def payment_by_id(self, txn_id: str) -> Stamped[Transaction] | None:
        key = _uuid(txn_id)
        row = key and (await self._pool.fetchrow("SELECT * FROM billing.transactions WHERE id = $1", key)
                       or await self._pool.fetchrow(_MERGED_INTO, key))
        return _stamped_txn(row) if row else None

    async def list_transactions(self, f: TxnFilter, limit: int, after: str | None) -> Page[Stamped[Transaction]]:
        created, last_id = _after(after)
        rows = await self._pool.fetch(
            """
            SELECT * FROM billing.transactions
            WHERE tenant_id = $1 AND ($2::text IS NULL OR user_id = $2) AND ($3::text IS NULL OR status = $3)
              AND ($4::text IS NULL OR provider = $4)
              AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6::timestamptz IS NULL OR created_at < $6)
              AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8::uuid))
            ORDER BY created_at DESC, id DESC LIMIT $9
            """,
            f.tenant_id, f.user_id, f.status, f.provider.value if f.provider else None,
            f.created_after, f.created_before, created, last_id, limit + 1)
        return _page(rows, limit, _stamped_txn, "created_at")

    async def unattributed_payments(self, limit: int) -> list[Stamped[Transaction]]:
        rows = await self._pool.fetch(
            "SELECT * FROM billing.transactions WHERE tenant_id IS NULL AND paid_at IS NOT NULL "
            "ORDER BY paid_at, id LIMIT $1", limit)
        return [_stamped_txn(row) for row in rows]

    async def unattributed_subscriptions(self, limit: int) -> list[Stamped[Subscription]]:
        rows = await self._pool.fetch(
            "SELECT * FROM billing.user_subscriptions WHERE tenant_id IS NULL ORDER BY created_at, id LIMIT $1", limit)
        return [_stamped_sub(row) for row in rows]

    async def get_subscription(self, tenant_id: str, sub_id: str) -> Stamped[Subscription] | None:
        key = _uuid(sub_id)
        row = key and await self._pool.fetchrow("SELECT * FROM billing.user_subscriptions WHERE id = $1", key)
        return _stamped_sub(row) if row and row["tenant_id"] == tenant_id else None  # see get_transaction

    async def list_subscriptions(self, f: SubFilter, limit: int, after: str | None) -> Page[Stamped[Subscription]]:
        created, last_id = _after(after)
        rows = await self._pool.fetch(
            """
            SELECT * FROM billing.user_subscriptions
            WHERE tenant_id = $1 AND ($2::text IS NULL OR user_id = $2) AND ($3::text IS NULL OR status = $3)
              AND ($4::text IS NULL OR provider = $4)
              AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
            ORDER BY created_at DESC, id DESC LIMIT $7
            """,
            f.tenant_id, f.user_id, f.status, f.provider.value if f.provider else None, created, last_id, limit + 1)
        return _page(rows, limit, _stamped_sub, "created_at")

    async def list_events(self, f: EventFilter, limit: int, after: str | None) -> Page[StoredEvent]:
        received, last_id = _after(after)
        args = [f.provider.value if f.provider else None, f.event_type, f.received_after, f.received_before,
                received, last_id, limit + 1]
        sql = _LIST_FAILED_EVENTS.get(f.status or "")
        if sql is None:
            sql = _LIST_EVENTS_BY_STATUS
            args.append(f.status)
        return _page(await self._pool.fetch(sql, *args), limit, _event, "received_at")

    async def get_event(self, provider: Provider, event_id: str) -> tuple[StoredEvent, bytes] | None:
        row = await self._pool.fetchrow(
            f"SELECT {_EVENT_COLUMNS}, {_REPLAYED} AS payload, body, encode(payload_sha256, 'hex') AS sha256, "
            "headers::text AS headers, client_address, transaction_ids, subscription_ids "
            "FROM billing.webhook_events WHERE provider = $1 AND event_id = $2", provider.value, event_id)
        if row is None:
            return None
        evidence = Evidence(row["body"] or b"", row["sha256"] or "", orjson.loads(row["headers"]),
                            row["client_address"] or "", tuple(map(str, row["transaction_ids"])),
                            tuple(map(str, row["subscription_ids"])))
        return replace(_event(row), evidence=evidence), row["payload"]

    async def failed_events(self, limit: int) -> Sequence[tuple[StoredEvent, bytes]]:
        rows = await self._pool.fetch(
            f"SELECT {_EVENT_COLUMNS}, {_REPLAYED} AS payload FROM billing.webhook_events "
            f"WHERE status = 'failed' AND erased_at IS NULL ORDER BY received_at LIMIT $1", limit)
        return [(_event(r), r["payload"]) for r in rows]

    async def select_events(self, selection: EventSelection, limit: int) -> Sequence[tuple[StoredEvent, bytes]]:
        # A tenant's events are those that named its payments or subscriptions.
        rows = await self._pool.fetch(
            f"""SELECT {_EVENT_COLUMNS}, {_REPLAYED} AS payload FROM billing.webhook_events e
            WHERE e.erased_at IS NULL AND ($1::text IS NULL OR e.provider = $1)
              AND (cardinality($2::text[]) = 0 OR e.event_id = ANY($2::text[]))
              AND ($3::text IS NULL OR e.event_type = $3)
              AND (cardinality($4::text[]) = 0 OR e.status = ANY($4::text[]))
              AND ($5::timestamptz IS NULL OR e.received_at >= $5)
              AND ($6::timestamptz IS NULL OR e.received_at < $6)
              AND ($7::text IS NULL
                   OR EXISTS (SELECT 1 FROM billing.transactions t
                              WHERE t.id = ANY(e.transaction_ids) AND t.tenant_id = $7)
                   OR EXISTS (SELECT 1 FROM billing.user_subscriptions s
                              WHERE s.id = ANY(e.subscription_ids) AND s.tenant_id = $7))
            ORDER BY e.received_at, e.id LIMIT $8""",
            selection.provider.value if selection.provider else None, list(selection.event_ids),
            selection.event_type, list(selection.statuses), selection.received_after, selection.received_before,
            selection.tenant_id, limit)
        return [(_event(r), r["payload"]) for r in rows]

    async def record_replay(self, requested_by: str, reason: str, selection: EventSelection, dry_run: bool,
                            results: Sequence[IngestResult]) -> str:
        replay_id = uuid.uuid4()
        described = {"provider": selection.provider.value if selection.provider else None,
                     "event_ids": list(selection.event_ids), "event_type": selection.event_type,
                     "tenant_id": selection.tenant_id, "statuses": list(selection.statuses),
                     "received_after": selection.received_after.isoformat() if selection.received_after else None,
                     "received_before": selection.received_before.isoformat() if selection.received_before else None}
        await self._pool.execute(
            "INSERT INTO billing.event_replays (id, requested_by, reason, selection, dry_run, events, outcomes) "
            "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7::jsonb)",
            replay_id, requested_by[:255], reason[:2000], orjson.dumps(described).decode(), dry_run, len(results),
            orjson.dumps([[r.event_id, r.outcome.value] for r in results]).decode())
        return str(replay_id)

    async def claim_due_retries(self, limit: int, lease: timedelta) -> Sequence[tuple[StoredEvent, bytes]]:
        # Rows another replica holds are skipped; the ones taken are not due again until the lease ends,
        # by when the retry has set their next time (or, if this replica died, they are due again).
        rows = await queues.claim(
            self._pool,
            f"UPDATE billing.webhook_events SET next_retry_at = now() + $2 "
            f"WHERE id IN (SELECT id FROM billing.webhook_events WHERE status = 'failed' AND next_retry_at <= now() "
            f"ORDER BY next_retry_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {_EVENT_COLUMNS}, {_REPLAYED} AS payload", limit, lease)
        return sorted(((_event(r), r["payload"]) for r in rows), key=lambda e: e[0].received_at)

    async def erase_customer(self, email: str, email_sha256: bytes, requested_by: str, reason: str) -> Erasure:
        return await erase_customer(self._pool, email, email_sha256, requested_by, reason)

    async def save_profile(self, tenant_id: str, profile: TenantProfile, updated_by: str) -> TenantProfile:
        return await tenant_profiles.save_profile(self._pool, tenant_id, profile, updated_by)

    async def profile(self, tenant_id: str) -> TenantProfile | None:
        return (await tenant_profiles.profiles(self._pool, [tenant_id])).get(tenant_id)

    async def profiles(self, tenant_ids: list[str]) -> dict[str, TenantProfile]:
        return await tenant_profiles.profiles(self._pool, tenant_ids)

    async def plans(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Plan]:
        return await plan_catalog.plans(self._pool, keys)

    async def save_plan(self, plan: Plan, *, keep_operators: bool) -> Plan:
        return await plan_catalog.save_plan(self._pool, plan, keep_operators=keep_operators)

    async def list_plans(self, provider: Provider | None, limit: int) -> list[Plan]:
        return await plan_catalog.list_plans(self._pool, provider, limit)

    async def next_retry_in(self) -> float | None:
        # NULL when nothing waits (the worker then idles); never negative when something is overdue.
        seconds = await self._pool.fetchval(
            "SELECT extract(epoch FROM min(next_retry_at) - now())::float8 "
            "FROM billing.webhook_events WHERE status = 'failed'")
        return None if seconds is None else max(0.0, seconds)

    async def refused_emails(self, limit: int, *, requeue: bool) -> list[RefusedEmail]:
        oldest = ("SELECT id FROM billing.email_outbox WHERE status = 'dead' ORDER BY created_at LIMIT $1"
                  + (" FOR UPDATE" if requeue else ""))
        if requeue:  # a fresh round of attempts, due now; the refusal stays until the next outcome
            sql = (f"UPDATE billing.email_outbox SET status = 'pending', attempts = 0, next_attempt_at = now() "
                   f"WHERE id IN ({oldest}) RETURNING id, idempotency_key, kind, last_error, created_at")
        else:
            sql = (f"SELECT id, idempotency_key, kind, last_error, created_at FROM billing.email_outbox "
                   f"WHERE id IN ({oldest})")
        rows = await self._pool.fetch(sql, limit)
        return sorted((RefusedEmail(str(r["id"]), r["idempotency_key"], r["kind"], r["last_error"] or "",
                                    r["created_at"]) for r in rows), key=lambda e: (e.created_at, e.id))

    async def backlog(self) -> dict[str, float]:
        row = await self._pool.fetchrow(
            """
            SELECT (SELECT count(*) FROM billing.email_outbox WHERE status = 'pending') AS outbox_pending,
                   (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)
                      FROM billing.email_outbox WHERE status = 'pending')::float8 AS outbox_oldest_seconds,
                   (SELECT count(*) FROM billing.webhook_events
                      WHERE status = 'failed' AND next_retry_at IS NOT NULL) AS failed_retrying,
                   (SELECT count(*) FROM billing.webhook_events
                      WHERE status = 'failed' AND next_retry_at IS NULL) AS dead_letter,
                   (SELECT count(*) FROM billing.email_outbox WHERE status = 'dead') AS outbox_refused,
                   (SELECT count(*) FROM billing.transactions
                      WHERE tenant_id IS NULL AND paid_at IS NOT NULL) AS unattributed_payments
            """)
        return {k: float(v) for k, v in dict(row).items()}
