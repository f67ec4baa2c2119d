"""`python -m billing check-setup` as a process, the stripe SDK making real HTTP calls to a stand-in for
Stripe's webhook endpoints API."""

from __future__ import annotations

import pytest
from aiohttp import web
from billing.domain.setup_check import STRIPE_NEEDED

from tests.support import run_module

KEY = "sk_test_setup"
URL = "https://pay.example.com/webhooks/stripe"


class FakeWebhookEndpoints:
    """/v1/webhook_endpoints as Stripe answers it: a bearer key, lists of 100, form-encoded writes whose
    enabled_events come indexed (enabled_events[0]=...), a signing secret only on creation."""

    def __init__(self, endpoints: list[dict]) -> None:
        self.endpoints = endpoints

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {KEY}"

    async def list(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"type": "invalid_request_error", "message": "Invalid API Key"}},
                                     status=401)
        return web.json_response({"object": "list", "has_more": False, "data": self.endpoints})

    @staticmethod
    async def _events(request: web.Request) -> list[str]:
        form = await request.post()
        return [v for k, v in form.items() if k.startswith("enabled_events")]

    async def create(self, request: web.Request) -> web.Response:
        form = await request.post()
        made = {"id": f"we_{len(self.endpoints) + 1}", "object": "webhook_endpoint", "url": form["url"],
                "status": "enabled", "enabled_events": await self._events(request), "api_version": None}
        self.endpoints.append(made)
        return web.json_response({**made, "secret": "whsec_shown_once"})

    async def update(self, request: web.Request) -> web.Response:
        [found] = [e for e in self.endpoints if e["id"] == request.match_info["id"]]
        found["enabled_events"] = await self._events(request)
        if (await request.post()).get("disabled") == "false":
            found["status"] = "enabled"
        return web.json_response(found)


@pytest.fixture
def stripe_at(serve):
    async def start(endpoints: list[dict]) -> tuple[FakeWebhookEndpoints, str]:
        api = FakeWebhookEndpoints(endpoints)
        app = web.Application()
        app.router.add_get("/v1/webhook_endpoints", api.list)
        app.router.add_post("/v1/webhook_endpoints", api.create)
        app.router.add_post("/v1/webhook_endpoints/{id}", api.update)
        return api, await serve(app)

    return start


def env(base: str, key: str = KEY) -> dict[str, str]:
    return {"DATABASE_URL": "postgresql://unused/unused", "GRPC_PLAINTEXT": "true", "STRIPE_API_KEY": key,
            "STRIPE_API_BASE": base, "LOG_LEVEL": "WARNING"}


async def test_it_reports_what_an_endpoint_lacks_and_fix_enables_it_with_every_needed_type(stripe_at):
    sent = [t for t in STRIPE_NEEDED if t != "charge.succeeded"] + ["customer.created"]
    api, base = await stripe_at([{"id": "we_1", "object": "webhook_endpoint", "url": URL, "status": "disabled",
                                  "enabled_events": sent, "api_version": "2024-06-20"}])
    code, out = await run_module("billing", "check-setup", "--url", URL, env=env(base))
    assert code == 1, out
    assert "we_1, DISABLED, API version 2024-06-20" in out
    assert "missing  charge.succeeded  -- receipts lose their receipt link" in out
    assert "ignored  customer.created" in out and "INCOMPLETE" in out
    assert "[ ] subscription.halted" in out  # Razorpay's checklist

    code, out = await run_module("billing", "check-setup", "--url", URL, "--fix", env=env(base))
    assert code == 0 and "updated we_1" in out and "complete" in out, out
    [endpoint] = api.endpoints
    assert endpoint["status"] == "enabled" and set(STRIPE_NEEDED) <= set(endpoint["enabled_events"])


async def test_fix_creates_a_missing_endpoint_and_shows_its_secret_once(stripe_at):
    api, base = await stripe_at([])
    code, out = await run_module("billing", "check-setup", "--url", URL, "--fix", env=env(base))
    assert code == 0, out
    assert "none sends to this URL" in out and "signing secret, shown this once: whsec_shown_once" in out
    [endpoint] = api.endpoints
    assert endpoint["url"] == URL and sorted(endpoint["enabled_events"]) == sorted(STRIPE_NEEDED)


async def test_a_refused_key_or_no_key_exits_2_saying_why(stripe_at):
    _, base = await stripe_at([])
    code, out = await run_module("billing", "check-setup", "--url", URL, env=env(base, key="sk_test_revoked"))
    assert code == 2 and "Stripe refused GET /v1/webhook_endpoints (401)" in out, out
    code, out = await run_module("billing", "check-setup", "--url", URL,
                                 env={**env(base), "STRIPE_API_KEY": ""})
    assert code == 2 and "STRIPE_API_KEY is required" in out, out
