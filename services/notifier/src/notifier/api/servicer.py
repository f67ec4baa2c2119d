"""gRPC transport for the notifier: decode, call one use case, map results and errors."""

from __future__ import annotations

from datetime import datetime

import grpc
from boxcost.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from servicekit.authz import caller_name
from servicekit.grpcserve import maps_errors, nul_field
from servicekit.timestamps import field_datetime, to_timestamp

from notifier.domain.accept import AcceptEmail, Submission
from notifier.domain.operations import NotFound, NotRetryable, ReadEmails, RequeueFailedEmails
from notifier.domain.ports import ListFilter
from notifier.api.content_codec import decode_content
from notifier.domain.contents import InvalidEmailRequest
from notifier.domain.erasure import EraseRecipient
from notifier.domain.model import EmailRecord, EmailStatus, IdempotencyConflict, validate
from notifier.domain.render import Renderer

_STATUS_TO_PB = {
    EmailStatus.QUEUED: notifier_pb2.EMAIL_STATUS_QUEUED,
    EmailStatus.RETRYING: notifier_pb2.EMAIL_STATUS_RETRYING,
    EmailStatus.SENT: notifier_pb2.EMAIL_STATUS_SENT,
    EmailStatus.FAILED: notifier_pb2.EMAIL_STATUS_FAILED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}

# Domain error -> gRPC status code; anything else is a defect (INTERNAL, logged by grpc).
ERROR_CODES = {
    InvalidEmailRequest: grpc.StatusCode.INVALID_ARGUMENT,
    IdempotencyConflict: grpc.StatusCode.ALREADY_EXISTS,
    NotFound: grpc.StatusCode.NOT_FOUND,
    NotRetryable: grpc.StatusCode.FAILED_PRECONDITION,
    OSError: grpc.StatusCode.UNAVAILABLE,
}
errors = maps_errors(ERROR_CODES)
# SendEmails answers each email on its own: one it cannot store is refused alone, NUL characters included.
per_email_errors = maps_errors(ERROR_CODES, refuse_nul=False)


def _timestamp(message, field: str) -> datetime | None:
    try:
        return field_datetime(message, field)
    except ValueError:
        raise InvalidEmailRequest(field, "is not a valid timestamp") from None


def _submission(request: notifier_pb2.SendEmailRequest) -> Submission | InvalidEmailRequest:
    if (field := nul_field(request)) is not None:
        return InvalidEmailRequest(field, "must not contain NUL characters")
    try:
        return Submission(request.idempotency_key, decode_content(request.content), request.request_id)
    except InvalidEmailRequest as exc:
        return exc


def _result(result) -> notifier_pb2.SendEmailResult:
    if isinstance(result, Exception):
        code = ERROR_CODES[type(result)]
        return notifier_pb2.SendEmailResult(refused=notifier_pb2.EmailRefusal(code=code.value[0], message=str(result)))
    record, created = result
    return notifier_pb2.SendEmailResult(
        accepted=notifier_pb2.SendEmailResponse(email=encode_email(record), created=created))


def _status_filter(value: int) -> EmailStatus | None:
    """Unset lists every status; a value this server doesn't know is refused, never dropped."""
    if value == notifier_pb2.EMAIL_STATUS_UNSPECIFIED:
        return None
    if value not in _STATUS_FROM_PB:
        raise InvalidEmailRequest("status", "must be QUEUED, RETRYING, SENT, FAILED or unset")
    return _STATUS_FROM_PB[value]


def encode_email(record: EmailRecord) -> notifier_pb2.Email:
    return notifier_pb2.Email(
        id=record.id, tenant_id=record.tenant_id, user_id=record.user_id, to_email=record.to_email,
        subject=record.subject, email_type=record.email_type, status=_STATUS_TO_PB[record.status],
        sent=record.sent, error_message=record.error_message or "", attempts=record.attempts,
        next_attempt_at=to_timestamp(record.next_attempt_at), sent_at=to_timestamp(record.sent_at),
        created_at=to_timestamp(record.created_at), idempotency_key=record.idempotency_key,
        message_id=record.message_id, requeued_at=to_timestamp(record.requeued_at),
    )


class NotifierServicer(notifier_pb2_grpc.NotifierServiceServicer):
    def __init__(self, accept: AcceptEmail, read: ReadEmails, renderer: Renderer,
                 retry: RequeueFailedEmails, erase: EraseRecipient) -> None:
        self._accept = accept
        self._read = read
        self._renderer = renderer
        self._retry = retry
        self._erase = erase

    @errors
    async def SendEmail(self, request: notifier_pb2.SendEmailRequest,
                        context: grpc.aio.ServicerContext) -> notifier_pb2.SendEmailResponse:
        record, created = await self._accept.execute(request.idempotency_key, decode_content(request.content),
                                                     request.request_id)
        return notifier_pb2.SendEmailResponse(email=encode_email(record), created=created)

    @per_email_errors
    async def SendEmails(self, request: notifier_pb2.SendEmailsRequest,
                         context: grpc.aio.ServicerContext) -> notifier_pb2.SendEmailsResponse:
        results = await self._accept.execute_many([_submission(r) for r in request.emails])
        return notifier_pb2.SendEmailsResponse(results=[_result(r) for r in results])

    @errors
    async def GetEmail(self, request: notifier_pb2.GetEmailRequest,
                       context: grpc.aio.ServicerContext) -> notifier_pb2.GetEmailResponse:
        record = await self._read.get(request.tenant_id, request.id)
        return notifier_pb2.GetEmailResponse(email=encode_email(record))

    @errors
    async def ListEmails(self, request: notifier_pb2.ListEmailsRequest,
                         context: grpc.aio.ServicerContext) -> notifier_pb2.ListEmailsResponse:
        where = ListFilter(tenant_id=request.tenant_id, user_id=request.user_id or None,
                           email_type=request.email_type or None, status=_status_filter(request.status))
        records, token = await self._read.list(where, request.page_size, request.page_token)
        return notifier_pb2.ListEmailsResponse(emails=[encode_email(r) for r in records],
                                               next_page_token=token or "")

    @errors
    async def PreviewEmail(self, request: notifier_pb2.PreviewEmailRequest,
                           context: grpc.aio.ServicerContext) -> notifier_pb2.PreviewEmailResponse:
        rendered = self._renderer.render(validate(decode_content(request.content)))
        return notifier_pb2.PreviewEmailResponse(subject=rendered.subject, html=rendered.html, text=rendered.text)

    @errors
    async def RetryEmails(self, request: notifier_pb2.RetryEmailsRequest,
                          context: grpc.aio.ServicerContext) -> notifier_pb2.RetryEmailsResponse:
        ids = await self._retry.execute(request.tenant_id, list(request.ids), _timestamp(request, "failed_since"))
        return notifier_pb2.RetryEmailsResponse(ids=ids)

    @errors
    async def EraseRecipient(self, request: notifier_pb2.EraseRecipientRequest,
                             context: grpc.aio.ServicerContext) -> notifier_pb2.EraseRecipientResponse:
        erased = await self._erase.execute(request.email, request.reason, requested_by=caller_name(context))
        return notifier_pb2.EraseRecipientResponse(erasure_id=erased.erasure_id, emails=erased.emails)
