"""Load generator for `make bench`, run as its own process: distinct signed events, fixed concurrency.

Prints one JSON line: counts, elapsed time, latencies, and the ids of the events acknowledged 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import uvloop
from trigger.delivery import Delivery, sign
from trigger.events import RazorpayScenario, StripeScenario


def build(count: int, stripe_secret: str, razorpay_secret: str) -> list[Delivery]:
    deliveries = []
    for i in range(count):
        if i % 2:
            event = RazorpayScenario(tenant_id=f"t{i % 50}").event("payment.captured")
            deliveries.append(sign("razorpay", event, razorpay_secret))
        else:
            event = StripeScenario(tenant_id=f"t{i % 50}").event("payment_intent.succeeded")
            deliveries.append(sign("stripe", event, stripe_secret))
    return deliveries


def _request_bytes(host: str, d: Delivery) -> bytes:
    headers = {**d.headers, "Host": host, "Content-Length": str(len(d.body)), "Connection": "keep-alive"}
    head = f"POST /webhooks/{d.provider} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + d.body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def run(url: str, deliveries: list[Delivery], concurrency: int) -> dict:
    """Keep-alive connections speaking plain HTTP/1.1 with pre-serialised requests: the load process
    must cost far less CPU than the system it measures, on the same two cores."""
    host_port = url.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    requests = [(d, _request_bytes(host_port, d)) for d in deliveries]
    latencies: list[float] = []
    acknowledged: list[list[str]] = []
    errors: dict[str, int] = {}
    queue = iter(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for d, raw in queue:
                started = time.perf_counter()
                try:
                    writer.write(raw)
                    status = await asyncio.wait_for(_read_response(reader), 30)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                    continue
                latencies.append(time.perf_counter() - started)
                if 200 <= status < 300:
                    acknowledged.append([d.provider, d.event_id])
                else:
                    errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
        finally:
            writer.close()

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
    args = parser.parse_args()
    deliveries = build(args.events, args.stripe_secret, args.razorpay_secret)
    warmup, measured = deliveries[:500], deliveries[500:]
    uvloop.run(run(args.url, warmup, args.concurrency))
    result = uvloop.run(run(args.url, measured, args.concurrency))
    result["acknowledged"] += [[d.provider, d.event_id] for d in warmup]  # warm-up is checked too
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
