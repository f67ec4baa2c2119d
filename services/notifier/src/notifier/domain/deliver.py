"""Use case: deliver due emails, each retried with backoff until sent or given up.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from notifier.domain.model import EmailRecord, EmailStatus
from notifier.domain.ports import (
    DeliveryResult,
    EmailLog,
    MailSender,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)

log = logging.getLogger(__name__)


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


ROUND_SIZE = 200  # emails one worker claims at a time


class _ResultWriter:
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

    async def run_once(self, limit: int = ROUND_SIZE) -> int:
        claimed_at = self._clock()  # before the claim: the leases end no sooner than this says
        due = await self._log.claim_due(limit, self._lease)
        last_start = claimed_at + self._lease - 2 * self._send_limit
        slots = asyncio.Semaphore(self._concurrency)
        writer = _ResultWriter(self._log)

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
        return DeliveryResult(record.id, record.created_at, record.status, record.error_message, self._clock(),
                              record.email_type, attempted=False)

    async def _deliver(self, record: EmailRecord) -> DeliveryResult:
        message = OutgoingMessage(record.message_id, record.to_email, record.to_name, record.tenant_name,
                                  record.subject, record.html, record.text, record.reply_to)
        fields = {"email_id": record.id, "email_type": record.email_type, "attempt": record.attempts}
        try:
            await self._sender.send(message)
        except PermanentSendError as exc:
            log.warning("email refused", extra={"fields": {**fields, "reply": str(exc)}})
            return DeliveryResult(record.id, record.created_at, EmailStatus.FAILED, str(exc),
                                  email_type=record.email_type)
        except TransientSendError as exc:
            # The window counts from when the email was queued: accepted, or queued again by an operator.
            too_old = self._clock() - (record.requeued_at or record.created_at) > self._policy.give_up_after
            if record.attempts >= self._policy.max_attempts or too_old:
                log.warning("email retries exhausted", extra={"fields": {**fields, "error": str(exc)}})
                return DeliveryResult(record.id, record.created_at, EmailStatus.FAILED,
                                      f"gave up after {record.attempts} attempts: {exc}", email_type=record.email_type)
            delay = self._policy.next_delay(record.attempts, self._rng)
            log.info("email will be retried", extra={"fields": {**fields, "error": str(exc), "delay": delay}})
            return DeliveryResult(record.id, record.created_at, EmailStatus.RETRYING, str(exc),
                                  self._clock() + timedelta(seconds=delay), record.email_type)
        log.info("email sent", extra={"fields": fields})
        return DeliveryResult(record.id, record.created_at, EmailStatus.SENT, email_type=record.email_type)
