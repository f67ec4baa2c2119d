"""Use case: take in the events a provider made that billing never got, from the provider's own list of them.

Stripe retries a webhook for three days. An endpoint down for longer, or disabled by Stripe after failing
for days, leaves events billing never applied; so does a database restored from a backup taken before
events it had acknowledged. Stripe keeps its events for 30 days and lists them by time.

Recovery walks a time range oldest first, a window at a time (one window's events in memory), and hands
the events billing acts on to the ingest use case as if they had just arrived: the rows and emails are
those a timely delivery would have made, late. An event billing holds already is a duplicate and changes
nothing, so a recovery can be run again over any range, and alongside live webhooks.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from billing.domain.providers import razorpay_events, stripe_events
from billing.domain.events import IncomingEvent, Outcome, TransientStoreError
from billing.domain.ingest import IngestEvents
from billing.domain.model import Provider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListedEvent:
    """An event as the provider's list gives it: its id, type and the event object's JSON."""

    event_id: str
    event_type: str
    payload: bytes


class FeedUnavailable(Exception):
    """The provider's list could not be read (refused credentials, the provider down, a timeout)."""


class EventFeed(Protocol):
    provider: Provider
    retention: timedelta  # how long the provider keeps its events

    async def events_between(self, start: datetime, end: datetime, *, undelivered_only: bool) -> list[ListedEvent]:
        """The events made in [start, end), oldest first; with `undelivered_only`, only those some webhook
        endpoint has not acknowledged (yet)."""


class InvalidRange(ValueError):
    """The time range to recover is empty or lies wholly outside what the provider keeps."""


@dataclass
class RecoveryReport:
    start: datetime  # the range walked, after clamping to what the provider keeps
    end: datetime
    listed: int = 0
    skipped: int = 0  # of types billing does not act on
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    failed_event_ids: list[str] = field(default_factory=list)
    error: str | None = None
    resume_from: datetime | None = None  # when it stopped early: where a run again should start

    @property
    def complete(self) -> bool:
        return self.error is None

    @property
    def taken_in(self) -> int:
        """Events billing did not hold before: applied now, or kept failed to be retried."""
        return self.outcomes[Outcome.PROCESSED] + self.outcomes[Outcome.FAILED] + self.outcomes[Outcome.IGNORED]


# The types billing acts on. A listed event of another type is not taken: as no webhook of it came, there
# is nothing to keep.
_HANDLED = {Provider.STRIPE: frozenset(stripe_events.HANDLERS), Provider.RAZORPAY: razorpay_events.HANDLED_TYPES}

WINDOW = timedelta(hours=1)
BATCH = 100  # events per ingest call: one group commit


class RecoverEvents:
    def __init__(self, feed: EventFeed, ingest: IngestEvents, *, clock: Callable[[], datetime],
                 window: timedelta = WINDOW, batch: int = BATCH) -> None:
        self._feed = feed
        self._ingest = ingest
        self._handled = _HANDLED[feed.provider]
        self._clock = clock
        self._window = window
        self._batch = batch

    async def execute(self, start: datetime, end: datetime | None, *, undelivered_only: bool,
                      request_id: str) -> RecoveryReport:
        now = self._clock()
        end = min(end or now, now)
        start = max(start, now - self._feed.retention)
        if start >= end:
            raise InvalidRange(f"nothing to recover between {start.isoformat()} and {end.isoformat()}: the range is "
                               f"empty, or older than the {self._feed.retention.days} days the provider keeps events")
        report = RecoveryReport(start, end)
        window_start = start
        while window_start < end:
            window_end = min(window_start + self._window, end)
            try:
                listed = await self._feed.events_between(window_start, window_end, undelivered_only=undelivered_only)
                await self._take(listed, report, request_id)
            except (FeedUnavailable, TransientStoreError) as exc:
                report.error, report.resume_from = str(exc) or type(exc).__name__, window_start
                return report
            window_start = window_end
        return report

    async def _take(self, listed: list[ListedEvent], report: RecoveryReport, request_id: str) -> None:
        report.listed += len(listed)
        wanted = [e for e in listed if e.event_type in self._handled]
        report.skipped += len(listed) - len(wanted)
        for i in range(0, len(wanted), self._batch):
            events = [IncomingEvent(self._feed.provider, e.event_id, e.event_type, e.payload, self._clock(),
                                    request_id) for e in wanted[i:i + self._batch]]
            for result in await self._ingest.execute(events):
                report.outcomes[result.outcome] += 1
                if result.outcome is Outcome.FAILED:
                    report.failed_event_ids.append(result.event_id)
        if wanted:
            log.info("recovered a window of events", extra={"fields": {
                "provider": self._feed.provider.value, "events": len(wanted), "request_id": request_id}})
