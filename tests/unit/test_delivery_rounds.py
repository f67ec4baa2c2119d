"""A delivery round records each email's outcome as it comes, and sends nothing its lease may not cover."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from notifier.domain.deliver import DeliverEmails, RetryPolicy
from notifier.domain.model import EmailRecord, EmailStatus

from tests.support import wait_for

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def record(n: int) -> EmailRecord:
    return EmailRecord(id=f"email-{n}", tenant_id="acme", user_id="u1", to_email=f"c{n}@example.com", to_name="",
                       subject="Payment received", email_type="payment_received", status=EmailStatus.QUEUED,
                       attempts=1, idempotency_key=f"key-{n}", message_id=f"<{n}@boxcostpro.com>", created_at=T0)


class Log:
    """Claims hand out `due` once; outcomes are kept in the order written, one list per write."""

    def __init__(self, due: list[EmailRecord], write_gate: asyncio.Event | None = None) -> None:
        self.due = due
        self.writes: list[list] = []
        self.lease: timedelta | None = None
        self.write_gate = write_gate

    async def claim_due(self, limit: int, lease: timedelta) -> list[EmailRecord]:
        self.lease = lease
        due, self.due = self.due[:limit], self.due[limit:]
        return due

    async def record_outcomes(self, outcomes) -> None:
        if self.write_gate is not None:
            await self.write_gate.wait()
        self.writes.append(list(outcomes))

    def recorded(self) -> dict:
        return {o.email_id: o for write in self.writes for o in write}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class SlowSender:
    """Each send takes `seconds` on the clock; `gate`, when set, holds every send after the first."""

    def __init__(self, clock: Clock, seconds: float = 0.0, gate: asyncio.Event | None = None) -> None:
        self.clock, self.seconds, self.gate = clock, seconds, gate
        self.sent: list[str] = []

    async def send(self, message) -> None:
        if self.gate is not None and self.sent:
            await self.gate.wait()
        self.clock.now += timedelta(seconds=self.seconds)
        self.sent.append(message.message_id)


async def test_an_accepted_email_is_recorded_sent_while_the_round_still_sends():
    clock, gate = Clock(), asyncio.Event()
    log, sender = Log([record(1), record(2)]), SlowSender(Clock(), gate=gate)
    deliver = DeliverEmails(log, sender, RetryPolicy(), clock=clock, concurrency=1)
    round_ = asyncio.create_task(deliver.run_once())

    async def first_recorded():
        return "email-1" in log.recorded()

    # A crash now would leave only the email in flight unrecorded, not the whole round.
    await wait_for(first_recorded, what="the first outcome to be written")
    assert log.recorded()["email-1"].status is EmailStatus.SENT and not round_.done()
    gate.set()
    assert await round_ == 2
    assert {i: o.status for i, o in log.recorded().items()} == {"email-1": EmailStatus.SENT,
                                                                "email-2": EmailStatus.SENT}


async def test_a_round_stopped_midway_ends_once_what_the_relay_accepted_is_recorded():
    send_gate, write_gate = asyncio.Event(), asyncio.Event()
    log = Log([record(1), record(2)], write_gate=write_gate)
    sender = SlowSender(Clock(), gate=send_gate)
    round_ = asyncio.create_task(DeliverEmails(log, sender, RetryPolicy(), clock=Clock(), concurrency=1).run_once())

    async def first_sent():
        return len(sender.sent) == 1

    await wait_for(first_sent, what="the first send")
    round_.cancel()  # as the worker does when the grace period runs out
    done, _ = await asyncio.wait({round_}, timeout=0.1)
    assert not done  # still writing the first email's outcome
    write_gate.set()
    with pytest.raises(asyncio.CancelledError):
        await round_
    assert [(o.email_id, o.status) for o in log.recorded().values()] == [("email-1", EmailStatus.SENT)]


async def test_a_round_slower_than_its_lease_allows_gives_the_rest_back_unsent_and_uncounted():
    # Sends may take a minute, so the lease is three: a send starts only in the lease's first minute,
    # leaving the send and its record a minute to spare before another replica may claim the email.
    clock = Clock()
    log, sender = Log([record(n) for n in range(1, 5)]), SlowSender(clock, seconds=40)
    deliver = DeliverEmails(log, sender, RetryPolicy(), clock=clock, concurrency=1,
                            send_limit=timedelta(seconds=60))
    assert await deliver.run_once() == 4
    assert log.lease == timedelta(minutes=3)
    assert sender.sent == ["<1@boxcostpro.com>", "<2@boxcostpro.com>"]  # started at 0 s and 40 s, not at 80 s
    recorded = log.recorded()
    assert [(recorded[f"email-{n}"].status, recorded[f"email-{n}"].attempted) for n in range(1, 5)] == [
        (EmailStatus.SENT, True), (EmailStatus.SENT, True), (EmailStatus.QUEUED, False), (EmailStatus.QUEUED, False)]
    # Due again at once, for a round of its own.
    assert recorded["email-3"].next_attempt_at == T0 + timedelta(seconds=80)
