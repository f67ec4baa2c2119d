"""Use case: accept an email, validated, rendered and stored before the answer."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from notifier.domain.model import (
    EmailRecord,
    EmailRequest,
    IdempotencyConflict,
    InvalidEmailRequest,
    validate,
)
from notifier.domain.render import Renderer
from notifier.domain.ports import EmailLog, NewEmail

log = logging.getLogger(__name__)


MAX_BATCH = 500


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
            if record is None:
                results.append(IdempotencyConflict(
                    f"idempotency key {item.idempotency_key!r} was used for an email whose log has since been purged"))
                continue
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
