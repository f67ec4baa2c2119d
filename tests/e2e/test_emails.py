"""Webhook to inbox: billing's outbox feeds the notifier, which mails the customer exactly once."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from datetime import UTC, datetime
from email.utils import parseaddr

import aiohttp
import pytest

from trigger.delivery import DeliveryPlan, deliver, sign
from trigger.events import RazorpayScenario, StripeScenario
from trigger.flows import FLOWS

from tests.e2e.conftest import RAZORPAY_SECRET, STRIPE_SECRET
from tests.support import operator_env, run_module, wait_for

SECRETS = {"stripe": STRIPE_SECRET, "razorpay": RAZORPAY_SECRET}


def paid(s: StripeScenario) -> list:
    """A Stripe payment as Stripe reports it: its intent succeeded, and its charge, with the receipt link."""
    return [sign("stripe", s.event(t), STRIPE_SECRET) for t in ("payment_intent.succeeded", "charge.succeeded")]


async def test_payment_succeeded_mails_one_receipt_and_logs_it_sent(stack, db, mail_sink):
    s = StripeScenario(tenant_id="acme", email="buyer@example.com")
    responses = await deliver(stack.gateway_url, paid(s), DeliveryPlan(times=3, concurrent=True))
    assert {r.status for r in responses} == {200}

    async def logged_sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 1

    await wait_for(logged_sent, what="the email to be logged as sent")
    assert len(mail_sink.messages) == 1
    [message] = mail_sink.messages
    assert message["Subject"] == "Payment received: $49.99"
    # The display name is whatever billing knew when the payment succeeded: the charge (which carries the
    # billing name) may arrive before or after the payment intent, so only the address is fixed.
    name, address = parseaddr(message["To"])
    assert address == "buyer@example.com" and name in ("", "Asha Rao")
    # The link is on the charge's event, which came before or after the intent's: either way it is there.
    plain = message.get_body(("plain",)).get_content()
    assert f"Receipt: https://pay.stripe.com/receipts/payment/{s.charge}" in plain
    assert "Visa •••• 4242" in plain  # the card as its holder knows it, whichever event came first
    row = await db.fetchrow("SELECT tenant_id, email_type, to_email, status FROM notifier.email_logs")
    assert dict(row) == {"tenant_id": "acme", "email_type": "payment_received", "to_email": "buyer@example.com",
                         "status": "sent"}
    assert await db.fetchval("SELECT status FROM billing.email_outbox") == "delivered"


async def test_a_trial_about_to_end_mails_the_customer_when_and_what_it_will_cost(stack, db, mail_sink):
    s = StripeScenario(tenant_id="acme", email="buyer@example.com")
    s.checkout_mode = "subscription"
    checkout, notice = s.event("checkout.session.completed"), s.event("customer.subscription.trial_will_end")
    # The trigger ends the trial three days after the notice, as Stripe does: whenever the test runs.
    ends = datetime.fromtimestamp(notice["data"]["object"]["trial_end"], UTC)
    responses = await deliver(stack.gateway_url, [sign("stripe", e, STRIPE_SECRET) for e in (checkout, notice)])
    assert {r.status for r in responses} == {200}

    async def sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent "
                                 "AND email_type = 'subscription_trial_ending'") == 1

    await wait_for(sent, what="the trial's notice to be mailed")
    [notice_mail] = [m for m in mail_sink.messages if "trial" in m["Subject"]]
    assert notice_mail["Subject"] == f"Your Pro monthly trial ends on {ends:%B} {ends.day}, {ends.year}"
    assert "continues at $49.99 each billing period" in notice_mail.get_body(("plain",)).get_content()


async def test_a_refund_that_fails_mails_the_customer_that_they_are_still_owed(stack, db, mail_sink):
    deliveries = [sign("stripe", e, STRIPE_SECRET) for e in FLOWS["stripe-refund-failed"].build("acme", "u1")]
    responses = await deliver(stack.gateway_url, deliveries)
    assert {r.status for r in responses} == {200}

    async def all_sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 3

    await wait_for(all_sent, what="the receipt, the refund and its failure to be mailed")
    subjects = sorted(m["Subject"] for m in mail_sink.messages)
    assert subjects == ["Payment received: $49.99", "Refund of $49.99 issued",
                        "Your refund of $49.99 could not be completed"]
    failed = next(m for m in mail_sink.messages if m["Subject"].startswith("Your refund"))
    text = failed.get_body(("plain",)).get_content()
    assert "the card has expired or was cancelled" in text and "not been refunded yet" in text
    row = await db.fetchrow("SELECT status, provider_status, amount_refunded FROM billing.transactions")
    assert tuple(row) == ("succeeded", "refund_failed", 0)


async def test_notifier_down_then_up_drains_the_outbox(stack, db, mail_sink):
    notifier = stack.service("notifier")
    notifier.signal()
    assert notifier.wait(20) == 0
    flow = FLOWS["stripe-subscription"]
    deliveries = [sign("stripe", e, STRIPE_SECRET) for e in flow.build("acme", "u1")]
    responses = await deliver(stack.gateway_url, deliveries)
    assert {r.status for r in responses} == {200}  # billing commits while the notifier is away

    async def outbox_waits():
        return await db.fetchval("SELECT count(*) FROM billing.email_outbox WHERE attempts > 0") > 0

    await wait_for(outbox_waits, what="billing to try the notifier")
    assert mail_sink.messages == []
    notifier.start()

    async def all_sent():
        kinds = await db.fetch("SELECT email_type FROM notifier.email_logs WHERE sent ORDER BY email_type")
        return len(kinds) == 4

    await wait_for(all_sent, timeout=60, what="the outbox to drain")
    kinds = sorted(r["email_type"] for r in await db.fetch("SELECT email_type FROM notifier.email_logs"))
    assert kinds == ["payment_failed", "payment_received", "subscription_activated", "subscription_cancelled"]
    assert len(mail_sink.messages) == 4
    # The failed renewal's email sends the customer to the invoice's page, to pay there.
    renewal = await db.fetchval("SELECT invoice_url FROM billing.transactions WHERE status = 'failed'")
    failed = next(m for m in mail_sink.messages if "did not go through" in m["Subject"])
    assert renewal.startswith("https://invoice.stripe.com/i/")
    assert f"Try again: {renewal}" in failed.get_body(("plain",)).get_content()
    # The activation names what each period costs, as the subscription's price states it.
    activated = next(m for m in mail_sink.messages if "is active" in m["Subject"])
    assert "Price: $49.99" in activated.get_body(("plain",)).get_content()


async def test_one_webhook_can_be_followed_through_all_three_services_by_request_id(stack, db, tmp_path):
    delivery, charge = paid(StripeScenario(tenant_id="acme"))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.gateway_url}/webhooks/stripe", data=delivery.body,
                                headers={**delivery.headers, "X-Request-Id": "trace-4242"}) as response:
            assert response.status == 200 and response.headers["X-Request-Id"] == "trace-4242"
    [response] = await deliver(stack.gateway_url, [charge])  # brings the receipt's link; the intent asked for it
    assert response.status == 200

    async def sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 1

    await wait_for(sent, what="the receipt to be sent")
    assert await db.fetchval("SELECT request_id FROM billing.webhook_events "
                             "WHERE event_type = 'payment_intent.succeeded'") == "trace-4242"
    lines = {name: [json.loads(line) for line in (tmp_path / f"{name}.log").read_text().splitlines()
                    if line.startswith("{")] for name in ("webhook-gateway", "notifier")}
    assert any(e.get("request_id") == "trace-4242" and e["message"] == "webhook accepted"
               for e in lines["webhook-gateway"])
    assert any(e.get("request_id") == "trace-4242" and e["message"] == "email accepted" for e in lines["notifier"])
    assert not any("Stripe-Signature" in json.dumps(e) or STRIPE_SECRET in json.dumps(e)
                   for entries in lines.values() for e in entries)


async def test_a_receipt_the_relay_refused_is_sent_again_by_the_operators_command_line(stack, db, mail_sink):
    mail_sink.fail_next("554 5.7.1 Relay access denied")  # say, a sender policy broken for a while
    s = StripeScenario(tenant_id="acme", email="buyer@example.com")
    responses = await deliver(stack.gateway_url, paid(s))
    assert {r.status for r in responses} == {200}

    async def failed():
        return await db.fetchval("SELECT status FROM notifier.email_logs") == "failed"

    await wait_for(failed, what="the receipt to end failed")
    email_id = await db.fetchval("SELECT id::text FROM notifier.email_logs")

    async def cli(*args):
        return await run_module("notifier.cli", *args, env=operator_env(stack))

    code, out = await cli("failed", "acme")
    assert code == 0 and email_id in out and "554 5.7.1 Relay access denied" in out
    code, out = await cli("retry", "acme", email_id)
    assert code == 0 and out.splitlines() == [email_id, "1 queued again"], out

    async def sent():
        return await db.fetchval("SELECT sent FROM notifier.email_logs WHERE id = $1::uuid", email_id)

    await wait_for(sent, what="the receipt to be sent once queued again")
    [message] = mail_sink.messages
    assert message["Subject"] == "Payment received: $49.99"
    code, out = await cli("retry", "acme", email_id)
    assert code == 1 and f"FAILED_PRECONDITION: email {email_id} is sent, not failed" in out


async def test_an_email_the_notifier_refused_is_sent_once_queued_again_from_billings_command_line(
        stack, db, mail_sink):
    # As during a rolling deploy whose notifier did not know an email kind yet: the request was refused
    # and kept in billing's outbox. Here a receipt's own request stands in for it, under a key of its own.
    s = StripeScenario(tenant_id="acme", email="buyer@example.com")
    await deliver(stack.gateway_url, paid(s))

    async def delivered():
        return await db.fetchval("SELECT status FROM billing.email_outbox") == "delivered"

    await wait_for(delivered, what="the receipt to reach the notifier")
    await db.execute(
        "INSERT INTO billing.email_outbox (id, idempotency_key, kind, content, status, attempts, last_error) "
        "SELECT gen_random_uuid(), idempotency_key || ':refused', kind, content, 'dead', 1, "
        "'INVALID_ARGUMENT: content.kind: one email kind is required' FROM billing.email_outbox")

    async def cli(*args):
        return await run_module("billing.cli", *args, env=operator_env(stack))

    code, out = await cli("refused-emails")
    assert code == 0 and "content.kind: one email kind is required" in out and out.endswith("1 refused\n")
    code, out = await cli("refused-emails", "--retry")
    assert code == 0 and out.endswith("1 queued again\n"), out

    async def both_sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 2

    await wait_for(both_sent, what="the email queued again to be sent")
    assert [m["Subject"] for m in mail_sink.messages] == ["Payment received: $49.99"] * 2
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox WHERE status = 'delivered'") == 2


@pytest.fixture
def quick_leases(monkeypatch):
    """SMTP steps of at most 2 s: a send is given up after 8 s, and a lease runs out after 24 s, so the
    emails a crash left leased are sent again within a test's time."""
    monkeypatch.setenv("SMTP_TIMEOUT_SECONDS", "2")


async def _receipts_being_sent(stack, mail_sink, payments: int) -> None:
    """`payments` Razorpay payments taken in, each asking for a receipt; returns once 60 are sent."""
    deliveries = [sign("razorpay", RazorpayScenario(tenant_id="acme").event("payment.captured"), RAZORPAY_SECRET)
                  for _ in range(payments)]
    assert {r.status for r in await deliver(stack.gateway_url, deliveries, DeliveryPlan(concurrent=True))} == {200}

    async def sending():
        return mail_sink.count >= 60

    await wait_for(sending, what="the receipts to be sent")


async def test_a_notifier_killed_mid_burst_sends_every_receipt_and_repeats_only_unrecorded_ones_unchanged(
    quick_leases, stack, db, mail_sink
):
    payments = 300
    await _receipts_being_sent(stack, mail_sink, payments)
    notifier = stack.service("notifier")
    notifier.signal(signal.SIGKILL)
    assert notifier.wait(20) == -signal.SIGKILL
    assert mail_sink.count < payments, "the crash came after the last receipt: it proves nothing"
    # The log as the crash left it (no notifier writes to it now): the emails recorded sent, and those claimed
    # for a send whose outcome was not recorded.
    rows = await db.fetch("SELECT message_id, sent, attempts FROM notifier.email_logs")
    recorded = {r["message_id"] for r in rows if r["sent"]}
    unrecorded = {r["message_id"] for r in rows if not r["sent"] and r["attempts"] > 0}
    notifier.start()

    async def all_sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == payments

    await wait_for(all_sent, timeout=90, what="every receipt to be sent")
    bodies = defaultdict(list)
    for message in mail_sink.messages:
        bodies[message["Message-ID"]].append(message.get_body(("plain",)).get_content())
    assert len(bodies) == payments  # every receipt arrived
    assert all(len(set(b)) == 1 for b in bodies.values())  # a repeat is the same message, by its Message-ID
    repeated = {message_id for message_id, copies in bodies.items() if len(copies) > 1}
    # Only a send the relay accepted in the moment before the crash, before its outcome was recorded, is
    # repeated; an email recorded sent never is. (How soon outcomes are recorded, which keeps such repeats
    # few, is timing: tests/unit/test_delivery_rounds.py holds it.)
    assert not repeated & recorded
    assert repeated <= unrecorded


async def test_a_notifier_stopped_mid_burst_records_what_it_sent_and_a_restart_sends_every_receipt_once(
    stack, db, mail_sink
):
    payments = 300
    await _receipts_being_sent(stack, mail_sink, payments)
    notifier = stack.service("notifier")
    notifier.signal(signal.SIGTERM)
    assert notifier.wait(30) == 0  # drained within the grace period
    accepted = mail_sink.count
    assert accepted < payments, "the stop came after the last receipt: it proves nothing"
    # A drained notifier recorded the outcome of every send it made: what the relay accepted is logged sent.
    assert await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == accepted
    notifier.start()

    async def all_sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == payments

    await wait_for(all_sent, timeout=90, what="every receipt to be sent")
    copies = defaultdict(int)
    for message in mail_sink.messages:
        copies[message["Message-ID"]] += 1
    assert len(copies) == payments and set(copies.values()) == {1}  # every receipt, each exactly once


async def test_an_operator_erases_a_customer_from_billing_and_the_email_log_with_one_command(stack, db, mail_sink):
    s = StripeScenario(tenant_id="acme", email="erase.me@example.com")
    await deliver(stack.gateway_url, paid(s))

    async def sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 1

    await wait_for(sent, what="the receipt to be sent")
    code, out = await run_module("billing.cli", "erase-customer", "--email", "Erase.Me@example.com",
                                 "--reason", "GDPR request 9", env=operator_env(stack))
    assert code == 0, out
    assert '"transactions": 1' in out and '"events": 2' in out and '"emails": 1' in out, out
    held = await db.fetchval(
        "SELECT (SELECT count(*) FROM billing.transactions t WHERE strpos(t::text, 'erase.me') > 0)"
        " + (SELECT count(*) FROM billing.webhook_events e WHERE strpos(e::text, 'erase.me') > 0)"
        " + (SELECT count(*) FROM notifier.email_logs l WHERE strpos(l::text, 'erase.me') > 0)")
    assert held == 0
    # Stripe delivers the payment again: a duplicate, acknowledged, and nothing is stored or sent again.
    responses = await deliver(stack.gateway_url, paid(s))
    assert {r.status for r in responses} == {200}
    assert await db.fetchval("SELECT count(*) FROM billing.email_outbox") == 0
    assert await db.fetchval("SELECT count(*) FROM notifier.email_logs") == 1
    assert len(mail_sink.messages) == 1


async def test_a_tenants_emails_come_from_its_name_answer_to_it_and_wear_its_colours(stack, db, mail_sink):
    profile = ["--name", "Shree Packaging", "--reply-to", "accounts@shreepackaging.in",
               "--support-email", "support@shreepackaging.in", "--brand-color", "#0f766e",
               "--portal-url", "https://shreepackaging.in/billing?customer={user_id}"]
    for tenant, extra in (("shree", []), ("quiet", ["--disable", "payment_received"])):
        code, out = await run_module("billing.cli", "set-tenant-profile", tenant, *profile, *extra,
                                     env=operator_env(stack))
        assert code == 0, out
    code, out = await run_module("billing.cli", "tenant-profile", "shree", env=operator_env(stack))
    assert code == 0 and '"reply_to": "accounts@shreepackaging.in"' in out, out
    s = StripeScenario(tenant_id="shree", email="buyer@example.com")
    failed = RazorpayScenario(tenant_id="shree", user_id="u7")
    quiet = StripeScenario(tenant_id="quiet", email="buyer@example.com")
    deliveries = [*paid(s), sign("razorpay", failed.event("payment.failed"), RAZORPAY_SECRET), *paid(quiet)]
    assert {r.status for r in await deliver(stack.gateway_url, deliveries)} == {200}

    async def handled():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 2 and await db.fetchval(
            "SELECT count(*) FROM billing.email_outbox WHERE status = 'skipped'") == 1

    await wait_for(handled, what="two emails sent and the turned-off one skipped")
    assert len(mail_sink.messages) == 2
    by_subject = {m["Subject"]: m for m in mail_sink.messages}
    receipt = by_subject["Payment received: $49.99"]
    assert parseaddr(receipt["From"])[0] == "Shree Packaging via BoxCostPro"
    assert receipt["Reply-To"] == "accounts@shreepackaging.in"
    assert parseaddr(receipt["To"])[1] == "buyer@example.com"
    html = receipt.get_body(("html",)).get_content()
    plain = receipt.get_body(("plain",)).get_content()
    assert "background: #0f766e" in html and "#8a5a2b" not in html
    assert plain.startswith(("Hi Asha Rao,", "Hello,"))  # the name is the charge's, whichever came first
    assert "The Shree Packaging team" in plain and "Questions? Contact Shree Packaging at support@shreepackaging.in" in plain
    # Razorpay gives no page to pay again: the tenant's billing portal stands in.
    [failure] = [m for subject, m in by_subject.items() if subject != receipt["Subject"]]
    assert "https://shreepackaging.in/billing?customer=u7" in failure.get_body(("plain",)).get_content()
    assert parseaddr(failure["From"])[0] == "Shree Packaging via BoxCostPro"


async def test_a_renewal_waiting_on_the_customers_bank_mails_them_the_page_to_confirm_it_once(stack, db, mail_sink):
    s = StripeScenario(tenant_id="acme", email="buyer@example.com")
    waiting = sign("stripe", s.event("invoice.payment_action_required"), STRIPE_SECRET)
    responses = await deliver(stack.gateway_url, [waiting], DeliveryPlan(times=3, concurrent=True))
    assert {r.status for r in responses} == {200}

    async def sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 1

    await wait_for(sent, what="the request to act to be mailed")
    [message] = mail_sink.messages
    assert message["Subject"] == "Your payment of $49.99 needs one more step from you"
    plain = message.get_body(("plain",)).get_content()
    page = s.event("invoice.payment_action_required")["data"]["object"]["hosted_invoice_url"]
    assert f"Complete your payment: {page}\n" in plain
    assert "Your bank asks you to confirm this payment." in plain
    # Stripe's retry fails: that is told too, with the same page to pay again; the request is not repeated.
    assert {r.status for r in await deliver(stack.gateway_url, [
        sign("stripe", s.event("invoice.payment_failed"), STRIPE_SECRET), waiting])} == {200}

    async def both():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 2

    await wait_for(both, what="the failure to be mailed")
    assert sorted(m["Subject"] for m in mail_sink.messages) == [
        "Your payment of $49.99 did not go through", "Your payment of $49.99 needs one more step from you"]


async def test_a_tenant_in_india_mails_its_customers_in_hindi_with_rupees_in_lakhs(stack, db, mail_sink):
    code, out = await run_module("billing.cli", "set-tenant-profile", "shree", "--name", "श्री पैकेजिंग",
                                 "--locale", "hi-IN", "--reply-to", "accounts@shreepackaging.in",
                                 env=operator_env(stack))
    assert code == 0, out
    s = RazorpayScenario(tenant_id="shree", amount=24990000)  # ₹2,49,900
    responses = await deliver(stack.gateway_url, [sign("razorpay", s.event("payment.captured"), RAZORPAY_SECRET)])
    assert {r.status for r in responses} == {200}

    async def sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent") == 1

    await wait_for(sent, what="the receipt to be mailed")
    [message] = mail_sink.messages
    assert message["Subject"] == "भुगतान प्राप्त हुआ: ₹2,49,900.00"
    assert parseaddr(message["From"])[0] == "श्री पैकेजिंग via BoxCostPro"
    plain = message.get_body(("plain",)).get_content()
    assert plain.startswith(("नमस्ते,", "नमस्ते "))
    assert "राशि: ₹2,49,900.00" in plain and "श्री पैकेजिंग टीम" in plain
    assert "आप इस ईमेल का उत्तर दे सकते हैं।" in plain
    assert '<html lang="hi-IN">' in message.get_body(("html",)).get_content()


async def test_a_subscription_email_names_the_plan_as_the_catalog_has_it(stack, db, mail_sink):
    code, out = await run_module("billing.cli", "set-plan", "stripe", "price_pro_monthly", "--name", "Cartons Pro",
                                 "--interval", "month", env=operator_env(stack))
    assert code == 0, out
    s = StripeScenario(tenant_id="acme", email="buyer@example.com")
    s.checkout_mode = "subscription"
    deliveries = [sign("stripe", s.event(t), STRIPE_SECRET)
                  for t in ("checkout.session.completed", "customer.subscription.created")]
    assert {r.status for r in await deliver(stack.gateway_url, deliveries)} == {200}

    async def sent():
        return await db.fetchval("SELECT count(*) FROM notifier.email_logs WHERE sent "
                                 "AND email_type = 'subscription_activated'") == 1

    await wait_for(sent, what="the activation to be mailed")
    [message] = [m for m in mail_sink.messages if "subscription" in m["Subject"]]
    assert message["Subject"] == "Your Cartons Pro subscription is active"
    assert "Plan: Cartons Pro" in message.get_body(("plain",)).get_content()
