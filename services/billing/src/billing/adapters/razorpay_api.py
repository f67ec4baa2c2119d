"""Razorpay's entities, read with the razorpay SDK, as the events that would have reported them.

Razorpay keeps no list of events: recovery lists the payments, orders, refunds, subscriptions and
invoices created in a window (the API's `from`/`to`, pages of `count` continued by `skip`) and gives each
as the webhook event that reports its current state, under an id of its own (`recovered:<type>:<entity
id>`). A second run gives the same ids, so it changes nothing; an entity whose webhook did come is applied
again, which changes nothing either (every merge is idempotent, every email keyed). The SDK is
synchronous: each call runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError

from billing.domain.model import Provider
from billing.domain.recovery import FeedUnavailable, ListedEvent

PAGE_SIZE = 100  # Razorpay's largest
# What the SDK raises when Razorpay, or the way to it, refuses a call.
_REFUSALS = (BadRequestError, ServerError, GatewayError, requests.RequestException, ValueError)

_PAYMENT_EVENTS = {"authorized": "payment.authorized", "captured": "payment.captured",
                   "refunded": "payment.captured", "failed": "payment.failed"}
_REFUND_EVENTS = {"pending": "refund.created", "processed": "refund.processed", "failed": "refund.failed"}
_SUBSCRIPTION_EVENTS = {"authenticated": "subscription.authenticated", "active": "subscription.activated",
                        "pending": "subscription.pending", "halted": "subscription.halted",
                        "cancelled": "subscription.cancelled", "completed": "subscription.completed",
                        "paused": "subscription.paused"}


class RazorpayEntityFeed:
    provider = Provider.RAZORPAY
    retention = timedelta(days=180)  # how far back recovery reaches; Razorpay keeps entities longer

    def __init__(self, key_id: str, key_secret: str, *, api_base: str = "https://api.razorpay.com") -> None:
        logging.getLogger("urllib3").setLevel(logging.WARNING)
        self._client = razorpay.Client(auth=(key_id, key_secret), base_url=api_base.rstrip("/"))

    async def events_between(self, start: datetime, end: datetime, *, undelivered_only: bool) -> list[ListedEvent]:
        """Events for the entities created in [start, end), oldest first (Razorpay cannot tell which webhooks
        were delivered, so `undelivered_only` changes nothing)."""
        window = {"from": int(start.timestamp()), "to": int(end.timestamp()) - 1}
        events: list[tuple[int, ListedEvent]] = []
        payments = {p["id"]: p for p in await self._all(self._client.payment.all, window)}
        invoices = {i["id"]: i for i in await self._all(self._client.invoice.all, window)}
        subscriptions = {s["id"]: s for s in await self._all(self._client.subscription.all, window)}
        for payment in payments.values():
            # A subscription's charge names it only through its invoice; it is given as the subscription's
            # webhooks give it, with the subscription, so that it is recorded as that subscription's.
            if sub := await self._subscription_charged(payment, invoices, subscriptions):
                if event_type := _SUBSCRIPTION_EVENTS.get(sub.get("status", "")):
                    events.append(_event(event_type, payment["id"], payment,
                                         {"subscription": {"entity": sub}, "payment": {"entity": payment}}))
                    continue
            if event_type := _PAYMENT_EVENTS.get(payment.get("status", "")):
                events.append(_event(event_type, payment["id"], payment, {"payment": {"entity": payment}}))
        for order in await self._all(self._client.order.all, window):
            paid = next((p for p in payments.values()
                         if p.get("order_id") == order["id"] and p.get("status") in ("captured", "refunded")), None)
            if order.get("status") == "paid" and paid is not None:
                events.append(_event("order.paid", order["id"], order,
                                     {"payment": {"entity": paid}, "order": {"entity": order}}))
        for refund in await self._all(self._client.refund.all, window):
            if event_type := _REFUND_EVENTS.get(refund.get("status", "")):
                payload: dict[str, Any] = {"refund": {"entity": refund}}
                if refund.get("payment_id") in payments:
                    payload["payment"] = {"entity": payments[refund["payment_id"]]}
                events.append(_event(event_type, refund["id"], refund, payload))
        for subscription in subscriptions.values():
            if event_type := _SUBSCRIPTION_EVENTS.get(subscription.get("status", "")):
                events.append(_event(event_type, subscription["id"], subscription,
                                     {"subscription": {"entity": subscription}}))
        return [listed for _, listed in sorted(events, key=lambda e: e[0])]

    async def _subscription_charged(self, payment: dict[str, Any], invoices: dict[str, dict],
                                    subscriptions: dict[str, dict]) -> dict[str, Any] | None:
        """The subscription a payment was charged for, read through its invoice; None for any other payment.
        An invoice or subscription made before the window is fetched, and kept for the payments after."""
        invoice_id = payment.get("invoice_id")
        if not invoice_id:
            return None
        if invoice_id not in invoices:
            invoices[invoice_id] = await self._fetch(self._client.invoice.fetch, invoice_id)
        sub_id = invoices[invoice_id].get("subscription_id")
        if not sub_id:
            return None
        if sub_id not in subscriptions:
            subscriptions[sub_id] = await self._fetch(self._client.subscription.fetch, sub_id)
        return subscriptions[sub_id]

    async def _fetch(self, fetch: Callable[..., dict], entity_id: str) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(fetch, entity_id)
        except _REFUSALS as exc:
            raise FeedUnavailable(f"Razorpay refused {entity_id} ({type(exc).__name__}): {exc}") from exc

    async def _all(self, listing: Callable[..., dict], window: dict[str, int]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            try:
                page = await asyncio.to_thread(listing, {**window, "count": PAGE_SIZE, "skip": len(found)})
            except _REFUSALS as exc:
                raise FeedUnavailable(f"Razorpay refused a list ({type(exc).__name__}): {exc}") from exc
            items = page.get("items") or []
            found += items
            if len(items) < PAGE_SIZE:
                return found

    async def close(self) -> None:
        await asyncio.to_thread(self._client.session.close)


def _event(event_type: str, entity_id: str, entity: dict[str, Any], payload: dict[str, Any]) -> tuple[int, ListedEvent]:
    created = int(entity.get("created_at") or 0)
    body = {"entity": "event", "event": event_type, "contains": list(payload), "payload": payload,
            "created_at": created}
    return created, ListedEvent(f"recovered:{event_type}:{entity_id}", event_type, orjson.dumps(body))
