"""Use case: erase one customer's personal data at their request, keeping the money and the proof.

Their address and name leave the payments and subscriptions that hold the address; the stored events of
those rows, and any other event that holds the address, lose payload, body and headers; the outbox's emails
about them go. Amounts, statuses, event ids and email keys stay: a redelivered event is still a duplicate,
and no email is asked for twice. The record of the erasure keeps the address only as its SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol

from billing.domain.api_types import text
from billing.domain.errors import InvalidRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erasure:
    erasure_id: str
    transactions: int
    subscriptions: int
    events: int
    outbox_emails: int


class ErasurePort(Protocol):
    async def erase_customer(self, email: str, email_sha256: bytes, requested_by: str, reason: str) -> Erasure:
        """Erase in one transaction, and record it."""


def address_digest(email: str) -> bytes:
    """How an erasure names the address it erased: SHA-256 of the address lower-cased."""
    return hashlib.sha256(email.strip().lower().encode()).digest()


class EraseCustomer:
    def __init__(self, store: ErasurePort) -> None:
        self._store = store

    async def execute(self, email: str, reason: str, requested_by: str) -> Erasure:
        email = text("email", email.strip())
        if "@" not in email:
            raise InvalidRequest("email", "must be an email address")
        if not reason.strip():
            raise InvalidRequest("reason", "say why: it is kept with the erasure")
        erasure = await self._store.erase_customer(email, address_digest(email), requested_by, reason.strip()[:2000])
        # The log names the erasure and its counts, never the address.
        log.info("customer data erased", extra={"fields": {
            "erasure_id": erasure.erasure_id, "requested_by": requested_by, "transactions": erasure.transactions,
            "subscriptions": erasure.subscriptions, "events": erasure.events, "outbox_emails": erasure.outbox_emails}})
        return erasure
