"""Load generator for `make bench`, run as its own process: distinct signed events, fixed concurrency.

Prints one JSON line: counts, elapsed time, latencies, and the ids of the events acknowledged 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import cast

import uvloop
from devstack.cpumeter import CpuMeter
from trigger.delivery import Delivery, sign
from trigger.events import RazorpayScenario, StripeScenario


def build(count: int, stripe_secret: str, razorpay_secret: str) -> list[Delivery]:
    """Half Razorpay captures; half Stripe payments as Stripe reports them, the intent's success and then its
    charge's (which carries the receipt link), two events apart."""
    deliveries = []
    stripe: StripeScenario | None = None
    for i in range(count):
        if i % 2 or (stripe is None and i + 2 >= count):  # no room left for a charge after an intent
            event = RazorpayScenario(tenant_id=f"t{i % 50}").event("payment.captured")
            deliveries.append(sign("razorpay", event, razorpay_secret))
        elif stripe is None:
            stripe = StripeScenario(tenant_id=f"t{i % 50}")
            deliveries.append(sign("stripe", stripe.event("payment_intent.succeeded"), stripe_secret))
        else:
            deliveries.append(sign("stripe", stripe.event("charge.succeeded"), stripe_secret))
            stripe = None
    return deliveries


def _request_bytes(host: str, d: Delivery) -> bytes:
    headers = {**d.headers, "Host": host, "Content-Length": str(len(d.body)), "Connection": "keep-alive"}
    head = f"POST /webhooks/{d.provider} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + d.body


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time. A protocol rather than streams:
    the load process must cost far less CPU than the system it measures, on the same two cores."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._length: int | None = None  # of the answer's head and body, once its head is in
        self._status = 0
        self._answer: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def request(self, raw: bytes) -> asyncio.Future[int]:
        """Send a request; the future gets the answer's status once its whole body is in."""
        assert self._answer is None
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._transport is None or self._transport.is_closing():  # the server hung up between requests
            answer.set_exception(ConnectionError("connection closed before the request"))
            return answer
        self._answer = answer
        self._transport.write(raw)
        return answer

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._length is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end])
            self._status = int(head[9:12])
            body = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    body = int(line[15:])
            self._length = end + 4 + body
        if len(self._buffer) >= self._length:
            del self._buffer[: self._length]
            self._length = None
            answer, self._answer = self._answer, None
            if answer is not None and not answer.done():
                answer.set_result(self._status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError("connection closed before the answer"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def run(url: str, deliveries: list[Delivery], concurrency: int, timeout: float = 30.0) -> dict:
    """Send every delivery over `concurrency` keep-alive connections with pre-serialised requests."""
    host_port = url.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    requests = [(d, _request_bytes(host_port, d)) for d in deliveries]
    latencies: list[float] = []
    acknowledged: list[list[str]] = []
    errors: dict[str, int] = {}
    queue = iter(requests)

    async def connect() -> _Connection:
        _, conn = await loop.create_connection(_Connection, host, int(port))
        return conn

    async def worker() -> None:
        conn = await connect()
        try:
            for d, raw in queue:
                started = time.perf_counter()
                answer = conn.request(raw)
                timer = loop.call_later(timeout, lambda a=answer: a.done() or a.set_exception(TimeoutError()))
                try:
                    status = await answer
                except (OSError, TimeoutError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    conn.close()
                    conn = await connect()
                    continue
                finally:
                    timer.cancel()
                latencies.append(time.perf_counter() - started)
                if 200 <= status < 300:
                    acknowledged.append([d.provider, d.event_id])
                else:
                    errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"sent": len(deliveries), "acknowledged": acknowledged, "errors": errors, "elapsed": elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--stripe-secret", required=True)
    parser.add_argument("--razorpay-secret", required=True)
    parser.add_argument("--cpu-of", action="append", default=[], metavar="NAME=PID",
                        help="also report the CPU this process tree spends in the measured run")
    args = parser.parse_args()
    deliveries = build(args.events, args.stripe_secret, args.razorpay_secret)
    warmup, measured = deliveries[:500], deliveries[500:]
    uvloop.run(run(args.url, warmup, args.concurrency))
    meter = CpuMeter({name: int(pid) for name, _, pid in (a.partition("=") for a in args.cpu_of)})
    meter.start()
    own = time.process_time()
    result = uvloop.run(run(args.url, measured, args.concurrency))
    result["cpu_seconds"] = {**meter.stop(), "load generator": time.process_time() - own}
    result["acknowledged"] += [[d.provider, d.event_id] for d in warmup]  # warm-up is checked too
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
