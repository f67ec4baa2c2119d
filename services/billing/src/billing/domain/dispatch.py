"""Use case: deliver the email outbox to the notifier, retrying while it is unreachable.

Each request carries its outbox idempotency key, so a request that reached the notifier but whose answer
was lost is harmless to repeat: the notifier answers with the email it already has.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxItem:
    id: str
    idempotency_key: str
    kind: str
    request: dict[str, Any]
    attempts: int


class NotifierUnavailable(Exception):
    """Try again later: the notifier is down, slow or overloaded."""


class NotifierRejected(Exception):
    """The notifier refused the request for good (a defect on our side); kept as dead for operators."""


class Notifier(Protocol):
    async def send_email(self, idempotency_key: str, request: dict[str, Any]) -> None: ...


class Outbox(Protocol):
    async def claim_due(self, limit: int, lease: timedelta) -> list[OutboxItem]: ...
    async def record_outcomes(self, outcomes: list[Outcome]) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """delivered, retry (at next_attempt_at) or dead."""

    item_id: str
    status: str
    error: str | None = None
    next_attempt_at: datetime | None = None


class DispatchEmails:
    def __init__(self, outbox: Outbox, notifier: Notifier, *, clock: Callable[[], datetime],
                 max_delay: float = 60.0, concurrency: int = 16, rng: random.Random | None = None) -> None:
        self._outbox = outbox
        self._concurrency = concurrency
        self._notifier = notifier
        self._clock = clock
        self._max_delay = max_delay
        self._rng = rng or random.Random()

    async def run_once(self, limit: int = 100) -> int:
        items = await self._outbox.claim_due(limit, timedelta(seconds=30))
        slots = asyncio.Semaphore(self._concurrency)

        async def dispatch(item: OutboxItem) -> Outcome:
            async with slots:
                return await self._dispatch(item)

        outcomes = await asyncio.gather(*(dispatch(item) for item in items))
        if outcomes:
            await self._outbox.record_outcomes(list(outcomes))
        return len(items)

    async def _dispatch(self, item: OutboxItem) -> Outcome:
        try:
            await self._notifier.send_email(item.idempotency_key, item.request)
        except NotifierUnavailable as exc:
            delay = self._rng.uniform(0.5, min(self._max_delay, 2.0 ** min(item.attempts, 10)))
            return Outcome(item.id, "retry", str(exc), self._clock() + timedelta(seconds=delay))
        except NotifierRejected as exc:
            log.error("notifier rejected an email request", extra={"fields": {"key": item.idempotency_key,
                                                                              "error": str(exc)}})
            return Outcome(item.id, "dead", str(exc))
        return Outcome(item.id, "delivered")
