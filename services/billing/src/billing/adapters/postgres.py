"""PostgreSQL store for webhook events, transactions and subscriptions (schema `billing`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from pgkit import pool as pgkit_pool
from pgkit.migrations import lock_id

from billing.domain.ingest import BatchUnit, EventRecord, TransientStoreError
from billing.domain.model import (
    Owner,
    Provider,
    SubRef,
    Subscription,
    SubStatus,
    Transaction,
    TxnRef,
    TxnStatus,
    WorkingSet,
)

_TRANSIENT = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.QueryCanceledError,
    ConnectionError,
    TimeoutError,
)

_TXN_COLUMNS = [f.name for f in fields(Transaction)]
_SUB_COLUMNS = [f.name for f in fields(Subscription)]


# PostgreSQL types of the row columns (the rest are text).
_PG_TYPES = {
    "id": "uuid", "amount": "bigint", "amount_refunded": "bigint", "currency": "text",
    "status_at": "timestamptz", "failed_at": "timestamptz", "paid_at": "timestamptz",
    "refunded_at": "timestamptz", "disputed_at": "timestamptz", "current_period_start": "timestamptz",
    "current_period_end": "timestamptz", "cancelled_at": "timestamptz",
}


def _upsert_sql(table: str, columns: list[str]) -> str:
    """One statement for the whole batch, the rows as one JSON document (one parameter, parsed by
    PostgreSQL) rather than an array per column, each value of which asyncpg type-checks and encodes."""
    record = ", ".join(f"{c} {_PG_TYPES.get(c, 'text')}" for c in columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "id")
    return (
        f"INSERT INTO billing.{table} ({', '.join(columns)}) "
        f"SELECT {', '.join(columns)} FROM json_to_recordset($1::json) AS r({record}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()"
    )


_UPSERT_TXN = _upsert_sql("transactions", _TXN_COLUMNS)
_UPSERT_SUB = _upsert_sql("user_subscriptions", _SUB_COLUMNS)
_SUBSCRIPTION_COLUMNS = {Provider.STRIPE: "stripe_subscription_id", Provider.RAZORPAY: "razorpay_subscription_id"}


def _rows_json(rows: Iterable[Any]) -> str:
    """The rows (dataclasses whose fields are the columns) as a JSON array: enums as their values,
    times in RFC 3339 with their offset."""
    return orjson.dumps(list(rows), option=orjson.OPT_NAIVE_UTC).decode()


def _transaction(record: asyncpg.Record) -> Transaction:
    data = {c: record[c] for c in _TXN_COLUMNS}
    data.update(id=str(record["id"]), provider=Provider(record["provider"]), status=TxnStatus(record["status"]))
    return Transaction(**data)


def _subscription(record: asyncpg.Record) -> Subscription:
    data = {c: record[c] for c in _SUB_COLUMNS}
    data.update(id=str(record["id"]), provider=Provider(record["provider"]), status=SubStatus(record["status"]))
    return Subscription(**data)


@dataclass(frozen=True)
class EventRetryPolicy:
    """Automatic retries of failed events: base * 2^(attempt-1) seconds, capped, up to max_attempts."""

    max_attempts: int = 8
    base_seconds: float = 30.0
    max_seconds: float = 3600.0

    def delay(self, attempt: int) -> float:
        return min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))


class PostgresUnit(BatchUnit):
    def __init__(self, conn: asyncpg.Connection, retry: EventRetryPolicy) -> None:
        self._conn = conn
        self._retry = retry

    async def lock(self, keys: Sequence[str]) -> None:
        # Sorted by key before hashing is enough: every batch takes its locks in one global order.
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
            [lock_id(k) for k in keys],
        )

    async def failed_or_known_events(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        rows = await self._conn.fetch(
            """
            SELECT e.provider, e.event_id, e.status
            FROM billing.webhook_events e
            JOIN unnest($1::text[], $2::text[]) AS k(provider, event_id)
              ON e.provider = k.provider AND e.event_id = k.event_id
            """,
            [p for p, _ in keys],
            [e for _, e in keys],
        )
        return {(r["provider"], r["event_id"]): r["status"] for r in rows}

    async def load(self, txn_refs: Sequence[TxnRef], sub_refs: Sequence[SubRef]) -> WorkingSet:
        ws = WorkingSet()
        if txn_refs:
            rows = await self._conn.fetch(
                """
                SELECT * FROM billing.transactions
                WHERE stripe_payment_intent_id = ANY($1::text[])
                   OR stripe_invoice_id = ANY($2::text[])
                   OR stripe_charge_id = ANY($3::text[])
                   OR razorpay_order_id = ANY($4::text[])
                   OR razorpay_payment_id = ANY($5::text[])
                FOR UPDATE
                """,
                [r.stripe_payment_intent_id for r in txn_refs if r.stripe_payment_intent_id],
                [r.stripe_invoice_id for r in txn_refs if r.stripe_invoice_id],
                [r.stripe_charge_id for r in txn_refs if r.stripe_charge_id],
                [r.razorpay_order_id for r in txn_refs if r.razorpay_order_id],
                [r.razorpay_payment_id for r in txn_refs if r.razorpay_payment_id],
            )
            ws.transactions = [_transaction(r) for r in rows]
        if sub_refs:
            rows = await self._conn.fetch(
                """
                SELECT * FROM billing.user_subscriptions
                WHERE stripe_subscription_id = ANY($1::text[]) OR razorpay_subscription_id = ANY($2::text[])
                FOR UPDATE
                """,
                [r.subscription_id for r in sub_refs if r.provider is Provider.STRIPE],
                [r.subscription_id for r in sub_refs if r.provider is Provider.RAZORPAY],
            )
            ws.subscriptions = [_subscription(r) for r in rows]
        return ws

    async def save(self, working_set: WorkingSet, owners: dict[SubRef, Owner]) -> None:
        if working_set.changed_subscriptions:
            await self._conn.execute(_UPSERT_SUB, _rows_json(working_set.changed_subscriptions.values()))
        if working_set.changed_transactions:
            await self._conn.execute(_UPSERT_TXN, _rows_json(working_set.changed_transactions.values()))
        if working_set.emails:
            await self._conn.execute(
                """
                INSERT INTO billing.email_outbox (id, idempotency_key, kind, request, request_id)
                SELECT gen_random_uuid(), k, kind, request::jsonb, nullif(request_id, '')
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS e(k, kind, request, request_id)
                ON CONFLICT (idempotency_key) DO NOTHING
                """,
                [e.idempotency_key for e in working_set.emails],
                [e.kind for e in working_set.emails],
                [orjson.dumps(e.as_json()).decode() for e in working_set.emails],
                [e.request_id for e in working_set.emails],
            )
        # Payments stored before their subscription's owner was known take it now.
        newly_owned = [
            (ref.provider, ref.subscription_id, owner.tenant_id, owner.user_id)
            for ref, owner in owners.items()
            if any(s.provider is ref.provider and s.provider_id == ref.subscription_id
                   for s in working_set.changed_subscriptions.values())
        ]
        for provider, column in _SUBSCRIPTION_COLUMNS.items():
            # One subscription column per statement: with both in an OR, a plan made while the table
            # was small matched on `tenant_id IS NULL` and read every transaction without an owner.
            rows = [(sub_id, tenant, user) for p, sub_id, tenant, user in newly_owned if p is provider]
            if rows:
                await self._conn.executemany(
                    f"UPDATE billing.transactions SET tenant_id = $2, user_id = $3, updated_at = now() "
                    f"WHERE {column} = $1 AND tenant_id IS NULL",
                    rows,
                )

    async def record_events(self, records: Sequence[EventRecord]) -> None:
        now = datetime.now(UTC)
        new = [r for r in records if not r.retry]
        retried = [r for r in records if r.retry]
        if new:
            # Row ids are arrays too; unnest cannot take an array of arrays, so they travel as text.
            await self._conn.execute(
                """
                INSERT INTO billing.webhook_events
                    (id, provider, event_id, event_type, payload, request_id, received_at,
                     processed_at, status, error, transaction_ids, subscription_ids, next_retry_at)
                SELECT gen_random_uuid(), provider, event_id, event_type, payload::jsonb, request_id,
                       received_at, $7, status, error,
                       string_to_array(txn_ids, ',')::uuid[], string_to_array(sub_ids, ',')::uuid[],
                       CASE WHEN status = 'failed' THEN $7::timestamptz + make_interval(secs => $12::float8) END
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                            $8::text[], $9::text[], $10::text[], $11::text[])
                     AS e(provider, event_id, event_type, payload, request_id, received_at,
                          status, error, txn_ids, sub_ids)
                """,
                [r.event.provider.value for r in new],
                [r.event.event_id for r in new],
                [r.event.event_type for r in new],
                [r.payload_text for r in new],
                [r.event.request_id or None for r in new],
                [r.event.received_at for r in new],
                now,
                [r.status.value for r in new],
                [r.error for r in new],
                [",".join(r.transaction_ids) for r in new],
                [",".join(r.subscription_ids) for r in new],
                self._retry.delay(1),
            )
        if retried:
            await self._conn.executemany(
                """
                UPDATE billing.webhook_events
                SET status = $3, error = $4, processed_at = $5, attempts = attempts + 1,
                    transaction_ids = $6::uuid[], subscription_ids = $7::uuid[],
                    -- Past the last attempt a failed event stays failed with no next retry: dead letter.
                    next_retry_at = CASE WHEN $3 = 'failed' AND attempts + 1 < $8::int
                                         THEN $5::timestamptz + make_interval(secs => least($10::float8, $9::float8 * 2 ^ attempts)) END
                WHERE provider = $1 AND event_id = $2
                """,
                [
                    (r.event.provider.value, r.event.event_id, r.status.value, r.error, now,
                     list(r.transaction_ids), list(r.subscription_ids), self._retry.max_attempts,
                     self._retry.base_seconds, self._retry.max_seconds)
                    for r in retried
                ],
            )


class PostgresEventStore:
    def __init__(self, pool: asyncpg.Pool, retry: EventRetryPolicy = EventRetryPolicy()) -> None:
        self._pool = pool
        self._retry = retry

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[PostgresUnit]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield PostgresUnit(conn, self._retry)
        except _TRANSIENT as exc:
            raise TransientStoreError(str(exc)) from exc


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    # Billing runs the same few statements with different arrays: plan them once per connection.
    # A plan made while a table is still small must not stay a sequential scan as it grows, and
    # every billing statement is an index lookup by design, so sequential scans are priced out.
    return await pgkit_pool.create_pool(
        dsn, min_size=min_size, max_size=max_size, application_name="billing",
        settings={"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"},
    )
