"""gRPC transport for billing: decode, call one use case, map results and errors."""

from __future__ import annotations

import logging
from datetime import UTC

import grpc
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc

from billing.domain import ingest
from billing.domain.ingest import IncomingEvent, IngestResult, Outcome, TransientStoreError
from billing.domain.model import Provider

log = logging.getLogger(__name__)

MAX_BATCH = 1000

_PROVIDERS = {
    billing_pb2.PROVIDER_STRIPE: Provider.STRIPE,
    billing_pb2.PROVIDER_RAZORPAY: Provider.RAZORPAY,
}
_OUTCOMES = {
    Outcome.PROCESSED: billing_pb2.INGEST_STATUS_PROCESSED,
    Outcome.DUPLICATE: billing_pb2.INGEST_STATUS_DUPLICATE,
    Outcome.IGNORED: billing_pb2.INGEST_STATUS_IGNORED,
    Outcome.FAILED: billing_pb2.INGEST_STATUS_FAILED,
}
# Domain/adapter error -> gRPC status. Anything else is a defect: INTERNAL, logged with its trace.
_ERRORS: dict[type[Exception], grpc.StatusCode] = {
    TransientStoreError: grpc.StatusCode.UNAVAILABLE,
    OSError: grpc.StatusCode.UNAVAILABLE,
}


class InvalidRequest(ValueError):
    pass


def _decode(request: billing_pb2.IngestEventsRequest) -> list[IncomingEvent]:
    if not request.events:
        raise InvalidRequest("events: at least one event is required")
    if len(request.events) > MAX_BATCH:
        raise InvalidRequest(f"events: at most {MAX_BATCH} events per call")
    events = []
    for i, e in enumerate(request.events):
        provider = _PROVIDERS.get(e.provider)
        if provider is None:
            raise InvalidRequest(f"events[{i}].provider: must be STRIPE or RAZORPAY")
        if not e.event_id or len(e.event_id) > 255:
            raise InvalidRequest(f"events[{i}].event_id: required, at most 255 characters")
        if not e.event_type or len(e.event_type) > 255:
            raise InvalidRequest(f"events[{i}].event_type: required, at most 255 characters")
        if not e.HasField("received_at"):
            raise InvalidRequest(f"events[{i}].received_at: required")
        events.append(
            IncomingEvent(
                provider=provider,
                event_id=e.event_id,
                event_type=e.event_type,
                payload=e.payload,
                received_at=e.received_at.ToDatetime(tzinfo=UTC),
                request_id=e.request_id,
            )
        )
    return events


def _encode(result: IngestResult) -> billing_pb2.IngestResult:
    return billing_pb2.IngestResult(
        event_id=result.event_id,
        status=_OUTCOMES[result.outcome],
        error=result.error or "",
        transaction_ids=result.transaction_ids,
        subscription_ids=result.subscription_ids,
    )


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, ingest_events: ingest.IngestEvents) -> None:
        self._ingest = ingest_events

    async def IngestEvents(self, request, context: grpc.aio.ServicerContext):
        try:
            events = _decode(request)
            results = await self._ingest.execute(events)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except tuple(_ERRORS) as exc:
            code = next(c for t, c in _ERRORS.items() if isinstance(exc, t))
            log.warning("ingest failed", extra={"fields": {"error": str(exc)}})
            await context.abort(code, "billing store unavailable; retry")
        return billing_pb2.IngestEventsResponse(results=[_encode(r) for r in results])
