"""Use cases for operators and other services: read the email log, and queue failed emails again."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from notifier.domain.model import (
    MAX_ID,
    EmailKind,
    EmailRecord,
    EmailStatus,
    InvalidEmailRequest,
)
from notifier.domain.accept import MAX_BATCH
from notifier.domain.ports import EmailLog, ListFilter

log = logging.getLogger(__name__)


_EMAIL_TYPES = tuple(k.value for k in EmailKind)


# Emails queued again by one RetryEmails call over a time window; the next call takes the next ones.
MAX_REQUEUED = 10_000


class NotFound(Exception):
    pass


class NotRetryable(Exception):
    """An email asked to be sent again that has not failed."""


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
            if record.erased_at is not None:
                raise NotRetryable(f"email {email_id} was to a recipient whose data was erased")
            if record.status is not EmailStatus.FAILED:
                raise NotRetryable(f"email {email_id} is {record.status.value}, not failed")
        raise NotRetryable("the emails changed while being queued; ask again")
