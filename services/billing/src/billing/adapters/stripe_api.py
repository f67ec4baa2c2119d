"""Stripe's list of events (GET /v1/events), read with the stripe SDK: its authentication, retries of
what Stripe asks to retry (429, 5xx, lost connections) with backoff, and its errors."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import orjson
import stripe

from billing.domain.model import Provider
from billing.domain.recovery import FeedUnavailable, ListedEvent

PAGE_SIZE = 100  # Stripe's largest


def _client(api_key: str, api_base: str, timeout_seconds: float,
            max_network_retries: int) -> tuple[stripe.AIOHTTPClient, stripe.StripeClient]:
    """The stripe SDK's async client, and the HTTP client to close with it."""
    # The SDK logs every request and response at info, two lines a page; the commands log what they did.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    http = stripe.AIOHTTPClient(timeout=timeout_seconds)
    return http, stripe.StripeClient(api_key, base_addresses={"api": api_base}, http_client=http,
                                     max_network_retries=max_network_retries)


class StripeEventFeed:
    provider = Provider.STRIPE
    retention = timedelta(days=30)

    def __init__(self, api_key: str, *, api_base: str = "https://api.stripe.com", timeout_seconds: float = 30.0,
                 max_network_retries: int = 3) -> None:
        self._http, self._client = _client(api_key, api_base, timeout_seconds, max_network_retries)

    async def events_between(self, start: datetime, end: datetime, *, undelivered_only: bool) -> list[ListedEvent]:
        params: dict[str, object] = {"created": {"gte": int(start.timestamp()), "lt": int(end.timestamp())},
                                     "limit": PAGE_SIZE}
        if undelivered_only:
            params["delivery_success"] = False
        listed: list[ListedEvent] = []
        while True:
            page = await self._page(params)
            for item in page["data"]:
                listed.append(ListedEvent(item["id"], item["type"], orjson.dumps(item)))
            if not page["data"] or not page.get("has_more"):
                break
            params["starting_after"] = page["data"][-1]["id"]
        listed.reverse()  # Stripe lists the newest first
        return listed

    async def _page(self, params: dict[str, object]) -> dict:
        try:
            response = await self._client.raw_request_async("get", "/v1/events", **params)
        except stripe.StripeError as exc:
            status = f" ({exc.http_status})" if exc.http_status else ""
            raise FeedUnavailable(f"Stripe refused the list of events{status}: {exc.user_message or exc}") from exc
        try:
            page = orjson.loads(response.body)
            if not all(isinstance(e.get("id"), str) and isinstance(e.get("type"), str) for e in page["data"]):
                raise ValueError("an event without an id or a type")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise FeedUnavailable(f"Stripe's list of events is not what its API describes: {exc}") from exc
        return page

    async def close(self) -> None:
        await self._http.close_async()


class StripeRefused(Exception):
    """Stripe's API refused a call (a key without the right, an unknown id) or could not be reached."""


class StripeWebhookEndpoints:
    """Stripe's webhook endpoints (/v1/webhook_endpoints), read and written with the stripe SDK."""

    def __init__(self, api_key: str, *, api_base: str = "https://api.stripe.com", timeout_seconds: float = 30.0,
                 max_network_retries: int = 3) -> None:
        self._http, self._client = _client(api_key, api_base, timeout_seconds, max_network_retries)

    async def list(self) -> list[dict]:
        endpoints: list[dict] = []
        params: dict[str, object] = {"limit": 100}
        while True:
            page = await self._call("get", "/v1/webhook_endpoints", **params)
            endpoints += page["data"]
            if not page["data"] or not page.get("has_more"):
                return endpoints
            params["starting_after"] = page["data"][-1]["id"]

    async def create(self, url: str, events: list[str]) -> dict:
        """A new endpoint for `url`: Stripe answers its signing secret this once."""
        return await self._call("post", "/v1/webhook_endpoints", url=url, enabled_events=events,
                                description="BoxCostPro payments (billing check-setup)")

    async def update(self, endpoint_id: str, events: list[str]) -> dict:
        return await self._call("post", f"/v1/webhook_endpoints/{endpoint_id}", enabled_events=events,
                                disabled=False)

    async def _call(self, method: str, path: str, **params: object) -> dict:
        try:
            response = await self._client.raw_request_async(method, path, **params)
        except stripe.StripeError as exc:
            status = f" ({exc.http_status})" if exc.http_status else ""
            raise StripeRefused(f"Stripe refused {method.upper()} {path}{status}: {exc.user_message or exc}") from exc
        return orjson.loads(response.body)

    async def close(self) -> None:
        await self._http.close_async()
