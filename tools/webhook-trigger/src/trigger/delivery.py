"""Signing events exactly as each provider does, and delivering them the way providers deliver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from trigger.events import new_event_id


@dataclass(frozen=True)
class Delivery:
    """One signed HTTP request, ready to send (and to send again, byte for byte)."""

    provider: str
    event_id: str
    event_type: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Response:
    delivery: Delivery
    status: int
    body: dict[str, Any] | str


def stripe_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={signature}"


def razorpay_header(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign(provider: str, event: dict[str, Any] | bytes, secret: str, *, age_seconds: int = 0,
         event_id: str | None = None) -> Delivery:
    """Sign an event (or a saved body, as-is). `age_seconds` backdates Stripe's signature timestamp."""
    body = event if isinstance(event, bytes) else json.dumps(event, indent=2).encode()
    parsed = event if isinstance(event, dict) else _best_effort_json(body)
    headers = {"Content-Type": "application/json", "User-Agent": "boxcostpro-trigger/1"}
    if provider == "stripe":
        headers["Stripe-Signature"] = stripe_header(body, secret, int(time.time()) - age_seconds)
        return Delivery(provider, str(parsed.get("id")), str(parsed.get("type")), body, headers)
    if provider == "razorpay":
        event_id = event_id or new_event_id()
        headers["X-Razorpay-Signature"] = razorpay_header(body, secret)
        headers["X-Razorpay-Event-Id"] = event_id
        return Delivery(provider, event_id, str(parsed.get("event")), body, headers)
    raise ValueError(f"unknown provider {provider!r}")


def _best_effort_json(body: bytes) -> dict[str, Any]:
    """A saved payload may be anything (it is sent as-is); read its id and type when it has them."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def send(session: aiohttp.ClientSession, base_url: str, delivery: Delivery) -> Response:
    url = f"{base_url.rstrip('/')}/webhooks/{delivery.provider}"
    async with session.post(url, data=delivery.body, headers=delivery.headers) as reply:
        text = await reply.text()
        try:
            body: dict[str, Any] | str = json.loads(text)
        except ValueError:
            body = text
        return Response(delivery, reply.status, body)


@dataclass(frozen=True)
class DeliveryPlan:
    """How to deliver: each event `times` times, all at once or one by one, shuffled or in order."""

    times: int = 1
    concurrent: bool = False
    shuffle: bool = False
    seed: int | None = None


async def deliver(base_url: str, deliveries: Sequence[Delivery], plan: DeliveryPlan = DeliveryPlan(),
                  timeout_seconds: float = 30.0) -> list[Response]:
    queue = [d for d in deliveries for _ in range(plan.times)]
    if plan.shuffle:
        random.Random(plan.seed).shuffle(queue)
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if plan.concurrent:
            return list(await asyncio.gather(*(send(session, base_url, d) for d in queue)))
        return [await send(session, base_url, d) for d in queue]
