"""The email log in PostgreSQL (schema `notifier`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
from pgkit.keyset import decode_token, encode_token
from pgkit.migrations import migrate as _migrate
from pgkit import queues

from notifier.domain.ports import DeliveryResult, ListFilter, NewEmail
from notifier.domain.contents import InvalidEmailRequest
from notifier.domain.erasure import Erasure
from notifier.domain.model import EmailRecord, EmailStatus

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"

_COLUMNS = ("id, tenant_id, user_id, to_email, to_name, tenant_name, subject, email_type, html, body_text, "
            "status, error_message, attempts, next_attempt_at, sent_at, idempotency_key, message_id, created_at, "
            "requeued_at, erased_at, reply_to")

# A failed email queued again: a fresh round of attempts, due now, its retry window counted from now.
_REQUEUE = ("status = 'queued', attempts = 0, next_attempt_at = now(), requeued_at = now(), "
            "updated_at = now()")


async def migrate(dsn: str, directory: Path = MIGRATIONS) -> list[str]:
    return await _migrate(dsn, "notifier", directory)


def _record(row: asyncpg.Record) -> EmailRecord:
    return EmailRecord(
        id=str(row["id"]), tenant_id=row["tenant_id"], user_id=row["user_id"] or "", to_email=row["to_email"],
        to_name=row["to_name"], subject=row["subject"], email_type=row["email_type"],
        status=EmailStatus(row["status"]), attempts=row["attempts"], idempotency_key=row["idempotency_key"],
        message_id=row["message_id"], created_at=row["created_at"], next_attempt_at=row["next_attempt_at"],
        sent_at=row["sent_at"], error_message=row["error_message"], tenant_name=row["tenant_name"],
        html=row["html"], text=row["body_text"], requeued_at=row["requeued_at"], erased_at=row["erased_at"],
        reply_to=row["reply_to"],
    )


def _after(token: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    try:
        return decode_token(token)
    except ValueError:
        raise InvalidEmailRequest("page_token", "is not a token this service issued") from None


class PostgresEmailLog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert_many(self, emails: Sequence[NewEmail]) -> list[tuple[EmailRecord | None, bool, str]]:
        # One statement for the batch; a key seen before (in an earlier call, or earlier in this one)
        # inserts nothing, and its stored email is read back after.
        inserted = await self._pool.fetch(
            f"""
            WITH batch AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                                     $13::text[])
                     WITH ORDINALITY AS e(tenant_id, user_id, to_email, to_name, tenant_name, subject, email_type,
                                          html, body_text, idempotency_key, request_fingerprint, message_id,
                                          reply_to, n)
            ),
            keys AS (
                INSERT INTO notifier.email_keys (idempotency_key)
                SELECT idempotency_key FROM batch ORDER BY n
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING idempotency_key
            )
            INSERT INTO notifier.email_logs
                (id, tenant_id, user_id, to_email, to_name, tenant_name, subject, email_type, html,
                 body_text, status, attempts, next_attempt_at, idempotency_key, request_fingerprint,
                 message_id, reply_to)
            SELECT gen_random_uuid(), tenant_id, user_id, to_email, to_name, tenant_name, subject, email_type, html,
                   body_text, 'queued', 0, now(), idempotency_key, request_fingerprint, message_id, reply_to
            FROM (SELECT DISTINCT ON (idempotency_key) * FROM batch ORDER BY idempotency_key, n) AS first
            JOIN keys USING (idempotency_key)
            ORDER BY n
            RETURNING {_COLUMNS}, request_fingerprint
            """,
            [e.request.tenant_id for e in emails], [e.request.user_id or None for e in emails],
            [e.request.to_email for e in emails], [e.request.to_name for e in emails],
            [e.request.tenant_name for e in emails], [e.rendered.subject for e in emails],
            [e.request.kind.value for e in emails], [e.rendered.html for e in emails],
            [e.rendered.text for e in emails], [e.idempotency_key for e in emails],
            [e.fingerprint for e in emails], [e.message_id for e in emails],
            [e.request.branding.reply_to for e in emails],
        )
        created = {row["idempotency_key"]: row for row in inserted}
        earlier = {}
        missing = list({e.idempotency_key for e in emails} - created.keys())
        if missing:
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS}, request_fingerprint FROM notifier.email_logs WHERE idempotency_key = ANY($1)",
                missing,
            )
            earlier = {row["idempotency_key"]: row for row in rows}
        results, claimed = [], set()
        for email in emails:
            key = email.idempotency_key
            row = created.get(key) or earlier.get(key)
            if row is None:  # the key's email was purged with its partition
                results.append((None, False, ""))
                continue
            results.append((_record(row), key in created and key not in claimed, row["request_fingerprint"]))
            claimed.add(key)
        return results

    async def get(self, tenant_id: str, email_id: str) -> EmailRecord | None:
        try:
            key = uuid.UUID(email_id)
        except ValueError:
            return None
        # By id, then the tenant: with both in the WHERE, a plan made while the table was small walked the
        # tenant index through all of the tenant's emails to find one.
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM notifier.email_logs WHERE id = $1", key)
        return _record(row) if row and row["tenant_id"] == tenant_id else None

    async def list(self, where: ListFilter, limit: int, after: str | None) -> tuple[list[EmailRecord], str | None]:
        created, last_id = _after(after)
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM notifier.email_logs
            WHERE tenant_id = $1
              AND ($2::text IS NULL OR user_id = $2)
              AND ($3::text IS NULL OR email_type = $3)
              AND ($4::text IS NULL OR status = $4)
              AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
            ORDER BY created_at DESC, id DESC
            LIMIT $7
            """,
            where.tenant_id, where.user_id, where.email_type, where.status.value if where.status else None,
            created, last_id, limit + 1,
        )
        records = [_record(r) for r in rows[:limit]]
        last = records[-1] if len(rows) > limit else None
        return records, (encode_token(last.created_at, last.id) if last else None)

    async def claim_due(self, limit: int, lease: timedelta) -> list[EmailRecord]:
        """Take due emails for one attempt: pushing next_attempt_at past the lease means another
        worker will not take them, and a crashed attempt is retried when the lease runs out."""
        rows = await queues.claim(
            self._pool,
            f"""
            UPDATE notifier.email_logs SET attempts = attempts + 1, next_attempt_at = now() + $2,
                                           updated_at = now()
            WHERE (id, created_at) IN (
                SELECT id, created_at FROM notifier.email_logs
                WHERE status IN ('queued', 'retrying') AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            )
            RETURNING {_COLUMNS}
            """,
            limit, lease,
        )
        return [_record(r) for r in rows]

    async def record_outcomes(self, outcomes: list[DeliveryResult]) -> None:
        if not outcomes:
            return
        await self._pool.execute(
            """
            UPDATE notifier.email_logs AS e
            SET status = o.status, error_message = o.error, next_attempt_at = o.next_attempt_at,
                sent_at = CASE WHEN o.status = 'sent' THEN now() ELSE e.sent_at END, updated_at = now(),
                attempts = CASE WHEN o.attempted THEN e.attempts ELSE e.attempts - 1 END
            FROM unnest($1::uuid[], $6::timestamptz[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[])
                 AS o(id, created_at, status, error, next_attempt_at, attempted)
            -- The partition's time: one week's read, not all; its bounds let the plan name only those weeks.
            WHERE e.id = o.id AND e.created_at = o.created_at AND e.created_at BETWEEN $7 AND $8
            """,
            [uuid.UUID(o.email_id) for o in outcomes],
            [o.status.value for o in outcomes],
            [o.error[:2000] if o.error else None for o in outcomes],
            [o.next_attempt_at for o in outcomes],
            [o.attempted for o in outcomes],
            [o.created_at for o in outcomes],
            min(o.created_at for o in outcomes), max(o.created_at for o in outcomes),
        )

    async def requeue(self, tenant_id: str, ids: Sequence[str]) -> list[str]:
        """Queue the tenant's emails again if every one of them exists and has failed; else none."""
        rows = await self._pool.fetch(
            f"""
            WITH wanted AS (  -- by id alone, then the tenant: see get()
                SELECT id, tenant_id, status, erased_at FROM notifier.email_logs WHERE id = ANY($1::uuid[]) FOR UPDATE
            ), every_one_failed AS (
                SELECT count(*) = cardinality($1::uuid[])
                       AND bool_and(tenant_id = $2 AND status = 'failed' AND erased_at IS NULL) AS yes
                FROM wanted
            )
            UPDATE notifier.email_logs AS e SET {_REQUEUE}
            FROM every_one_failed
            WHERE every_one_failed.yes AND e.id IN (SELECT id FROM wanted)
            RETURNING e.id
            """,
            [uuid.UUID(i) for i in ids], tenant_id,
        )
        return [str(row["id"]) for row in rows]

    async def requeue_failed_since(self, since: datetime, tenant_id: str | None, limit: int) -> list[str]:
        rows = await self._pool.fetch(
            f"""
            UPDATE notifier.email_logs SET {_REQUEUE}
            WHERE id IN (
                SELECT id FROM notifier.email_logs
                WHERE status = 'failed' AND updated_at >= $1 AND ($2::text IS NULL OR tenant_id = $2)
                  AND erased_at IS NULL
                ORDER BY updated_at LIMIT $3 FOR UPDATE
            )
            RETURNING id
            """,
            since, tenant_id, limit,
        )
        return [str(row["id"]) for row in rows]

    async def erase_recipient(self, email: str, email_sha256: bytes, requested_by: str, reason: str) -> Erasure:
        # Found by the address without regard to case; an email still to be sent is not sent.
        erasure_id = uuid.uuid4()
        emails = await self._pool.fetchval(
            """
            WITH erased AS (
                UPDATE notifier.email_logs
                SET to_email = '', to_name = '', subject = '', html = '', body_text = '', erased_at = now(),
                    error_message = CASE WHEN status IN ('queued', 'retrying')
                                         THEN 'not sent: the recipient''s data was erased' ELSE error_message END,
                    next_attempt_at = CASE WHEN status IN ('queued', 'retrying') THEN NULL ELSE next_attempt_at END,
                    status = CASE WHEN status IN ('queued', 'retrying') THEN 'failed' ELSE status END,
                    updated_at = now()
                WHERE lower(to_email) = lower($1) AND erased_at IS NULL
                RETURNING 1
            )
            INSERT INTO notifier.erasures (id, requested_by, reason, email_sha256, emails)
            SELECT $2, $3, $4, $5, count(*) FROM erased
            RETURNING emails
            """,
            email, erasure_id, requested_by[:255], reason, email_sha256,
        )
        return Erasure(str(erasure_id), emails)

    async def next_due_in(self) -> float | None:
        """Seconds until the next email falls due (0 if one is due now), None when nothing waits."""
        # NULL when nothing waits (the worker then idles); never negative when something is overdue.
        seconds = await self._pool.fetchval(
            """SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
               FROM notifier.email_logs WHERE status IN ('queued', 'retrying')"""
        )
        return None if seconds is None else max(0.0, seconds)
