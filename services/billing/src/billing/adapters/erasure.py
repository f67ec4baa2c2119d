"""A customer's erasure in PostgreSQL: one statement, one transaction, its record included."""

from __future__ import annotations

import uuid

import asyncpg

from billing.domain.erasure import Erasure

# Rows are found by the address without regard to case; events by the rows they changed, or by the address
# anywhere in their payload (an event billing ignored names no row). Erased events are never retried.
_ERASE = """
WITH txns AS (
    UPDATE billing.transactions SET customer_email = NULL, customer_name = NULL, updated_at = now()
    WHERE lower(customer_email) = lower($1)
    RETURNING id
),
subs AS (
    UPDATE billing.user_subscriptions SET customer_email = NULL, customer_name = NULL, updated_at = now()
    WHERE lower(customer_email) = lower($1)
    RETURNING id
),
events AS (
    UPDATE billing.webhook_events
    SET payload = '{}', body = NULL, headers = '{}', client_address = NULL, erased_at = now(),
        next_retry_at = NULL
    WHERE erased_at IS NULL
      AND (transaction_ids && ARRAY(SELECT id FROM txns) OR subscription_ids && ARRAY(SELECT id FROM subs)
           OR strpos(lower(payload::text), lower($1)) > 0)
    RETURNING 1
),
outbox AS (
    DELETE FROM billing.email_outbox
    WHERE split_part(idempotency_key, ':', 2) IN (SELECT id::text FROM txns UNION ALL SELECT id::text FROM subs)
    RETURNING 1
),
counts AS (
    SELECT (SELECT count(*) FROM txns) AS transactions, (SELECT count(*) FROM subs) AS subscriptions,
           (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM outbox) AS outbox_emails
)
INSERT INTO billing.erasures (id, requested_by, reason, email_sha256, transactions, subscriptions, events,
                              outbox_emails)
SELECT $2, $3, $4, $5, transactions, subscriptions, events, outbox_emails FROM counts
RETURNING transactions, subscriptions, events, outbox_emails
"""


async def erase_customer(pool: asyncpg.Pool, email: str, email_sha256: bytes, requested_by: str,
                         reason: str) -> Erasure:
    erasure_id = uuid.uuid4()
    row = await pool.fetchrow(_ERASE, email, erasure_id, requested_by[:255], reason, email_sha256)
    return Erasure(str(erasure_id), row["transactions"], row["subscriptions"], row["events"], row["outbox_emails"])
