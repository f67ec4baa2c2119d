"""Use cases: accept an email (validated, rendered, stored before answering) and deliver due emails.

Delivery is at least once towards the SMTP server, made effectively once by three things: a send is
claimed with a lease before it is attempted, the row is marked sent right after the server accepts it,
and every attempt of one email carries the same Message-ID, so a rare repeat (a crash between the
server's acceptance and our update) is recognisable as the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from notifier.domain.model import (
    MAX_ID,
    EmailKind,
    EmailRecord,
    EmailRequest,
    EmailStatus,
    IdempotencyConflict,
    InvalidEmailRequest,
    RenderedEmail,
    validate,
)
from notifier.domain.render import Renderer

log = logging.getLogger(__name__)

_EMAIL_TYPES = tuple(k.value for k in EmailKind)


class TransientSendError(Exception):
    """Worth trying again later: connection trouble, timeouts, 4xx replies."""


class PermanentSendError(Exception):
    """The server refused for good (5xx); the message is the server's reply."""


class NotFound(Exception):
    pass


class NotRetryable(Exception):
    """An email asked to be sent again that has not failed."""


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: str
    to_email: str
    to_name: str
    sender_name: str
    subject: str
    html: str
    text: str


class MailSender(Protocol):
    async def send(self, message: OutgoingMessage) -> None: ...


@dataclass(frozen=True)
class NewEmail:
    request: EmailRequest
    rendered: RenderedEmail
    idempotency_key: str
    fingerprint: str
    message_id: str


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt came to: sent, retry at `next_attempt_at`, or failed for good."""

    email_id: str
    status: EmailStatus
    error: str | None = None
    next_attempt_at: datetime | None = None
    email_type: str = ""
    attempted: bool = True  # False: given back unsent, and its claim does not count as an attempt


@dataclass(frozen=True)
class ListFilter:
    tenant_id: str
    user_id: str | None = None
    email_type: str | None = None
    status: EmailStatus | None = None


class EmailLog(Protocol):
    async def insert_many(self, emails: Sequence[NewEmail]) -> list[tuple[EmailRecord, bool, str]]:
        """Store the emails whose key is new; for each, in order: the stored email, whether this call
        created it, and the fingerprint of the request that did."""
        ...
    async def get(self, tenant_id: str, email_id: str) -> EmailRecord | None: ...
    async def list(self, where: ListFilter, limit: int, after: str | None) -> tuple[list[EmailRecord], str | None]: ...
    async def claim_due(self, limit: int, lease: timedelta) -> list[EmailRecord]: ...
    async def record_outcomes(self, outcomes: list[DeliveryResult]) -> None: ...
    async def requeue(self, tenant_id: str, ids: Sequence[str]) -> list[str]:
        """Queue the tenant's emails again if every one exists and has failed, else none; the ids queued."""
        ...
    async def requeue_failed_since(self, since: datetime, tenant_id: str | None, limit: int) -> list[str]:
        """Queue again up to `limit` emails failed since then, the earliest failures first."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    give_up_after: timedelta = timedelta(hours=24)
    base_delay: float = 2.0
    max_delay: float = 600.0

    def next_delay(self, attempts: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter, never under a tenth of the base."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return max(self.base_delay / 10, rng.uniform(0, ceiling))


MAX_BATCH = 500
# Emails queued again by one RetryEmails call over a time window; the next call takes the next ones.
MAX_REQUEUED = 10_000


@dataclass(frozen=True)
class Submission:
    """One email asked for: its idempotency key, the request, and the caller's request id for logs."""

    idempotency_key: str
    request: EmailRequest
    request_id: str = ""


Accepted = tuple[EmailRecord, bool]  # the email, and whether this request created it


class EmailFactory:
    """Turns a submission into an email ready to store: validated, rendered, given its Message-ID.

    Pure CPU work and the bulk of accepting an email, so it may run in worker processes (see
    adapters/workers.py); whatever runs it, a refusal comes back as a value, each email judged alone.
    """

    def __init__(self, renderer: Renderer, message_domain: str) -> None:
        self._renderer = renderer
        self._domain = message_domain

    def make(self, submission: Submission) -> NewEmail:
        key = submission.idempotency_key
        if not key or len(key) > 255:
            raise InvalidEmailRequest("idempotency_key", "is required, at most 255 characters")
        request = validate(submission.request)
        return NewEmail(
            request=request,
            rendered=self._renderer.render(request),
            idempotency_key=key,
            fingerprint=request.fingerprint(),
            message_id=f"<{uuid.uuid4().hex}@{self._domain}>",
        )

    def make_all(self, submissions: Sequence[Submission]) -> list[NewEmail | InvalidEmailRequest]:
        made: list[NewEmail | InvalidEmailRequest] = []
        for submission in submissions:
            try:
                made.append(self.make(submission))
            except InvalidEmailRequest as exc:
                made.append(exc)
        return made


class MakesEmails(Protocol):
    async def make_all(self, submissions: Sequence[Submission]) -> list[NewEmail | InvalidEmailRequest]: ...


class InlineEmails:
    """Makes the emails on the event loop: for tests, previews and single-core deployments."""

    def __init__(self, factory: EmailFactory) -> None:
        self._factory = factory

    async def make_all(self, submissions: Sequence[Submission]) -> list[NewEmail | InvalidEmailRequest]:
        return self._factory.make_all(submissions)


class AcceptEmail:
    def __init__(self, log_: EmailLog, emails: MakesEmails, on_accepted: Callable[[], None] = lambda: None) -> None:
        self._log = log_
        self._emails = emails
        self._on_accepted = on_accepted

    async def execute(self, idempotency_key: str, request: EmailRequest, request_id: str = "") -> Accepted:
        [result] = await self.execute_many([Submission(idempotency_key, request, request_id)])
        if isinstance(result, Exception):
            raise result
        return result

    async def execute_many(
        self, submissions: Sequence[Submission | InvalidEmailRequest]
    ) -> list[Accepted | InvalidEmailRequest | IdempotencyConflict]:
        """Validate, render and store each email (one write for all): each is judged alone. A request the
        transport could not even decode comes in as its refusal and goes out as it came."""
        if len(submissions) > MAX_BATCH:
            raise InvalidEmailRequest("emails", f"at most {MAX_BATCH} per call")
        made = iter(await self._emails.make_all([s for s in submissions if isinstance(s, Submission)]))
        prepared = [s if isinstance(s, InvalidEmailRequest) else next(made) for s in submissions]
        new = [p for p in prepared if isinstance(p, NewEmail)]
        stored = iter(await self._log.insert_many(new) if new else ())
        results: list[Accepted | InvalidEmailRequest | IdempotencyConflict] = []
        for item, submission in zip(prepared, submissions, strict=True):
            if isinstance(item, InvalidEmailRequest):
                results.append(item)
                continue
            record, created, stored_fingerprint = next(stored)
            if not created and stored_fingerprint != item.fingerprint:
                results.append(IdempotencyConflict(
                    f"idempotency key {item.idempotency_key!r} was used for a different email"))
                continue
            if created:
                log.info("email accepted", extra={"fields": {
                    "email_id": record.id, "email_type": record.email_type,
                    **({"request_id": submission.request_id} if submission.request_id else {})}})
            results.append((record, created))
        if any(isinstance(r, tuple) and r[1] for r in results):
            self._on_accepted()
        return results


class ReadEmails:
    def __init__(self, log_: EmailLog) -> None:
        self._log = log_

    async def get(self, tenant_id: str, email_id: str) -> EmailRecord:
        if not tenant_id:
            raise InvalidEmailRequest("tenant_id", "is required")
        for name, value in (("tenant_id", tenant_id), ("id", email_id)):
            if len(value) > MAX_ID:  # also keeps the not-found message that quotes the id short
                raise InvalidEmailRequest(name, f"must be at most {MAX_ID} characters")
        record = await self._log.get(tenant_id, email_id)
        if record is None:
            raise NotFound(f"no email {email_id} for this tenant")
        return record

    async def list(self, where: ListFilter, page_size: int, page_token: str | None):
        if not where.tenant_id:
            raise InvalidEmailRequest("tenant_id", "is required")
        if page_size < 0 or page_size > 100:
            raise InvalidEmailRequest("page_size", "must be between 0 and 100")
        if where.email_type is not None and where.email_type not in _EMAIL_TYPES:  # not "no such emails"
            raise InvalidEmailRequest("email_type", f"must be one of {', '.join(_EMAIL_TYPES)}")
        return await self._log.list(where, page_size or 20, page_token or None)


class RequeueFailedEmails:
    """Operators send failed emails again, once what failed them is fixed: given ones, or all since a time."""

    def __init__(self, log_: EmailLog, on_queued: Callable[[], None] = lambda: None) -> None:
        self._log = log_
        self._on_queued = on_queued

    async def execute(self, tenant_id: str, ids: Sequence[str], failed_since: datetime | None) -> list[str]:
        if bool(ids) == (failed_since is not None):
            raise InvalidEmailRequest("ids", "give the emails' ids or failed_since, one of the two")
        if len(tenant_id) > MAX_ID:
            raise InvalidEmailRequest("tenant_id", f"must be at most {MAX_ID} characters")
        if failed_since is not None:
            queued = await self._log.requeue_failed_since(failed_since, tenant_id or None, MAX_REQUEUED)
        else:
            queued = await self._given(tenant_id, ids)
        if queued:
            log.info("failed emails queued again", extra={"fields": {
                "emails": len(queued), "tenant_id": tenant_id or None,
                "failed_since": failed_since.isoformat() if failed_since else None}})
            self._on_queued()
        return queued

    async def _given(self, tenant_id: str, ids: Sequence[str]) -> list[str]:
        if not tenant_id:
            raise InvalidEmailRequest("tenant_id", "is required with ids")
        if len(ids) > MAX_BATCH:
            raise InvalidEmailRequest("ids", f"at most {MAX_BATCH} per call")
        canonical = []
        for i, email_id in enumerate(ids):
            try:
                canonical.append(str(uuid.UUID(email_id)))  # one spelling of an id, as the answer gives it
            except ValueError:
                raise InvalidEmailRequest(f"ids[{i}]", "is not an email id") from None
        wanted = list(dict.fromkeys(canonical))
        queued = await self._log.requeue(tenant_id, wanted)
        if len(queued) == len(wanted):
            return queued
        for email_id in wanted:  # none was queued: say why, for the first that could not be
            record = await self._log.get(tenant_id, email_id)
            if record is None:
                raise NotFound(f"no email {email_id} for this tenant")
            if record.status is not EmailStatus.FAILED:
                raise NotRetryable(f"email {email_id} is {record.status.value}, not failed")
        raise NotRetryable("the emails changed while being queued; ask again")


class _OutcomeWriter:
    """Records outcomes as they come, one write at a time: each write takes all that came meanwhile. What
    the server accepted is recorded milliseconds later, not once the whole round is done, so a crash
    repeats few emails; and a busy round still writes many outcomes at once."""

    def __init__(self, log_: EmailLog) -> None:
        self._log = log_
        self._waiting: list[DeliveryResult] = []
        self._writing: asyncio.Task[None] | None = None
        self._error: Exception | None = None

    def add(self, outcome: DeliveryResult) -> None:
        self._waiting.append(outcome)
        if self._writing is None and self._error is None:
            self._writing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._waiting:
                outcomes, self._waiting = self._waiting, []
                await self._log.record_outcomes(outcomes)
        except Exception as exc:  # the database away: the round fails, and its leases run out
            self._error = exc
        finally:
            self._writing = None

    async def done(self) -> None:
        """Once every outcome added is recorded; raises what a write raised."""
        if self._writing is not None:
            await self._writing
        if self._error is not None:
            raise self._error


class DeliverEmails:
    """Sends what is due, a few at a time, and records what became of each.

    A claimed email is leased: no other worker takes it until the lease runs out. A send starts only while
    its lease has at least twice `send_limit` (the most a send may take) left, so the send and the record of
    its outcome are done before another replica could take the email and send it again. One that would
    start later (a relay so slow that the round outlasts that) is given back, due at once, unsent.
    """

    def __init__(self, log_: EmailLog, sender: MailSender, policy: RetryPolicy, *,
                 clock: Callable[[], datetime], concurrency: int = 4, send_limit: timedelta = timedelta(seconds=60),
                 rng: random.Random | None = None) -> None:
        self._log = log_
        self._sender = sender
        self._policy = policy
        self._clock = clock
        self._concurrency = concurrency
        self._send_limit = send_limit
        self._lease = 3 * send_limit
        self._rng = rng or random.Random()

    async def run_once(self, limit: int = 200) -> int:
        claimed_at = self._clock()  # before the claim: the leases end no sooner than this says
        due = await self._log.claim_due(limit, self._lease)
        last_start = claimed_at + self._lease - 2 * self._send_limit
        slots = asyncio.Semaphore(self._concurrency)
        writer = _OutcomeWriter(self._log)

        async def deliver(record: EmailRecord) -> None:
            async with slots:
                if self._clock() > last_start:
                    writer.add(self._give_back(record))
                    return
                outcome = await self._deliver(record)
            writer.add(outcome)

        try:
            await asyncio.gather(*(deliver(r) for r in due))
        except asyncio.CancelledError:
            # Stopped past the grace period: what the relay accepted is still recorded, not sent again.
            with contextlib.suppress(Exception):
                await writer.done()
            raise
        await writer.done()
        return len(due)

    def _give_back(self, record: EmailRecord) -> DeliveryResult:
        log.info("email given back unsent: its lease would not outlast a send",
                 extra={"fields": {"email_id": record.id, "email_type": record.email_type}})
        return DeliveryResult(record.id, record.status, record.error_message, self._clock(), record.email_type,
                       attempted=False)

    async def _deliver(self, record: EmailRecord) -> DeliveryResult:
        message = OutgoingMessage(record.message_id, record.to_email, record.to_name, record.tenant_name,
                                  record.subject, record.html, record.text)
        fields = {"email_id": record.id, "email_type": record.email_type, "attempt": record.attempts}
        try:
            await self._sender.send(message)
        except PermanentSendError as exc:
            log.warning("email refused", extra={"fields": {**fields, "reply": str(exc)}})
            return DeliveryResult(record.id, EmailStatus.FAILED, str(exc), email_type=record.email_type)
        except TransientSendError as exc:
            # The window counts from when the email was queued: accepted, or queued again by an operator.
            too_old = self._clock() - (record.requeued_at or record.created_at) > self._policy.give_up_after
            if record.attempts >= self._policy.max_attempts or too_old:
                log.warning("email retries exhausted", extra={"fields": {**fields, "error": str(exc)}})
                return DeliveryResult(record.id, EmailStatus.FAILED, f"gave up after {record.attempts} attempts: {exc}",
                               email_type=record.email_type)
            delay = self._policy.next_delay(record.attempts, self._rng)
            log.info("email will be retried", extra={"fields": {**fields, "error": str(exc), "delay": delay}})
            return DeliveryResult(record.id, EmailStatus.RETRYING, str(exc), self._clock() + timedelta(seconds=delay),
                           record.email_type)
        log.info("email sent", extra={"fields": fields})
        return DeliveryResult(record.id, EmailStatus.SENT, email_type=record.email_type)
