"""Billing over gRPC, with concurrent webhooks sharing one IngestEvents call.

Requests that arrive while earlier calls are in flight wait together and go as one batch: under light
load every event goes alone at once, under a burst the batches grow and billing commits many events
with one fsync. Each caller still gets its own event's result, and only after billing answered.

When billing is slow or away, a webhook waits at most the timeout, queued and in flight together, and the
events waiting are bounded in bytes: past either, the webhook is answered "unavailable" (a 503 the
provider retries) instead of piling up connections and memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

import grpc
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servicekit.timestamps import to_timestamp
from servicekit.tls import GrpcTls

from gateway.domain.receive import AuthenticatedEvent, BillingUnavailable, ProcessingResult, Provider

log = logging.getLogger(__name__)

_PROVIDERS = {Provider.STRIPE: billing_pb2.PROVIDER_STRIPE, Provider.RAZORPAY: billing_pb2.PROVIDER_RAZORPAY}
_STATUSES = {
    billing_pb2.INGEST_STATUS_PROCESSED: "processed",
    billing_pb2.INGEST_STATUS_DUPLICATE: "duplicate",
    billing_pb2.INGEST_STATUS_IGNORED: "ignored",
    billing_pb2.INGEST_STATUS_FAILED: "failed",
}


def _to_pb(event: AuthenticatedEvent) -> billing_pb2.WebhookEvent:
    return billing_pb2.WebhookEvent(
        provider=_PROVIDERS[event.provider],
        event_id=event.event_id,
        event_type=event.event_type,
        payload=event.payload,
        received_at=to_timestamp(event.received_at),
        request_id=event.request_id,
        headers=dict(event.headers),
        client_address=event.client_address,
    )


def _from_pb(result: billing_pb2.IngestResult) -> ProcessingResult:
    status = _STATUSES.get(result.status)
    if status is None:
        raise BillingUnavailable(f"billing answered an unknown status {result.status}")
    return ProcessingResult(
        status=status,
        error=result.error or None,
        transaction_ids=tuple(result.transaction_ids),
        subscription_ids=tuple(result.subscription_ids),
    )


@dataclass
class _Waiting:
    event: billing_pb2.WebhookEvent
    size: int  # of its payload
    future: asyncio.Future[ProcessingResult]
    deadline: float  # loop time by which its webhook is answered, one way or the other
    sent: bool = False
    abandoned: bool = False  # its webhook was answered before it was sent: it is not sent at all


def _late(timeout: float) -> str:
    return f"billing did not answer within {timeout:g} s"


def _fail(batch: list[_Waiting], detail: str) -> None:
    for waiting in batch:
        if not waiting.future.done():
            waiting.future.set_exception(BillingUnavailable(detail))


def _answer(batch: list[_Waiting], results: list[ProcessingResult]) -> None:
    for waiting, result in zip(batch, results, strict=True):
        if not waiting.future.done():
            waiting.future.set_result(result)


class BatchingBillingClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout_seconds: float,
        max_batch: int = 256,
        max_batch_bytes: int = 8 * 1024 * 1024,
        max_queued_bytes: int = 64 * 1024 * 1024,
        max_in_flight: int = 2,
        min_send_seconds: float | None = None,
    ) -> None:
        self._channel = channel
        self._stub = billing_pb2_grpc.BillingServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._timeout = timeout_seconds
        # An event with less time left than this when a call slot frees is refused rather than sent: its
        # webhook would be answered 503 before billing could answer, so the provider delivers it again.
        self._min_send = timeout_seconds / 10 if min_send_seconds is None else min_send_seconds
        self._max_batch = max_batch
        # Far under the channel's 64 MiB message limit: a burst of large events never makes a call
        # that gRPC refuses whole. An event larger than this goes alone.
        self._max_batch_bytes = max_batch_bytes
        # What the events waiting for a call may hold in all; one event is let in whatever its size.
        self._max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0
        # Two calls at once: one is committed while the next fills up. More makes smaller batches, which
        # cost more CPU per event in the gateway, billing and PostgreSQL alike (make bench).
        self._slots = asyncio.Semaphore(max_in_flight)
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()
        self._pump = asyncio.get_running_loop().create_task(self._run())

    @property
    def queued_events(self) -> int:
        """Events waiting for a call to billing (not yet sent)."""
        return sum(1 for w in self._waiting if not (w.sent or w.abandoned))

    async def ingest(self, event: AuthenticatedEvent) -> ProcessingResult:
        size = len(event.payload)
        if self._waiting and self._queued_bytes + size > self._max_queued_bytes:
            raise BillingUnavailable("too many events are waiting for billing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ProcessingResult] = loop.create_future()
        waiting = _Waiting(_to_pb(event), size, future, loop.time() + self._timeout)
        self._waiting.append(waiting)
        self._queued_bytes += size
        self._wake.set()
        # If the provider hangs up, the event stays queued and still goes to billing (only its answer is
        # dropped). Past the deadline the webhook is refused, and an event still queued is never sent.
        try:
            async with asyncio.timeout_at(waiting.deadline):
                return await future
        except TimeoutError:
            if not (waiting.sent or waiting.abandoned):
                waiting.abandoned = True
                self._queued_bytes -= size
            raise BillingUnavailable(_late(self._timeout)) from None

    async def is_serving(self, timeout_seconds: float = 1.0) -> bool:
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service="boxcost.billing.v1.BillingService"),
                timeout=timeout_seconds,
            )
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._slots.acquire()
            batch = self._take()
            if not self._waiting:
                self._wake.clear()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._send(batch, self._call(batch)))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    def _take(self) -> list[_Waiting]:
        """The next batch, oldest first: up to max_batch events and max_batch_bytes of payload. Events whose
        webhooks were answered already are dropped on the way."""
        batch: list[_Waiting] = []
        taken, size = 0, 0
        too_late = asyncio.get_running_loop().time() + self._min_send
        for waiting in self._waiting:
            if len(batch) == self._max_batch or (batch and size + waiting.size > self._max_batch_bytes):
                break
            taken += 1
            if waiting.abandoned:  # its bytes left the queue when its webhook was answered
                continue
            self._queued_bytes -= waiting.size
            if waiting.deadline < too_late:
                waiting.abandoned = True
                if not waiting.future.done():
                    waiting.future.set_exception(BillingUnavailable(_late(self._timeout)))
                continue
            waiting.sent = True
            batch.append(waiting)
            size += waiting.size
        del self._waiting[:taken]
        return batch

    def _call(self, batch: list[_Waiting]) -> Awaitable[billing_pb2.IngestEventsResponse]:
        """The batch's call, made in the pump's own step. grpc.aio runs a call in a task made with it, so this
        one starts ahead of the webhooks the previous call's answer wakes (_send answers them a turn later):
        billing gets the next batch without waiting while the gateway writes those responses (make bench)."""
        try:
            return self._stub.IngestEvents(
                billing_pb2.IngestEventsRequest(events=[w.event for w in batch]),
                # The webhooks of a batch wait no longer than the newest of them may.
                timeout=max(0.0, batch[-1].deadline - asyncio.get_running_loop().time()),
                metadata=(("x-request-id", batch[0].event.request_id),),
            )
        except Exception as exc:  # refused before it started: _send answers the batch as for any failed call
            refused: asyncio.Future[billing_pb2.IngestEventsResponse] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused

    async def _send(self, batch: list[_Waiting], call: Awaitable[billing_pb2.IngestEventsResponse]) -> None:
        try:
            try:
                reply = await call
            finally:
                self._slots.release()  # wakes the pump, which starts the next call first (see _call)
            if len(reply.results) != len(batch):
                raise BillingUnavailable("billing answered a different number of results")
            results = [_from_pb(result) for result in reply.results]
            # Answered on the loop's next turn, after the pump has started the next call.
            asyncio.get_running_loop().call_soon(_answer, batch, results)
        except (grpc.aio.AioRpcError, BillingUnavailable) as exc:
            detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            log.warning("billing did not confirm a batch", extra={"fields": {"events": len(batch), "error": detail}})
            _fail(batch, detail)
        except Exception as exc:  # a defect on this side, not billing's answer: no webhook of it is confirmed
            log.exception("billing call failed before an answer", extra={"fields": {"events": len(batch)}})
            _fail(batch, type(exc).__name__)
        except BaseException:  # cancelled: the waiting webhooks are answered before the task ends
            _fail(batch, "cancelled")
            raise

    async def close(self, timeout: float = 5.0) -> None:
        """Let the calls in flight finish within `timeout`, then cancel what is left and close the channel.
        An event cancelled here was never acknowledged: its provider delivers it again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._waiting or self._sends) and loop.time() < deadline:
            if self._sends:
                await asyncio.wait(set(self._sends), timeout=deadline - loop.time())
            else:
                await asyncio.sleep(0.01)  # the pump takes the events waiting for a free call
        self._pump.cancel()
        for task in self._sends:
            task.cancel()
        await asyncio.gather(self._pump, *self._sends, return_exceptions=True)
        _fail(self._waiting, "the gateway is stopping")
        self._waiting.clear()
        await self._channel.close()


def open_channel(addr: str, tls: GrpcTls) -> grpc.aio.Channel:
    return tls.channel(
        addr,
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
