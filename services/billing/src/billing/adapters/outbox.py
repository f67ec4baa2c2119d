"""The email outbox table, and the notifier's gRPC API as billing uses it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg
import grpc
import orjson
from boxcost.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from pgkit import queues

from billing.adapters.email_messages import as_sent, from_stored
from billing.domain.dispatch import NotifierUnavailable, DispatchResult, OutboxItem

log = logging.getLogger(__name__)


def _item_id(row_id: uuid.UUID, created_at: datetime) -> str:
    """An outbox row's key, its partition's time included, so that recording an outcome reads one
    partition rather than every week's."""
    return f"{row_id}@{created_at.isoformat()}"


def _row_key(item_id: str) -> tuple[uuid.UUID, datetime]:
    row_id, _, created_at = item_id.partition("@")
    return uuid.UUID(row_id), datetime.fromisoformat(created_at)


# The due emails first, each out of reach of other dispatchers until its lease ends.
CLAIM = """
UPDATE billing.email_outbox SET attempts = attempts + 1, next_attempt_at = now() + $2
WHERE (id, created_at) IN (SELECT id, created_at FROM billing.email_outbox
             WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, created_at, idempotency_key, kind, content, request, attempts, request_id, plan_ref
"""


class PostgresOutbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim_due(self, limit: int, lease: timedelta) -> list[OutboxItem]:
        rows = await queues.claim(self._pool, CLAIM, limit, lease)
        items = []
        for r in rows:
            content = from_stored(r["kind"], r["content"], r["request"] and orjson.loads(r["request"]))
            items.append(OutboxItem(_item_id(r["id"], r["created_at"]), r["idempotency_key"], r["kind"], content,
                                    r["attempts"], r["request_id"] or "", tenant_id=content.tenant_id,
                                    plan_ref=r["plan_ref"] or ""))
        return items

    async def record_outcomes(self, outcomes: list[DispatchResult]) -> None:
        if not outcomes:
            return
        keys = [_row_key(o.item_id) for o in outcomes]
        await self._pool.execute(
            """
            UPDATE billing.email_outbox AS b
            SET status = CASE o.status WHEN 'retry' THEN 'pending' ELSE o.status END,
                last_error = o.error,
                next_attempt_at = coalesce(o.next_attempt_at, b.next_attempt_at),
                delivered_at = CASE WHEN o.status = 'delivered' THEN now() END
            FROM unnest($1::uuid[], $5::timestamptz[], $2::text[], $3::text[], $4::timestamptz[])
                AS o(id, created_at, status, error, next_attempt_at)
            -- The bounds of the rows' times let the plan name only their weeks' partitions.
            WHERE b.id = o.id AND b.created_at = o.created_at AND b.created_at BETWEEN $6 AND $7
            """,
            [key[0] for key in keys],
            [o.status for o in outcomes],
            [o.error[:2000] if o.error else None for o in outcomes],
            [o.next_attempt_at for o in outcomes],
            [key[1] for key in keys],
            min(key[1] for key in keys), max(key[1] for key in keys),
        )

    async def next_due_in(self) -> float | None:
        # NULL when nothing waits (the worker then idles); never negative when something is overdue.
        seconds = await self._pool.fetchval(
            "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 "
            "FROM billing.email_outbox WHERE status = 'pending'")
        return None if seconds is None else max(0.0, seconds)


class GrpcNotifier:
    """The outbox's items go over as one SendEmails call per round."""

    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float = 30.0) -> None:
        self._stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        self._timeout = timeout_seconds

    async def send_emails(self, items: Sequence[OutboxItem]) -> list[str | None]:
        request = notifier_pb2.SendEmailsRequest(
            emails=[notifier_pb2.SendEmailRequest(idempotency_key=i.idempotency_key, request_id=i.request_id,
                                                  content=as_sent(i.content, i.profile, i.plan_name))
                    for i in items])
        try:
            reply = await self._stub.SendEmails(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise NotifierUnavailable(f"{exc.code().name}: {exc.details()}") from exc
        if len(reply.results) != len(items):
            raise NotifierUnavailable("the notifier answered a different number of results")
        return [_refusal(item, r) for item, r in zip(items, reply.results, strict=True)]


_ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]


def _refusal(item: OutboxItem, result: notifier_pb2.SendEmailResult) -> str | None:
    """None when the notifier has the item's email, else why it refused it. Billing asks for one email per
    key and changes it only to add what came later (a receipt's link); the notifier holding another version
    of the key's email means it took an earlier hand-over whose answer was lost. The customer gets that
    version, and nothing is left to send."""
    if result.HasField("accepted"):
        return None
    if result.refused.code == _ALREADY_EXISTS:
        log.info("the notifier has this email as first handed over; what was added since is not sent",
                 extra={"fields": {"key": item.idempotency_key, "kind": item.kind}})
        return None
    return f"{_code_name(result.refused.code)}: {result.refused.message}"


def _code_name(code: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
