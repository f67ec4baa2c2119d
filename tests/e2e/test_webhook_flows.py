"""Whole flows through gateway -> billing -> PostgreSQL, delivered as providers deliver."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import aiohttp
import pytest
from billing.domain.ingest import IngestEvents
from trigger.delivery import DeliveryPlan, deliver, sign
from trigger.events import StripeScenario
from trigger.flows import FLOWS

from tests.e2e.conftest import RAZORPAY_SECRET, STRIPE_SECRET
from tests.fakes import InMemoryEventStore
from tests.support import incoming, operator_env, run_module, state, wait_for

SECRETS = {"stripe": STRIPE_SECRET, "razorpay": RAZORPAY_SECRET}


async def expected_state(deliveries):
    store = InMemoryEventStore()
    for d in deliveries:
        await IngestEvents(store).execute([incoming(d.provider, json.loads(d.body), d.event_id)])
    return store


@pytest.mark.parametrize("name", sorted(FLOWS))
async def test_flow_delivered_twice_concurrently_and_shuffled_lands_once_in_order(stack, db, name):
    flow = FLOWS[name]
    deliveries = [sign(flow.provider, e, SECRETS[flow.provider]) for e in flow.build("tenant-9", "user-3")]
    responses = await deliver(stack.gateway_url, deliveries,
                              DeliveryPlan(times=3, concurrent=True, shuffle=True, seed=11))
    assert {r.status for r in responses} == {200}
    outcomes = sorted(r.body["processing_result"]["status"] for r in responses)
    assert outcomes == ["duplicate"] * (2 * len(deliveries)) + ["processed"] * len(deliveries)
    expected = await expected_state(deliveries)
    assert state(await db.fetch("SELECT * FROM billing.transactions")) == state(expected.transactions.values())
    assert state(await db.fetch("SELECT * FROM billing.user_subscriptions")) == state(expected.subscriptions.values())
    stored = await db.fetch("SELECT event_id, status FROM billing.webhook_events")
    assert sorted(r["event_id"] for r in stored) == sorted(d.event_id for d in deliveries)


async def test_bad_requests_are_refused_and_store_nothing(stack, db):
    good = sign("stripe", StripeScenario().event("payment_intent.succeeded"), STRIPE_SECRET)
    cases = [
        ("/webhooks/stripe", good.body, {}, 400),
        ("/webhooks/stripe", good.body, {"Stripe-Signature": "t=1,v1=00"}, 400),
        ("/webhooks/stripe", good.body, sign("stripe", StripeScenario().event("charge.succeeded"), "whsec_x").headers, 400),
        ("/webhooks/stripe", good.body, sign("stripe", b"{}", STRIPE_SECRET, age_seconds=3600).headers, 400),
        ("/webhooks/stripe", b"not json", sign("stripe", b"not json", STRIPE_SECRET).headers, 400),
        ("/webhooks/stripe", b"[]", sign("stripe", b"[]", STRIPE_SECRET).headers, 400),
        ("/webhooks/stripe", io.BytesIO(b"{" * 2_000_000), {"Stripe-Signature": "t=1,v1=00"}, 413),
        ("/webhooks/razorpay", good.body, {"X-Razorpay-Signature": "00"}, 400),
        ("/webhooks/paypal", good.body, good.headers, 404),
    ]
    async with aiohttp.ClientSession() as session:
        for path, body, headers, status in cases:
            async with session.post(stack.gateway_url + path, data=body, headers=headers) as r:
                assert r.status == status, (path, headers)
                assert "error" in await r.json()
        async with session.put(stack.gateway_url + "/webhooks/stripe", data=good.body, headers=good.headers) as r:
            assert r.status == 405
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 0
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0


async def test_a_captured_razorpay_delivery_resent_under_new_event_ids_is_answered_duplicate(stack, db):
    from trigger.events import RazorpayScenario

    captured = sign("razorpay", RazorpayScenario().event("payment.captured"), RAZORPAY_SECRET, event_id="evt_genuine")
    replayed = [dataclasses.replace(captured, event_id=f"evt_forged_{i}",
                                    headers={**captured.headers, "X-Razorpay-Event-Id": f"evt_forged_{i}"})
                for i in range(3)]
    answers = await deliver(stack.gateway_url, [captured, *replayed])
    assert [(r.status, r.body["processing_result"]["status"]) for r in answers] == (
        [(200, "processed")] + [(200, "duplicate")] * 3)
    assert [r["event_id"] for r in await db.fetch("SELECT event_id FROM billing.webhook_events")] == ["evt_genuine"]
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 1


async def test_billing_down_gets_503_and_the_retry_after_restart_lands(stack, db):
    billing = next(s for s in stack.services if s.name == "billing")
    billing.signal()
    assert billing.wait(20) == 0
    delivery = sign("stripe", StripeScenario().event("payment_intent.succeeded"), STRIPE_SECRET)
    [refused] = await deliver(stack.gateway_url, [delivery])
    assert refused.status == 503 and refused.body["error"]["code"] == "billing_unavailable"
    assert await db.fetchval("SELECT count(*) FROM billing.webhook_events") == 0
    billing.start()
    await stack.wait_ready()
    [accepted] = await deliver(stack.gateway_url, [delivery])
    assert accepted.status == 200 and accepted.body["processing_result"]["status"] == "processed"


async def test_trigger_command_plays_a_flow_against_the_gateway(stack, db):
    code, text = await run_module("trigger", "flow", "razorpay-subscription", "--url", stack.gateway_url,
                                  "--tenant", "acme", "--times", "2", "--shuffle")
    assert code == 0, text
    assert "10 deliveries: HTTP 200 x10 | duplicate x5, processed x5" in text
    sub = await db.fetchrow("SELECT tenant_id, status FROM billing.user_subscriptions")
    assert (sub["tenant_id"], sub["status"]) == ("acme", "cancelled")


async def test_trigger_replays_a_saved_payload_byte_for_byte_and_backdates_on_request(stack, db, tmp_path):
    saved = tmp_path / "event.json"
    body = json.dumps(StripeScenario(tenant_id="t-file").event("payment_intent.succeeded"), indent=4).encode()
    saved.write_bytes(body)

    async def trigger(*args):
        return await run_module("trigger", *args, "--url", stack.gateway_url)

    code, out = await trigger("file", str(saved), "--provider", "stripe", "--stale", "600")
    assert code == 1 and "invalid_signature" in out  # older than the gateway's 300 s tolerance
    code, out = await trigger("file", str(saved), "--provider", "stripe")
    assert code == 0, out
    stored = await db.fetchval("SELECT payload::text FROM billing.webhook_events")
    assert json.loads(stored) == json.loads(body)
    assert await db.fetchval("SELECT tenant_id FROM billing.transactions") == "t-file"


async def test_an_operator_replays_a_selection_of_stored_events_dry_run_first_and_nothing_applies_twice(stack, db):
    flow = FLOWS["stripe-payment"]
    answers = await deliver(stack.gateway_url, [sign("stripe", e, STRIPE_SECRET) for e in flow.build("acme", "u1")])
    assert {r.status for r in answers} == {200}
    before = state(await db.fetch("SELECT * FROM billing.transactions"))
    emails = await db.fetchval("SELECT count(*) FROM billing.email_outbox")

    async def cli(*args):
        return await run_module("billing.cli", *args, env=operator_env(stack))

    selection = ("--provider", "stripe", "--tenant", "acme", "--status", "processed", "--reason",
                 "a fixed refund rule, applied to acme's past events")
    code, out = await cli("replay-selected", "--dry-run", *selection)
    assert code == 0 and f"{len(answers)} would be replayed" in out, out
    assert "transactions that would change: none" in out and "emails that would be asked for: none" in out
    code, out = await cli("replay-selected", *selection)
    assert code == 0 and f"{len(answers)} replayed" in out, out
    # Applied again through today's handlers: the same rows, no second email.
    assert state(await db.fetch("SELECT * FROM billing.transactions")) == before
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == emails
    assert [r["dry_run"] for r in await db.fetch("SELECT dry_run FROM billing.event_replays ORDER BY requested_at")] \
        == [True, False]
    code, out = await cli("replay-selected", "--provider", "stripe")
    assert code == 2 and "--reason" in out  # no replay without saying why


async def test_operator_cli_lists_shows_and_replays_events(stack, db):
    event = StripeScenario().event("payment_intent.succeeded")
    event["data"]["object"]["currency"] = "dollars"  # billing keeps it, failed
    [response] = await deliver(stack.gateway_url, [sign("stripe", event, STRIPE_SECRET)])
    assert response.body["processing_result"]["status"] == "failed"

    async def cli(*args):
        return await run_module("billing.cli", *args, env=operator_env(stack))

    code, out = await cli("failed")
    assert code == 0 and event["id"] in out and "currency" in out
    code, out = await cli("event", "stripe", event["id"])
    assert code == 0 and json.loads(out)["event"]["status"] == "failed"
    code, out = await cli("replay", "stripe", event["id"])
    assert code == 0 and "failed" in out and "1 replayed" in out  # the cause is in the event itself
    code, out = await cli("event", "stripe", "evt_missing")
    assert code == 1 and "NOT_FOUND" in out


@pytest.mark.parametrize("provider, secret", [("stripe", STRIPE_SECRET), ("razorpay", RAZORPAY_SECRET)])
async def test_each_event_keeps_the_signed_bytes_and_headers_so_its_signature_can_be_checked_again(
        stack, db, provider, secret):
    from trigger.events import RazorpayScenario

    event = (StripeScenario() if provider == "stripe" else RazorpayScenario()).event(
        "payment_intent.succeeded" if provider == "stripe" else "payment.captured")
    body = json.dumps(event, indent=3, sort_keys=True).encode()  # spacing and key order the parsed copy loses
    delivery = sign(provider, body, secret)
    [answer] = await deliver(stack.gateway_url, [delivery])
    assert answer.status == 200 and answer.body["processing_result"]["status"] == "processed"

    async def cli(*args, **env):
        return await run_module("billing.cli", "event", provider, delivery.event_id, *args,
                                env={**operator_env(stack), **env})

    code, out = await cli("--body")
    assert code == 0 and out.encode() == body
    secret_env = f"{provider.upper()}_WEBHOOK_SECRET"
    code, out = await cli("--verify", **{secret_env: f"rotated_out,{secret}"})
    assert code == 0, out
    shown = json.loads(out)
    assert shown["signature_valid"] is True
    kept = shown["event"]
    signature = "stripe-signature" if provider == "stripe" else "x-razorpay-signature"
    assert kept["headers"][signature] == delivery.headers[signature.title()]
    assert kept["headers"]["user-agent"] == delivery.headers["User-Agent"]
    assert kept["client_address"] == "127.0.0.1"
    assert kept["body_sha256"] == hashlib.sha256(body).hexdigest()
    [txn_id] = kept["transaction_ids"]
    assert str(await db.fetchval("SELECT id FROM billing.transactions")) == txn_id
    assert secret not in out

    code, out = await cli("--verify", **{secret_env: "not_the_signing_secret"})
    assert code == 1 and json.loads(out)["signature_valid"] is False


async def test_services_talk_mutual_tls_each_as_itself_and_only_what_the_policy_grants(
        database_url, tmp_path, mail_sink, monkeypatch):
    import trustme
    from devstack.stack import Stack

    from tests.certs import spiffe, write_identity

    ca = trustme.CA()
    policies = Path(__file__).resolve().parents[2] / "deploy" / "overlays" / "prod" / "policies"

    def identity(service_account: str) -> dict[str, str]:
        tls = write_identity(tmp_path / service_account, service_account, ca, spiffe(service_account),
                             "127.0.0.1", "localhost")
        return {"GRPC_TLS_CERT_FILE": tls.cert_file, "GRPC_TLS_KEY_FILE": tls.key_file,
                "GRPC_TLS_CA_FILE": tls.ca_file}

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    stack = Stack({"DATABASE_URL": database_url, **identity("payments-operator"), "SMTP_HOST": "127.0.0.1",
                   "SMTP_PORT": str(mail_sink.port), "SMTP_TLS": "none"}, log_dir=tmp_path,
                  service_env={"webhook-gateway": identity("webhook-gateway"),
                               "billing": {**identity("billing"), "GRPC_POLICY_FILE": str(policies / "billing.yaml")},
                               "notifier": {**identity("notifier"),
                                            "GRPC_POLICY_FILE": str(policies / "notifier.yaml")}})
    stack.start()
    try:
        await stack.wait_ready()
        payment = StripeScenario()
        answers = await deliver(stack.gateway_url, [sign("stripe", payment.event(t), STRIPE_SECRET)
                                                    for t in ("payment_intent.succeeded", "charge.succeeded")])
        assert [(r.status, r.body["processing_result"]["status"]) for r in answers] == [(200, "processed")] * 2
        # Billing mails the receipt as itself, which the notifier's policy allows.
        async def receipt_sent() -> bool:
            return mail_sink.count == 1

        await wait_for(receipt_sent, timeout=20, what="the receipt at the mail server")
        # The operator's command line, with the operator's certificate, gets in.
        code, out = await run_module("billing.cli", "events", env=operator_env(stack))
        assert code == 0 and "payment_intent.succeeded" in out, out
        # The same command with the internet-facing gateway's certificate is refused.
        code, out = await run_module("billing.cli", "events", env={**operator_env(stack), **identity("webhook-gateway")})
        assert code == 1 and "PERMISSION_DENIED" in out, out
    finally:
        assert set(stack.stop().values()) == {0}
