"""The notifier against a real SMTP server (STARTTLS + AUTH) and a real PostgreSQL email log."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from devstack.mailsink import MailSink
from devstack.stack import free_port
from notifier.adapters.postgres import PostgresEmailLog
from notifier.adapters.smtp import SmtpSender, SmtpSettings
from notifier.domain.model import IdempotencyConflict
from notifier.domain.accept import AcceptEmail, EmailFactory, InlineEmails
from notifier.domain.deliver import DeliverEmails, RetryPolicy
from notifier.domain.operations import RequeueFailedEmails
from notifier.domain.ports import DeliveryResult, OutgoingMessage, TransientSendError
from notifier.domain.contents import EmailKind
from notifier.domain.model import EmailStatus
from notifier.domain.render import Renderer
from notifier.domain.samples import sample

FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)
INLINE = InlineEmails(EmailFactory(Renderer(), "boxcostpro.com"))


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


def smtp_settings(server, **overrides) -> SmtpSettings:
    base = dict(host="127.0.0.1", port=server.port, username="mailer", password="s3cret",
                from_email="noreply@boxcostpro.com", tls="starttls", timeout_seconds=5, ca_file=str(server.ca_file))
    return SmtpSettings(**{**base, **overrides})


@pytest.fixture
async def notifier(pool, smtp_server):
    email_log = PostgresEmailLog(pool)
    sender = SmtpSender(smtp_settings(smtp_server), connections=2)
    accept = AcceptEmail(email_log, INLINE)
    deliver = DeliverEmails(email_log, sender, FAST_RETRY, clock=lambda: datetime.now(UTC), rng=random.Random(1))
    yield accept, deliver, email_log
    await sender.close()


async def deliver_until(deliver, email_log, email_id, status, timeout=10.0):
    """Run delivery rounds until the email reaches `status` (polling, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        await deliver.run_once()
        record = await email_log.get("tenant_demo", email_id)
        if record.status is status:
            return record
        assert time.monotonic() < deadline, f"email stayed {record.status}"
        await asyncio.sleep(0.02)


async def test_sent_email_arrives_with_both_parts_and_headers(notifier, smtp_server):
    accept, deliver, email_log = notifier
    record, created = await accept.execute("k-1", sample(EmailKind.PAYMENT_RECEIVED))
    assert created and record.status is EmailStatus.QUEUED
    sent = await deliver_until(deliver, email_log, record.id, EmailStatus.SENT)
    assert sent.sent and sent.sent_at and sent.attempts == 1
    [message] = smtp_server.messages
    assert message["Subject"] == "Payment received: $49.99"
    assert message["To"] == "Asha Rao <asha@example.com>"
    assert message["From"] == "Shree Packaging via BoxCostPro <noreply@boxcostpro.com>"
    assert message["Message-ID"] == record.message_id
    assert message.get_body(("plain",)).get_content().startswith("Hi Asha Rao,")
    assert "We received your payment" in message.get_body(("html",)).get_content()


async def test_same_idempotency_key_gives_one_email(notifier, smtp_server):
    accept, deliver, email_log = notifier
    first, created = await accept.execute("k-dup", sample(EmailKind.PAYMENT_RECEIVED))
    again, created_again = await accept.execute("k-dup", sample(EmailKind.PAYMENT_RECEIVED))
    assert created and not created_again and again.id == first.id
    await deliver_until(deliver, email_log, first.id, EmailStatus.SENT)
    await deliver.run_once()
    assert len(smtp_server.messages) == 1
    with pytest.raises(IdempotencyConflict):
        await accept.execute("k-dup", sample(EmailKind.PAYMENT_FAILED))


@pytest.mark.parametrize("reply", ["421 4.7.0 Try again later", "451 4.3.0 Temporary local problem"])
async def test_transient_reply_is_retried_then_sent(notifier, smtp_server, reply):
    accept, deliver, email_log = notifier
    smtp_server.fail_next(reply)
    record, _ = await accept.execute("k-retry", sample(EmailKind.PAYMENT_FAILED))
    await deliver.run_once()
    retrying = await email_log.get("tenant_demo", record.id)
    assert retrying.status is EmailStatus.RETRYING and reply[:3] in retrying.error_message
    sent = await deliver_until(deliver, email_log, record.id, EmailStatus.SENT)
    assert sent.attempts == 2 and len(smtp_server.messages) == 1


async def test_permanent_reply_ends_failed_with_the_reply_logged(notifier, smtp_server):
    accept, deliver, email_log = notifier
    smtp_server.fail_next("550 5.1.1 Mailbox does not exist")
    record, _ = await accept.execute("k-550", sample(EmailKind.PAYMENT_REFUNDED))
    failed = await deliver_until(deliver, email_log, record.id, EmailStatus.FAILED)
    assert failed.error_message == "550 5.1.1 Mailbox does not exist" and not failed.sent
    assert smtp_server.messages == []


async def test_a_failed_email_queued_again_by_an_operator_is_delivered_once_with_its_message_id(
        notifier, smtp_server, pool):
    # The relay refused everything for a while (its sender policy, say); once fixed, the operator sends
    # the failed email again. It keeps its id and Message-ID, and its retry window starts afresh.
    accept, deliver, email_log = notifier
    smtp_server.fail_next("554 5.7.1 Relay access denied")
    record, _ = await accept.execute("k-relay", sample(EmailKind.PAYMENT_RECEIVED))
    await deliver_until(deliver, email_log, record.id, EmailStatus.FAILED)
    await pool.execute("UPDATE notifier.email_logs SET created_at = now() - interval '3 days'")
    woken = []
    requeue = RequeueFailedEmails(email_log, on_queued=lambda: woken.append(True))

    assert await requeue.execute("tenant_demo", [record.id, record.id.upper()], None) == [record.id]
    queued = await email_log.get("tenant_demo", record.id)
    assert (queued.status, queued.attempts, woken) == (EmailStatus.QUEUED, 0, [True])
    assert queued.requeued_at is not None and queued.message_id == record.message_id
    smtp_server.fail_next("451 4.3.0 busy")  # accepted three days ago, but queued just now: retried
    await deliver.run_once()
    assert (await email_log.get("tenant_demo", record.id)).status is EmailStatus.RETRYING
    sent = await deliver_until(deliver, email_log, record.id, EmailStatus.SENT)
    assert sent.attempts == 2
    [message] = smtp_server.messages
    assert message["Message-ID"] == record.message_id


async def test_every_email_failed_since_a_time_is_queued_again_and_no_other(notifier, smtp_server, pool):
    accept, deliver, email_log = notifier
    emails = {}
    for key, tenant, reply in (("k-a", "tenant_demo", "554 no"), ("k-b", "tenant_other", "554 no"),
                               ("k-c", "tenant_demo", "554 no"), ("k-old", "tenant_demo", "554 no"),
                               ("k-sent", "tenant_demo", None)):
        if reply:
            smtp_server.fail_next(reply)
        record, _ = await accept.execute(key, replace(sample(EmailKind.PAYMENT_RECEIVED), tenant_id=tenant))
        await deliver.run_once()
        emails[key] = record.id
    await pool.execute("UPDATE notifier.email_logs SET updated_at = now() - interval '2 hours' WHERE id = $1",
                       uuid.UUID(emails["k-old"]))
    requeue = RequeueFailedEmails(email_log)
    since = datetime.now(UTC) - timedelta(hours=1)

    assert await requeue.execute("tenant_other", [], since) == [emails["k-b"]]
    assert await email_log.requeue_failed_since(since, None, 1) == [emails["k-a"]]  # a share: earliest first
    assert await requeue.execute("", [], since) == [emails["k-c"]]  # what stayed failed in the window
    statuses = dict(await pool.fetch("SELECT idempotency_key, status FROM notifier.email_logs"))
    assert statuses == {"k-a": "queued", "k-b": "queued", "k-c": "queued", "k-old": "failed", "k-sent": "sent"}


async def test_after_a_refused_recipient_the_same_session_carries_the_next_email(pool, smtp_server):
    email_log = PostgresEmailLog(pool)
    sender = SmtpSender(smtp_settings(smtp_server), connections=1)  # one session for both emails
    deliver = DeliverEmails(email_log, sender, FAST_RETRY, clock=lambda: datetime.now(UTC))
    smtp_server.handler.unknown_recipients.add("gone@example.com")
    accept = AcceptEmail(email_log, INLINE)
    refused, _ = await accept.execute("k-refused", replace(sample(EmailKind.PAYMENT_FAILED), to_email="gone@example.com"))
    failed = await deliver_until(deliver, email_log, refused.id, EmailStatus.FAILED)
    assert failed.error_message == "550 5.1.1 No such mailbox"
    fine, _ = await accept.execute("k-fine", sample(EmailKind.PAYMENT_RECEIVED))
    await deliver_until(deliver, email_log, fine.id, EmailStatus.SENT)  # the envelope was reset
    [message] = smtp_server.messages
    assert message["Message-ID"] == fine.message_id
    await sender.close()


async def test_smtp_server_down_then_up_delivers(pool):
    port = free_port()
    email_log = PostgresEmailLog(pool)
    settings = SmtpSettings(host="127.0.0.1", port=port, username=None, password=None,
                            from_email="noreply@boxcostpro.com", tls="none", timeout_seconds=2)
    sender = SmtpSender(settings, connections=1)
    deliver = DeliverEmails(email_log, sender, FAST_RETRY, clock=lambda: datetime.now(UTC))
    record, _ = await AcceptEmail(email_log, INLINE).execute(
        "k-down", sample(EmailKind.SUBSCRIPTION_ACTIVATED))
    await deliver.run_once()
    assert (await email_log.get("tenant_demo", record.id)).status is EmailStatus.RETRYING
    sink = MailSink(port).start()
    try:
        await deliver_until(deliver, email_log, record.id, EmailStatus.SENT)
        assert len(sink.messages) == 1
    finally:
        sink.stop()
        await sender.close()


async def test_retries_stop_after_the_limit(pool, smtp_server):
    email_log = PostgresEmailLog(pool)
    sender = SmtpSender(smtp_settings(smtp_server), connections=1)
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
    deliver = DeliverEmails(email_log, sender, policy, clock=lambda: datetime.now(UTC))
    smtp_server.fail_next(*["451 4.3.0 busy"] * 5)
    record, _ = await AcceptEmail(email_log, INLINE).execute(
        "k-limit", sample(EmailKind.TICKET_UPDATED))
    failed = await deliver_until(deliver, email_log, record.id, EmailStatus.FAILED)
    assert failed.attempts == 2 and "gave up after 2 attempts" in failed.error_message
    await sender.close()


async def test_retry_delays_grow_with_jitter_and_stay_bounded():
    policy = RetryPolicy(base_delay=2, max_delay=600)
    rng = random.Random(5)
    ceilings = [min(600, 2 * 2 ** (n - 1)) for n in range(1, 15)]
    delays = [policy.next_delay(n, rng) for n in range(1, 15)]
    assert all(0.2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 3) for d in delays}) == len(delays)  # jittered, not lock-step
    assert timedelta(seconds=max(delays)) <= timedelta(minutes=10)


async def test_an_email_given_back_unsent_is_due_at_once_with_its_claim_not_counted(pool):
    email_log = PostgresEmailLog(pool)
    record, _ = await AcceptEmail(email_log, INLINE).execute("k-back", sample(EmailKind.TICKET_UPDATED))
    [claimed] = await email_log.claim_due(10, timedelta(minutes=3))
    assert claimed.id == record.id and claimed.attempts == 1
    await email_log.record_outcomes([DeliveryResult(record.id, record.created_at, EmailStatus.QUEUED, None, datetime.now(UTC),
                                             attempted=False)])
    back = await email_log.get("tenant_demo", record.id)
    assert (back.status, back.attempts) == (EmailStatus.QUEUED, 0)
    assert [r.id for r in await email_log.claim_due(10, timedelta(minutes=3))] == [record.id]


async def test_a_relay_answering_each_step_just_in_time_is_given_up_at_the_send_limit():
    # Every reply comes inside the step timeout (0.75 s of 1 s), so no step times out, but the six replies
    # of a send take longer than four steps' worth: it is given up at the send limit, and never completes.
    completed: list[bytes] = []
    sessions: list[asyncio.Task] = []

    async def slow_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sessions.append(asyncio.current_task())

        async def reply(line: str) -> None:
            await asyncio.sleep(0.75)
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        try:
            await reply("220 slow.example ESMTP")
            while line := await reader.readline():
                command = line.strip().upper()
                if command.startswith((b"EHLO", b"HELO")):
                    await reply("250 slow.example")
                elif command == b"DATA":
                    await reply("354 go ahead")
                    await reader.readuntil(b"\r\n.\r\n")
                    await reply("250 2.0.0 queued")
                    completed.append(command)
                else:
                    await reply("250 2.1.0 ok")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the sender gave up and hung up
        finally:
            writer.close()

    server = await asyncio.start_server(slow_relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = SmtpSettings(host="127.0.0.1", port=port, username=None, password=None,
                            from_email="noreply@boxcostpro.com", tls="none", timeout_seconds=1.0)
    sender = SmtpSender(settings, connections=1)
    message = OutgoingMessage("<slow@boxcostpro.com>", "c@example.com", "", "BoxCostPro", "s", "<p>h</p>", "h")
    try:
        with pytest.raises(TransientSendError, match="^send limit: not sent within 4 s"):
            await sender.send(message)
        assert completed == []
    finally:
        await sender.close()
        server.close()
        for session in sessions:
            session.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        await server.wait_closed()
