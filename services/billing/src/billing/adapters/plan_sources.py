"""Each provider's plans, read with its SDK for the plan catalog: imported only where billing has the
provider's API key."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import razorpay
import requests
import stripe

from billing.adapters.stripe_api import _client
from billing.domain.model import Provider
from billing.domain.plans import Plan, PlanUnavailable


class StripePlans:
    """A Stripe price with its product (GET /v1/prices/:id?expand[]=product): the product's name is the
    one customers see on Stripe's own invoices and receipts; the price's nickname is the merchant's."""

    def __init__(self, api_key: str, *, api_base: str = "https://api.stripe.com", timeout_seconds: float = 10.0) -> None:
        self._http, self._client = _client(api_key, api_base, timeout_seconds, max_network_retries=1)

    async def fetch(self, plan_id: str) -> Plan | None:
        try:
            response = await self._client.raw_request_async("get", f"/v1/prices/{plan_id}", expand=["product"])
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise PlanUnavailable(f"Stripe refused price {plan_id}: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            raise PlanUnavailable(f"Stripe could not be asked for price {plan_id}: {exc.user_message or exc}") from exc
        try:
            price = orjson.loads(response.body)
        except ValueError as exc:
            raise PlanUnavailable(f"Stripe's price {plan_id} is not JSON: {exc}") from exc
        product = price.get("product")
        recurring = price.get("recurring") or {}
        name = (product.get("name") if isinstance(product, dict) else None) or price.get("nickname") or ""
        return Plan(Provider.STRIPE, plan_id, name, recurring.get("interval") or "", recurring.get("interval_count"),
                    price.get("unit_amount"), (price.get("currency") or "").upper() or None, source="provider")

    async def close(self) -> None:
        await self._http.close_async()


class RazorpayPlans:
    """A Razorpay plan (GET /v1/plans/:id): its item's name, period and interval, amount."""

    def __init__(self, key_id: str, key_secret: str, *, api_base: str = "https://api.razorpay.com") -> None:
        self._client = razorpay.Client(auth=(key_id, key_secret), base_url=api_base.rstrip("/"))

    async def fetch(self, plan_id: str) -> Plan | None:
        try:
            plan: dict[str, Any] = await asyncio.wait_for(asyncio.to_thread(self._client.plan.fetch, plan_id), 10)
        except razorpay.errors.BadRequestError as exc:
            if "does not exist" in str(exc).lower() or "not found" in str(exc).lower():
                return None
            raise PlanUnavailable(f"Razorpay refused plan {plan_id}: {exc}") from exc
        except (razorpay.errors.ServerError, razorpay.errors.GatewayError, requests.RequestException, TimeoutError,
                ValueError) as exc:
            raise PlanUnavailable(f"Razorpay could not be asked for plan {plan_id}: {exc}") from exc
        item = plan.get("item") or {}
        interval = {"daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}.get(plan.get("period") or "", "")
        return Plan(Provider.RAZORPAY, plan_id, item.get("name") or "", interval, plan.get("interval"),
                    item.get("amount"), item.get("currency"), source="provider")

    async def close(self) -> None:
        await asyncio.to_thread(self._client.session.close)
