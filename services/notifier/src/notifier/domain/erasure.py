"""Use case: erase one recipient's personal data from the email log at their request.

Their emails keep ids, keys, kinds, statuses and times, so a sender's retry still sends nothing; address,
name, subject and bodies are emptied, and an email still to be sent is not sent. The record of the erasure
keeps the address only as its SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol

from notifier.domain.contents import InvalidEmailRequest, check_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erasure:
    erasure_id: str
    emails: int


class ErasurePort(Protocol):
    async def erase_recipient(self, email: str, email_sha256: bytes, requested_by: str, reason: str) -> Erasure:
        """Erase in one transaction, and record it."""


def address_digest(email: str) -> bytes:
    """How an erasure names the address it erased: SHA-256 of the address lower-cased (as billing's)."""
    return hashlib.sha256(email.strip().lower().encode()).digest()


class EraseRecipient:
    def __init__(self, store: ErasurePort) -> None:
        self._store = store

    async def execute(self, email: str, reason: str, requested_by: str) -> Erasure:
        email = email.strip()
        check_line("email", email, 254)
        if "@" not in email:
            raise InvalidEmailRequest("email", "must be an email address")
        if not reason.strip():
            raise InvalidEmailRequest("reason", "say why: it is kept with the erasure")
        erasure = await self._store.erase_recipient(email, address_digest(email), requested_by, reason.strip()[:2000])
        log.info("recipient data erased", extra={"fields": {
            "erasure_id": erasure.erasure_id, "requested_by": requested_by, "emails": erasure.emails}})
        return erasure
