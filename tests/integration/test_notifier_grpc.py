"""The notifier's gRPC API on a real server and PostgreSQL: send, get, list, preview, and refusals."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest
from boxcost.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp
from notifier.adapters.postgres import PostgresEmailLog
from notifier.adapters.workers import WorkerEmails
from notifier import cli as notifier_cli
from notifier.api.servicer import NotifierServicer
from notifier.domain import operations as notifier_operations
from notifier.domain.erasure import EraseRecipient
from notifier.domain.accept import AcceptEmail
from notifier.domain.operations import ReadEmails, RequeueFailedEmails
from notifier.domain.render import Renderer
import asyncpg
from billing.adapters import outbox as billing_outbox
from billing.adapters.email_messages import email_content
from billing.domain.dispatch import OutboxItem
from billing.domain.email_contents import Money, PaymentReceived, SubscriptionActivated
from billing.domain.notifications import EmailAmendment, EmailIntent


@pytest.fixture(scope="module")
def workers():
    """Emails are made in two worker processes, as the service does: batches split and rejoined in order."""
    workers = WorkerEmails(2, "boxcostpro.com")
    yield workers
    workers.close()


@pytest.fixture
async def notifier_addr(database_url, workers):
    """The notifier's API served on a local port."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    email_log = PostgresEmailLog(pool)
    renderer = Renderer()
    server = grpc.aio.server()
    notifier_pb2_grpc.add_NotifierServiceServicer_to_server(
        NotifierServicer(AcceptEmail(email_log, workers), ReadEmails(email_log), renderer,
                         RequeueFailedEmails(email_log), EraseRecipient(email_log)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)
    await pool.close()


@pytest.fixture
async def stub(notifier_addr):
    channel = grpc.aio.insecure_channel(notifier_addr)
    yield notifier_pb2_grpc.NotifierServiceStub(channel)
    await channel.close()


def content(tenant="t1", email="asha@example.com", name="Asha", **overrides):
    paid = Timestamp()
    paid.FromSeconds(1_773_480_600)
    fields = dict(tenant_id=tenant, user_id="u1", tenant_name="Shree Packaging",
                  to=notifier_pb2.Recipient(email=email, name=name),
                  payment_received=notifier_pb2.PaymentReceived(
                      transaction_id="txn-1", amount=notifier_pb2.Money(amount_minor=4999, currency="USD"),
                      payment_method="card", payment_date=paid))
    fields.update(overrides)
    return notifier_pb2.EmailContent(**fields)


async def test_send_stores_once_per_idempotency_key(stub):
    first = await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key="k1", content=content()))
    again = await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key="k1", content=content()))
    assert first.created and not again.created and first.email.id == again.email.id
    assert first.email.status == notifier_pb2.EMAIL_STATUS_QUEUED and not first.email.sent
    assert first.email.subject == "Payment received: $49.99" and first.email.email_type == "payment_received"


async def test_reusing_a_key_for_another_email_is_already_exists(stub):
    await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key="k2", content=content()))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key="k2", content=content(name="Other")))
    assert error.value.code() is grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("request_", "field"),
    [(notifier_pb2.SendEmailRequest(content=content()), "idempotency_key"),
     (notifier_pb2.SendEmailRequest(idempotency_key="k", content=content(email="nope")), "content.to.email"),
     (notifier_pb2.SendEmailRequest(idempotency_key="k", content=content(name="A\r\nBcc: x@y.z")), "content.to.name"),
     (notifier_pb2.SendEmailRequest(idempotency_key="k", content=content(tenant="")), "content.tenant_id"),
     (notifier_pb2.SendEmailRequest(idempotency_key="k", content=notifier_pb2.EmailContent(
         tenant_id="t1", tenant_name="S", to=notifier_pb2.Recipient(email="a@b.co"))), "content.kind"),
     (notifier_pb2.SendEmailRequest(idempotency_key="k", content=content(
         payment_received=notifier_pb2.PaymentReceived(transaction_id="x"))), "content.payment_received.amount"),
     (notifier_pb2.SendEmailRequest(idempotency_key="k", content=content(tenant_name="Shree\x00")), "content.tenant_name"),
     (notifier_pb2.SendEmailRequest(idempotency_key="k", content=content(payment_received=notifier_pb2.PaymentReceived(
         transaction_id="x", amount=notifier_pb2.Money(amount_minor=1, currency="USD"),
         payment_date=Timestamp(seconds=2**40)))), "content.payment_received.payment_date")],
)
async def test_bad_requests_are_invalid_argument_naming_the_field_and_store_nothing(stub, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.SendEmail(request_)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(field)
    listed = await stub.ListEmails(notifier_pb2.ListEmailsRequest(tenant_id="t1"))
    assert list(listed.emails) == []


async def test_get_is_scoped_to_the_tenant(stub):
    sent = await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key="k3", content=content(tenant="t1")))
    got = await stub.GetEmail(notifier_pb2.GetEmailRequest(tenant_id="t1", id=sent.email.id))
    assert got.email.to_email == "asha@example.com"
    for tenant, email_id in (("t2", sent.email.id), ("t1", "not-a-uuid")):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetEmail(notifier_pb2.GetEmailRequest(tenant_id=tenant, id=email_id))
        assert error.value.code() is grpc.StatusCode.NOT_FOUND


async def test_an_overlong_id_is_invalid_argument_with_a_short_message(stub):
    # Quoting a 10,000-character id back would not even fit in gRPC's trailers (RESOURCE_EXHAUSTED).
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetEmail(notifier_pb2.GetEmailRequest(tenant_id="t1", id="i" * 10_000))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "id: must be at most 255 characters"


async def test_list_pages_through_a_tenants_emails_with_filters(stub):
    for i in range(7):
        await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key=f"p{i}", content=content(tenant="t1")))
    await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key="other", content=content(tenant="t2")))
    seen, token = [], ""
    while True:
        page = await stub.ListEmails(notifier_pb2.ListEmailsRequest(tenant_id="t1", page_size=3, page_token=token))
        seen += [e.id for e in page.emails]
        assert all(e.tenant_id == "t1" for e in page.emails)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 7
    queued = await stub.ListEmails(notifier_pb2.ListEmailsRequest(
        tenant_id="t1", status=notifier_pb2.EMAIL_STATUS_SENT))
    assert list(queued.emails) == []
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ListEmails(notifier_pb2.ListEmailsRequest(tenant_id="t1", page_token="garbage"))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ListEmails(notifier_pb2.ListEmailsRequest())
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    of_type = await stub.ListEmails(notifier_pb2.ListEmailsRequest(tenant_id="t1", email_type="payment_received"))
    assert len(of_type.emails) == 7  # all of t1's receipts


@pytest.mark.parametrize(("request_", "field"), [
    (notifier_pb2.ListEmailsRequest(tenant_id="t1", email_type="payment_recieved"), "email_type"),
    (notifier_pb2.ListEmailsRequest(tenant_id="t1", status=9), "status")])
async def test_filters_the_server_does_not_know_are_refused_not_read_as_nothing_or_everything(stub, request_, field):
    await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key="f1", content=content(tenant="t1")))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ListEmails(request_)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT and error.value.details().startswith(field)


async def test_preview_renders_without_storing(stub):
    preview = await stub.PreviewEmail(notifier_pb2.PreviewEmailRequest(content=content(tenant="t9")))
    assert preview.subject == "Payment received: $49.99"
    assert "We received your payment" in preview.html and "Amount: $49.99" in preview.text
    assert list((await stub.ListEmails(notifier_pb2.ListEmailsRequest(tenant_id="t9"))).emails) == []


async def test_billings_activation_of_a_plan_it_cannot_name_is_sent_naming_none(stub):
    # Billing leaves the plan out when it knows only the provider's id of it; the notifier takes that.
    activated = EmailIntent("sub:1:activated", "t1", "u1", "asha@example.com", "", SubscriptionActivated(
        plan=None, price=None, next_billing_date=datetime(2026, 12, 28, tzinfo=UTC)))
    reply = await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key=activated.idempotency_key,
                                                               content=email_content(activated)))
    assert reply.created and reply.email.subject == "Your subscription is active"


async def test_a_batch_judges_each_email_alone_and_stores_each_key_once(stub, database_url):
    await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key="earlier", content=content()))
    reply = await stub.SendEmails(notifier_pb2.SendEmailsRequest(emails=[
        notifier_pb2.SendEmailRequest(idempotency_key="b1", content=content()),
        notifier_pb2.SendEmailRequest(idempotency_key="b2", content=content(email="nope")),
        notifier_pb2.SendEmailRequest(idempotency_key="earlier", content=content()),
        notifier_pb2.SendEmailRequest(idempotency_key="earlier", content=content(name="Other")),
        notifier_pb2.SendEmailRequest(idempotency_key="b1", content=content()),
        notifier_pb2.SendEmailRequest(idempotency_key="b3", content=notifier_pb2.EmailContent(tenant_id="t1")),
        notifier_pb2.SendEmailRequest(idempotency_key="b4", content=content(name="As\x00ha")),
    ]))
    first, invalid, repeat, conflict, again, no_kind, nul = reply.results
    assert first.accepted.created and first.accepted.email.to_email == "asha@example.com"
    assert invalid.refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "content.to.email" in invalid.refused.message
    assert repeat.HasField("accepted") and not repeat.accepted.created
    assert conflict.refused.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert again.HasField("accepted") and not again.accepted.created
    assert again.accepted.email.id == first.accepted.email.id
    assert no_kind.refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "content.kind" in no_kind.refused.message
    assert nul.refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert nul.refused.message == "content.to.name: must not contain NUL characters"
    conn = await asyncpg.connect(database_url)
    try:
        keys = await conn.fetch("SELECT idempotency_key FROM notifier.email_logs ORDER BY idempotency_key")
    finally:
        await conn.close()
    assert [k["idempotency_key"] for k in keys] == ["b1", "earlier"]


async def test_a_batch_over_the_limit_is_refused_whole(stub):
    too_many = [notifier_pb2.SendEmailRequest(idempotency_key=f"k{n}", content=content()) for n in range(501)]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.SendEmails(notifier_pb2.SendEmailsRequest(emails=too_many))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "emails" in error.value.details()


async def _retry_refused(stub, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.RetryEmails(request)
    return error.value.code(), error.value.details()


async def test_retry_sends_failed_emails_again_all_or_none(stub, db):
    failed, queued = [
        (await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key=k, content=content()))).email.id
        for k in ("r-failed", "r-queued")]
    await db.execute("UPDATE notifier.email_logs SET status = 'failed', error_message = '554 no' "
                     "WHERE idempotency_key = 'r-failed'")
    since = Timestamp()
    since.GetCurrentTime()
    R = notifier_pb2.RetryEmailsRequest  # noqa: N806
    unknown = "00000000-0000-4000-8000-000000000000"
    for request, code, says in [
        (R(tenant_id="t1"), grpc.StatusCode.INVALID_ARGUMENT, "ids: give the emails' ids or failed_since"),
        (R(tenant_id="t1", ids=[failed], failed_since=since), grpc.StatusCode.INVALID_ARGUMENT, "ids: give"),
        (R(ids=[failed]), grpc.StatusCode.INVALID_ARGUMENT, "tenant_id: is required with ids"),
        (R(tenant_id="t1", ids=["nope"]), grpc.StatusCode.INVALID_ARGUMENT, "ids[0]: is not an email id"),
        (R(failed_since=Timestamp(seconds=-62_135_596_801)), grpc.StatusCode.INVALID_ARGUMENT,
         "failed_since: is not a valid timestamp"),
        (R(tenant_id="t1", ids=[failed, unknown]), grpc.StatusCode.NOT_FOUND, f"no email {unknown}"),
        (R(tenant_id="t2", ids=[failed]), grpc.StatusCode.NOT_FOUND, f"no email {failed} for this tenant"),
        (R(tenant_id="t1", ids=[failed, queued]), grpc.StatusCode.FAILED_PRECONDITION,
         f"email {queued} is queued, not failed"),
    ]:
        got, details = await _retry_refused(stub, request)
        assert got is code and details.startswith(says), (request, details)
    assert await db.fetchval("SELECT status FROM notifier.email_logs WHERE id = $1", uuid.UUID(failed)) == "failed"

    reply = await stub.RetryEmails(R(tenant_id="t1", ids=[failed]))
    assert list(reply.ids) == [failed]
    email = (await stub.GetEmail(notifier_pb2.GetEmailRequest(tenant_id="t1", id=failed))).email
    assert email.status == notifier_pb2.EMAIL_STATUS_QUEUED and email.attempts == 0
    assert email.HasField("requeued_at") and email.requeued_at.ToDatetime() >= email.created_at.ToDatetime()
    untouched = (await stub.GetEmail(notifier_pb2.GetEmailRequest(tenant_id="t1", id=queued))).email
    assert not untouched.HasField("requeued_at")


async def test_the_command_line_queues_a_time_window_again_share_by_share(notifier_addr, stub, db, monkeypatch,
                                                                          capsys):
    monkeypatch.setattr(notifier_operations, "MAX_REQUEUED", 2)  # shares of two, for three failed emails
    monkeypatch.setattr(notifier_cli, "MAX_REQUEUED", 2)
    monkeypatch.setenv("NOTIFIER_ADDR", notifier_addr)
    ids = [(await stub.SendEmail(notifier_pb2.SendEmailRequest(idempotency_key=f"w{n}", content=content()))).email.id
           for n in range(3)]
    await db.execute("UPDATE notifier.email_logs SET status = 'failed', updated_at = now() - interval '1 minute'")

    code = await asyncio.to_thread(notifier_cli.main, ["retry", "--failed-since", "2000-01-01T00:00:00Z"])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(out[:-1]) == sorted(ids) and out[-1] == "3 queued again"
    assert await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE status = 'queued'") == 3


async def test_billing_handing_over_an_amended_email_the_notifier_has_already_takes_it_as_delivered(
    notifier_addr, database_url
):
    # A receipt handed over, its answer lost; then its link came, and billing hands over the amended one.
    intent = EmailIntent("txn:9:payment_received", "t1", "u1", "asha@example.com", "Asha", PaymentReceived(
        transaction_id="txn-9", amount=Money(4999, "USD"), payment_date=datetime(2026, 11, 28, 9, tzinfo=UTC)))
    receipt = email_content(intent)
    amended = email_content(intent.amended(EmailAmendment(intent.idempotency_key, "payment_received", "receipt_url",
                                                          "https://pay.stripe.com/receipts/payment/x")))
    invalid = email_content(replace(intent, to_email="nope"))
    async with grpc.aio.insecure_channel(notifier_addr) as channel:
        notifier = billing_outbox.GrpcNotifier(channel)
        item = OutboxItem(id="o1", idempotency_key="txn:9:payment_received", kind="payment_received",
                          content=receipt, attempts=1)
        assert await notifier.send_emails([item]) == [None]
        again = [replace(item, content=amended, attempts=2), replace(item, id="o2", idempotency_key="k-bad",
                                                                      content=invalid)]
        assert [r and r.split(":")[0] for r in await notifier.send_emails(again)] == [None, "INVALID_ARGUMENT"]
    conn = await asyncpg.connect(database_url)
    try:
        [text] = await conn.fetch("SELECT body_text FROM notifier.email_logs WHERE idempotency_key = $1",
                                  item.idempotency_key)
    finally:
        await conn.close()
    assert "Receipt:" not in text["body_text"]  # the customer gets the version first handed over


async def test_concurrent_requests_with_one_key_store_one_email(stub, db):
    request = notifier_pb2.SendEmailRequest(idempotency_key="once", content=content())
    replies = await asyncio.gather(*(stub.SendEmail(request, timeout=10) for _ in range(12)))
    assert len({r.email.id for r in replies}) == 1
    assert await db.fetchval("SELECT count(*) FROM notifier.email_logs") == 1
