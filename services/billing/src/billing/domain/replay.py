"""Use cases: stored events for operators, their automatic retries, and replays of them."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

from billing.domain.api_ports import EventsPort
from billing.domain.api_types import (
    EVENT_STATUSES,
    MAX_REPLAYED,
    REPLAYABLE_STATUSES,
    EventFilter,
    EventSelection,
    Page,
    ReplayReport,
    StoredEvent,
    check_status,
    checked_page_size,
    operator_limit,
    text,
)
from billing.domain.errors import InvalidRequest, NotFound, NotReplayable
from billing.domain.events import IncomingEvent, IngestResult
from billing.domain.ingest import IngestEvents
from billing.domain.model import Provider

log = logging.getLogger(__name__)

RETRY_LEASE = timedelta(minutes=2)  # far longer than a round of retries takes


class EventOperations:
    def __init__(self, store: EventsPort, ingest: IngestEvents) -> None:
        self._store = store
        self._ingest = ingest

    async def list_events(self, f: EventFilter, page_size: int, token: str | None) -> Page[StoredEvent]:
        check_status(f.status, EVENT_STATUSES)
        return await self._store.list_events(f, checked_page_size(page_size), token or None)

    async def get_event(self, provider: Provider | None, event_id: str) -> StoredEvent:
        if provider is None or not event_id:
            raise InvalidRequest("event_id", "provider and event_id are required")
        found = await self._store.get_event(provider, text("event_id", event_id))
        if found is None:
            raise NotFound(f"no {provider.value} event {event_id}")
        event, payload = found
        return replace(event, payload=payload.decode(errors="replace"))

    async def retry_due(self, limit: int = 100) -> int:
        """Automatic retries: apply failed events whose backoff has passed (the worker's round)."""
        due = await self._store.claim_due_retries(limit, RETRY_LEASE)
        events = [IncomingEvent(e.provider, e.event_id, e.event_type, payload, e.received_at, e.request_id or "")
                  for e, payload in due]
        if events:
            await self._ingest.execute(events)
        return len(events)

    async def next_retry_in(self) -> float | None:
        return await self._store.next_retry_in()

    async def replay_selection(self, selection: EventSelection, limit: int, *, dry_run: bool, reason: str,
                               requested_by: str) -> ReplayReport:
        """Apply stored events again, whatever their status, through today's handlers (after a handler was
        added or fixed): what their fresh delivery would give, nothing applied twice. A dry run changes
        nothing and says what would change. Each replay is recorded with who asked and why."""
        if not reason.strip():
            raise InvalidRequest("reason", "say why: it is kept with the replay")
        unknown = sorted(set(selection.statuses) - set(REPLAYABLE_STATUSES))
        if unknown:
            raise InvalidRequest("selection.statuses", f"must be among {', '.join(REPLAYABLE_STATUSES)}")
        for name, value in (("event_type", selection.event_type), ("tenant_id", selection.tenant_id),
                            *(("event_ids", e) for e in selection.event_ids)):
            if value is not None:
                text(f"selection.{name}", value)
        if (selection.received_after and selection.received_before
                and selection.received_after >= selection.received_before):
            raise InvalidRequest("selection.received_before", "must be after received_after")
        chosen = await self._store.select_events(selection, operator_limit(limit, MAX_REPLAYED) if limit
                                                  else MAX_REPLAYED)
        events = [IncomingEvent(e.provider, e.event_id, e.event_type, payload, e.received_at, e.request_id or "")
                  for e, payload in chosen]
        preview = await self._ingest.preview(events) if dry_run else None
        results = preview.results if preview is not None else (
            await self._ingest.execute(events, again=True) if events else [])
        replay_id = await self._store.record_replay(requested_by, reason.strip(), selection, dry_run, results)
        log.info("stored events replayed" if not dry_run else "replay previewed", extra={"fields": {
            "replay_id": replay_id, "requested_by": requested_by, "reason": reason.strip(), "events": len(events),
            "outcomes": {o: sum(1 for r in results if r.outcome.value == o) for o in {r.outcome.value for r in results}}}})
        return ReplayReport(replay_id, results, preview)

    async def replay(self, provider: Provider | None, event_id: str, all_failed: bool) -> list[IngestResult]:
        """Apply failed events again, as if the provider had redelivered them."""
        if all_failed and event_id:
            raise InvalidRequest("all_failed", "replay either all failed events or one event, not both")
        if all_failed:
            targets = list(await self._store.failed_events(limit=MAX_REPLAYED))
        else:
            if provider is None or not event_id:
                raise InvalidRequest("event_id", "name one event (provider and event_id) or set all_failed")
            found = await self._store.get_event(provider, text("event_id", event_id))
            if found is None:
                raise NotFound(f"no {provider.value} event {event_id}")
            if found[0].erased_at is not None:
                raise NotReplayable("the event's payload was erased at the customer's request")
            if found[0].status != "failed":
                raise NotReplayable(f"the event is {found[0].status}; only failed events are replayed")
            targets = [found]
        events = [IncomingEvent(e.provider, e.event_id, e.event_type, payload, e.received_at, e.request_id or "")
                  for e, payload in targets]
        return await self._ingest.execute(events) if events else []
