"""PostgreSQL store for webhook events, transactions and subscriptions (schema `billing`)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from pgkit import pool as pgkit_pool
from pgkit.migrations import lock_id

from billing.domain.events import BatchUnit, EventRecord, KnownEvents, TransientStoreError
from billing.domain.model import (
    Provider,
    SubRef,
    TxnRef,
    new_id,
)
from billing.adapters.rows import PG_TYPES, SUB_COLUMNS, TXN_COLUMNS, subscription_from_row, transaction_from_row
from billing.domain.working_set import WorkingSet
from billing.domain.notifications import EmailAmendment, EmailIntent
from billing.adapters.email_messages import appendix, stored

_TRANSIENT = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    # Statement timeouts, and the server ending the session: a restart, a failover, an operator.
    asyncpg.exceptions.OperatorInterventionError,
    ConnectionError,
    TimeoutError,
)

def _upsert_sql(table: str, columns: list[str], param: str) -> str:
    """Upsert the rows of a JSON document (one parameter, parsed by PostgreSQL) rather than an array per
    column, each value of which asyncpg would type-check and encode."""
    record = ", ".join(f"{c} {PG_TYPES.get(c, 'text')}" for c in columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "id")
    return (
        f"INSERT INTO billing.{table} ({', '.join(columns)}) "
        f"SELECT {', '.join(columns)} FROM json_to_recordset({param}::json) AS r({record}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()"
    )


def _next_retry_at(status: str, attempts: str, at: str, policy: tuple[str, str, str]) -> str:
    """SQL for when a failed event is next retried: base * 2^(attempts-1) seconds after `at`, capped; NULL
    when it did not fail or has had its last attempt (the dead letter). `policy` names the parameters of
    EventRetryPolicy.parameters(). The first failure and every retry go by this one rule."""
    max_attempts, base, cap = policy
    return (f"CASE WHEN {status} = 'failed' AND {attempts} < {max_attempts}::int THEN {at}::timestamptz + "
            f"make_interval(secs => least({cap}::float8, {base}::float8 * 2 ^ ({attempts} - 1))) END")


# A batch's writes in one statement, one round trip: each data-modifying part runs once, to completion,
# whether or not its document holds rows. The parts write different tables, so none needs to see another's
# rows. Event payloads are embedded in the document as JSON values (they were parsed as objects already).
_WRITE_BATCH = f"""
WITH subscriptions AS ({_upsert_sql("user_subscriptions", SUB_COLUMNS, "$1")}),
transactions AS ({_upsert_sql("transactions", TXN_COLUMNS, "$2")}),
-- An email key seen before (in the outbox or purged from it) asks for nothing.
email_keys AS (
    INSERT INTO billing.email_keys (idempotency_key)
    SELECT idempotency_key FROM json_to_recordset($3::json) AS e(idempotency_key text)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key
),
outbox AS (
    INSERT INTO billing.email_outbox (id, idempotency_key, kind, content, request_id, next_attempt_at, plan_ref)
    SELECT id, e.idempotency_key, kind, decode(content, 'base64'), nullif(request_id, ''),
           now() + make_interval(secs => hold_seconds), nullif(plan_ref, '')
    FROM json_to_recordset($3::json)
        AS e(id uuid, idempotency_key text, kind text, content text, request_id text, hold_seconds float8,
             plan_ref text)
    JOIN email_keys USING (idempotency_key)
),
-- Links for emails of earlier batches that wait unsent, looked up by key (a list, so that no plan made while
-- the outbox is small joins by scanning it), through the key's time, which names the one partition to read.
-- One not yet tried is sent at once; one being handed to the notifier keeps its lease (if that fails, the
-- amended one is sent); one the notifier refused takes the data for when an operator queues it again; one
-- sent already stays as it was.
amended AS (
    UPDATE billing.email_outbox o
    SET content = CASE WHEN o.status IN ('pending', 'dead')
                       THEN o.content || decode($9::jsonb -> o.idempotency_key ->> 'appendix', 'base64')
                       ELSE o.content END,
        -- a row written by the previous release keeps JSON, the kind's fields under "data"
        request = CASE WHEN o.status IN ('pending', 'dead') AND o.content IS NULL
                       THEN jsonb_set(o.request, '{{data}}',
                                      (o.request -> 'data') || ($9::jsonb -> o.idempotency_key -> 'fields'))
                       ELSE o.request END,
        next_attempt_at = CASE WHEN o.status = 'pending' AND o.attempts = 0 THEN least(o.next_attempt_at, now())
                               ELSE o.next_attempt_at END
    FROM billing.email_keys k
    WHERE k.idempotency_key = ANY($8::text[]) AND o.idempotency_key = k.idempotency_key
      AND o.created_at = k.created_at
),
event_ids AS (
    INSERT INTO billing.event_ids (provider, event_id, id, received_at)
    SELECT provider, event_id, id, received_at
    FROM json_to_recordset($4::json) AS e(provider text, event_id text, id uuid, received_at timestamptz)
),
bodies AS (
    INSERT INTO billing.razorpay_bodies (payload_sha256, event_id)
    SELECT decode(payload_sha256, 'hex'), event_id
    FROM json_to_recordset($4::json) AS e(provider text, event_id text, payload_sha256 text)
    WHERE provider = 'razorpay'
),
events AS (
    INSERT INTO billing.webhook_events
        (id, provider, event_id, event_type, payload, request_id, received_at, processed_at, status, error,
         transaction_ids, subscription_ids, next_retry_at, payload_sha256, body, headers, client_address)
    SELECT id, provider, event_id, event_type, payload, nullif(request_id, ''), received_at,
           processed_at, status, error, transaction_ids, subscription_ids,
           {_next_retry_at("status", "1", "processed_at", ("$5", "$6", "$7"))}, decode(payload_sha256, 'hex'),
           decode(body, 'base64'), headers, nullif(client_address, '')
    FROM json_to_recordset($4::json) AS e(
        id uuid, provider text, event_id text, event_type text, payload jsonb, request_id text, received_at timestamptz,
        processed_at timestamptz, status text, error text, transaction_ids uuid[], subscription_ids uuid[],
        payload_sha256 text, body text, headers jsonb, client_address text)
)
SELECT 1
"""

# A failed event applied again: its outcome, one more attempt, and when it is next due (if ever).
_RETRY_EVENT = f"""
UPDATE billing.webhook_events
SET status = $3, error = $4, processed_at = $5, attempts = attempts + 1,
    transaction_ids = $6::uuid[], subscription_ids = $7::uuid[],
    next_retry_at = {_next_retry_at("$3", "(attempts + 1)", "$5", ("$8", "$9", "$10"))}
WHERE provider = $1 AND event_id = $2
"""

# A batch's reads in one statement, one round trip, after its locks are held (a statement sees what was
# committed when it started). The rows come back as JSON arrays: three result shapes in one row.
_READ_BATCH = """
SELECT
    -- An event id kept after its event's partition was dropped is known, and done with.
    (SELECT coalesce(json_agg(json_build_array(i.provider, i.event_id, coalesce(e.status, 'purged'))), '[]')
     FROM unnest($1::text[], $2::text[]) AS k(provider, event_id)
     JOIN billing.event_ids i ON i.provider = k.provider AND i.event_id = k.event_id
     LEFT JOIN billing.webhook_events e ON e.id = i.id AND e.received_at = i.received_at) AS known,
    (SELECT coalesce(json_agg(json_build_array(encode(b.payload_sha256, 'hex'), b.event_id)), '[]')
     FROM billing.razorpay_bodies b WHERE b.payload_sha256 = ANY($10::bytea[])) AS bodies,
    (SELECT coalesce(json_agg(t), '[]') FROM (
        SELECT * FROM billing.transactions WHERE stripe_payment_intent_id = ANY($3::text[])
           OR stripe_invoice_id = ANY($4::text[])
           OR stripe_charge_id = ANY($5::text[])
           OR razorpay_order_id = ANY($6::text[])
           OR razorpay_payment_id = ANY($7::text[])
           -- Payments stored before their subscription's owner was known, to take it if this batch brings it.
           OR (stripe_subscription_id = ANY($8::text[]) AND tenant_id IS NULL)
           OR (razorpay_subscription_id = ANY($9::text[]) AND tenant_id IS NULL)
        FOR UPDATE) t) AS transactions,
    (SELECT coalesce(json_agg(s), '[]') FROM (
        SELECT * FROM billing.user_subscriptions WHERE stripe_subscription_id = ANY($8::text[])
           OR razorpay_subscription_id = ANY($9::text[])
        FOR UPDATE) s) AS subscriptions
"""

# Rows merged into another are deleted, and where each went is kept: an id a tenant saw, or an earlier
# event names, still finds the payment.
_MERGE_TRANSACTIONS = """
WITH merges AS (SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS m(merged_id, kept_id)),
gone AS (DELETE FROM billing.transactions t USING merges m WHERE t.id = m.merged_id)
INSERT INTO billing.transaction_merges (merged_id, kept_id) SELECT merged_id, kept_id FROM merges
ON CONFLICT (merged_id) DO UPDATE SET kept_id = EXCLUDED.kept_id, merged_at = now()
"""


def _rows_json(rows: Iterable[Any]) -> str:
    """The rows (dataclasses or dicts whose fields are the columns) as a JSON array: enums as their
    values, times in RFC 3339 with their offset."""
    return orjson.dumps(list(rows), option=orjson.OPT_NAIVE_UTC).decode()


def _event_row(record: EventRecord, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(), "provider": record.event.provider, "event_id": record.event.event_id,
        "event_type": record.event.event_type, "payload": orjson.Fragment(record.payload_text),
        "request_id": record.event.request_id, "received_at": record.event.received_at, "processed_at": now,
        "status": record.status, "error": record.error, "transaction_ids": record.transaction_ids,
        "subscription_ids": record.subscription_ids, "payload_sha256": record.event.body_sha256,
        "body": base64.b64encode(record.event.payload).decode(), "headers": dict(record.event.headers),
        "client_address": record.event.client_address,
    }


def _outbox_row(email: EmailIntent) -> dict[str, Any]:
    return {"id": new_id(), "idempotency_key": email.idempotency_key, "kind": email.kind,
            "content": base64.b64encode(stored(email)).decode(), "request_id": email.request_id,
            "hold_seconds": email.hold.total_seconds(), "plan_ref": email.plan_ref}


def _amendments(amendments: Sequence[EmailAmendment]) -> dict[str, dict[str, Any]]:
    """Per email key: the bytes to append to its stored message, and (for rows of the previous release)
    its fields as JSON."""
    appended: dict[str, bytes] = {}
    fields: dict[str, dict[str, str]] = {}
    for a in amendments:
        appended[a.idempotency_key] = appended.get(a.idempotency_key, b"") + appendix(a.kind, a.field, a.value)
        fields.setdefault(a.idempotency_key, {})[a.field] = a.value
    return {key: {"appendix": base64.b64encode(appended[key]).decode(), "fields": fields[key]} for key in appended}


@dataclass(frozen=True)
class EventRetryPolicy:
    """Automatic retries of failed events: base * 2^(attempt-1) seconds, capped, up to max_attempts."""

    max_attempts: int = 8
    base_seconds: float = 30.0
    max_seconds: float = 3600.0

    def parameters(self) -> tuple[int, float, float]:
        return self.max_attempts, self.base_seconds, self.max_seconds


class PostgresUnit(BatchUnit):
    def __init__(self, conn: asyncpg.Connection, retry: EventRetryPolicy) -> None:
        self._conn = conn
        self._retry = retry

    async def read(
        self, event_keys: Sequence[tuple[str, str]], txn_refs: Sequence[TxnRef], sub_refs: Sequence[SubRef],
        bodies: Sequence[str] = (),
    ) -> tuple[KnownEvents, WorkingSet]:
        # One round trip for the three reads, each an index lookup of its own.
        row = await self._conn.fetchrow(
            _READ_BATCH,
            [p for p, _ in event_keys],
            [e for _, e in event_keys],
            [r.stripe_payment_intent_id for r in txn_refs if r.stripe_payment_intent_id],
            [r.stripe_invoice_id for r in txn_refs if r.stripe_invoice_id],
            [r.stripe_charge_id for r in txn_refs if r.stripe_charge_id],
            [r.razorpay_order_id for r in txn_refs if r.razorpay_order_id],
            [r.razorpay_payment_id for r in txn_refs if r.razorpay_payment_id],
            [r.subscription_id for r in sub_refs if r.provider is Provider.STRIPE],
            [r.subscription_id for r in sub_refs if r.provider is Provider.RAZORPAY],
            [bytes.fromhex(b) for b in bodies],
        )
        ws = WorkingSet()
        ws.transactions = [transaction_from_row(r) for r in orjson.loads(row["transactions"])]
        ws.subscriptions = [subscription_from_row(r) for r in orjson.loads(row["subscriptions"])]
        known = KnownEvents({(p, e): status for p, e, status in orjson.loads(row["known"])},
                            {body: event_id for body, event_id in orjson.loads(row["bodies"])})
        return known, ws

    async def write(self, working_set: WorkingSet, records: Sequence[EventRecord]) -> None:
        now = datetime.now(UTC)
        new = [r for r in records if not r.retry]
        if working_set.merged_transactions:
            # First: the row kept may take the payment intent id the merged one holds (a unique key).
            await self._conn.execute(_MERGE_TRANSACTIONS, list(working_set.merged_transactions),
                                     list(working_set.merged_transactions.values()))
        await self._conn.execute(
            _WRITE_BATCH,
            _rows_json(working_set.changed_subscriptions.values()),
            _rows_json(working_set.changed_transactions.values()),
            _rows_json(_outbox_row(e) for e in working_set.emails),
            _rows_json(_event_row(r, now) for r in new),
            *self._retry.parameters(),
            [a.idempotency_key for a in working_set.amendments],
            orjson.dumps(_amendments(working_set.amendments)).decode(),
        )
        retried = [r for r in records if r.retry]
        if retried:
            await self._conn.executemany(
                _RETRY_EVENT,
                [
                    (r.event.provider.value, r.event.event_id, r.status.value, r.error, now,
                     list(r.transaction_ids), list(r.subscription_ids), *self._retry.parameters())
                    for r in retried
                ],
            )


class PostgresEventStore:
    def __init__(self, pool: asyncpg.Pool, retry: EventRetryPolicy = EventRetryPolicy()) -> None:
        self._pool = pool
        self._retry = retry

    @asynccontextmanager
    async def unit(self, lock_keys: Sequence[str]) -> AsyncIterator[PostgresUnit]:
        try:
            async with self._pool.acquire() as conn:
                try:
                    await conn.execute(_begin_and_lock(lock_keys))
                    yield PostgresUnit(conn, self._retry)
                except BaseException:
                    # A connection the server ended is gone with its transaction: nothing to roll back.
                    with suppress(asyncpg.InterfaceError, OSError):
                        if conn.is_in_transaction():
                            await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
        except _TRANSIENT as exc:
            raise TransientStoreError(str(exc)) from exc


def _begin_and_lock(keys: Sequence[str]) -> str:
    """BEGIN and the unit's locks as one simple query, one round trip. The lock ids are integers made
    here (never text from outside), so they can be written into the statement's text. Taken in the order given
    (sorted by key): every unit takes its locks in one global order, and units never deadlock."""
    ids = ",".join(str(int(lock_id(k))) for k in keys)
    return ("BEGIN; SELECT pg_advisory_xact_lock(k) "
            f"FROM unnest('{{{ids}}}'::bigint[]) WITH ORDINALITY AS t(k, n) ORDER BY n")


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    # Billing runs the same few statements with different arrays: plan them once per connection.
    # A plan made while a table is still small must not stay a sequential scan as it grows, and
    # every billing statement is an index lookup by design, so sequential scans are priced out.
    return await pgkit_pool.create_pool(
        dsn, min_size=min_size, max_size=max_size, application_name="billing",
        settings={"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"},
    )
