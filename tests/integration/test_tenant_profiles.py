"""Tenant profiles through billing's gRPC API on real PostgreSQL: set whole, read back, refused with the
field named and nothing stored; and the outbox handing emails over with their tenant's profile."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from billing.adapters.email_messages import as_sent
from billing.adapters.outbox import PostgresOutbox
from billing.adapters.postgres import create_pool
from billing.adapters.reader import PostgresBillingReader
from billing.domain.dispatch import DispatchEmails
from boxcost.billing.v1 import billing_pb2
from trigger.events import RazorpayScenario, StripeScenario

from tests.fakes import TakingNotifier
from tests.support import expect_code, incoming

SHREE = billing_pb2.TenantProfile(
    display_name="Shree Packaging", support_email="support@shreepackaging.in",
    support_url="https://shreepackaging.in/help", reply_to="accounts@shreepackaging.in", brand_color="#0F766E",
    logo_url="https://shreepackaging.in/logo.png", locale="en-IN", time_zone="Asia/Kolkata",
    portal_url_template="https://shreepackaging.in/billing?customer={user_id}",
    disabled_emails=["subscription_trial_ending"])


def _set(tenant: str, profile: billing_pb2.TenantProfile) -> billing_pb2.SetTenantProfileRequest:
    return billing_pb2.SetTenantProfileRequest(tenant_id=tenant, profile=profile)


async def test_a_profile_is_stored_whole_read_back_and_replaced_whole(billing):
    stub, _ = billing
    stored = (await stub.SetTenantProfile(_set("acme", SHREE))).profile
    assert stored.brand_color == "#0f766e"  # one spelling of a colour
    assert stored.updated_at.seconds > 0 and stored.updated_by  # who set it, as the caller is known
    read = (await stub.GetTenantProfile(billing_pb2.GetTenantProfileRequest(tenant_id="acme"))).profile
    assert read == stored
    for field in ("display_name", "support_email", "support_url", "reply_to", "logo_url", "locale", "time_zone",
                  "portal_url_template"):
        assert getattr(read, field) == getattr(SHREE, field), field
    assert list(read.disabled_emails) == ["subscription_trial_ending"]

    await stub.SetTenantProfile(_set("acme", billing_pb2.TenantProfile(display_name="Acme Cartons")))
    again = (await stub.GetTenantProfile(billing_pb2.GetTenantProfileRequest(tenant_id="acme"))).profile
    assert again.display_name == "Acme Cartons" and not again.reply_to and not again.disabled_emails


async def test_a_tenant_without_a_profile_is_not_found(billing):
    stub, _ = billing
    details = await expect_code(stub.GetTenantProfile(billing_pb2.GetTenantProfileRequest(tenant_id="nobody")),
                                grpc.StatusCode.NOT_FOUND)
    assert "BoxCostPro" in details


@pytest.mark.parametrize(("change", "field"), [
    ({"display_name": ""}, "profile.display_name"),
    ({"display_name": "Shree\r\nBcc: x@y.in"}, "profile.display_name"),
    ({"display_name": "<b>Shree</b>"}, "profile.display_name"),
    ({"brand_color": "teal"}, "profile.brand_color"),
    ({"brand_color": "#0f766e;background:url(x)"}, "profile.brand_color"),
    ({"logo_url": "http://shreepackaging.in/logo.png"}, "profile.logo_url"),
    ({"support_url": "javascript:alert(1)"}, "profile.support_url"),
    ({"reply_to": "accounts"}, "profile.reply_to"),
    ({"reply_to": "a@b.in, c@d.in"}, "profile.reply_to"),
    ({"support_email": "x" * 300 + "@b.in"}, "profile.support_email"),
    ({"locale": "Hindi"}, "profile.locale"),
    # Refused as the notifier would refuse them in each email: a tag no locale has, an address with '..'.
    ({"locale": "xx-YY"}, "profile.locale"),
    ({"reply_to": "accounts..team@shreepackaging.in"}, "profile.reply_to"),
    ({"time_zone": "India/Pune"}, "profile.time_zone"),
    ({"portal_url_template": "https://x.in/{email}"}, "profile.portal_url_template"),
    ({"portal_url_template": "http://x.in/billing"}, "profile.portal_url_template"),
    ({"disabled_emails": ["payment_received", "quote_created"]}, "profile.disabled_emails"),
])
async def test_a_wrong_field_is_refused_by_name_and_nothing_is_stored(billing, db, change, field):
    stub, _ = billing
    profile = billing_pb2.TenantProfile()
    profile.CopyFrom(SHREE)
    for name, value in change.items():
        if name == "disabled_emails":
            del profile.disabled_emails[:]
            profile.disabled_emails.extend(value)
        else:
            setattr(profile, name, value)
    details = await expect_code(stub.SetTenantProfile(_set("acme", profile)), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(field), details
    assert len(details) < 300
    assert await db.fetchval("SELECT count(*) FROM billing.tenant_profiles") == 0


async def test_a_profile_needs_its_tenant(billing, db):
    stub, _ = billing
    details = await expect_code(stub.SetTenantProfile(_set("", SHREE)), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith("tenant_id")
    assert await db.fetchval("SELECT count(*) FROM billing.tenant_profiles") == 0


async def test_the_outbox_hands_emails_over_with_the_tenants_profile_and_keeps_turned_off_kinds_unsent(
        billing, database_url, db):
    stub, ingest = billing
    await stub.SetTenantProfile(_set("acme", SHREE))
    stripe = StripeScenario(tenant_id="acme")
    razorpay = RazorpayScenario(tenant_id="acme")
    other = StripeScenario(tenant_id="globex")
    trial = StripeScenario(tenant_id="acme")
    trial.checkout_mode = "subscription"
    await ingest.execute([incoming("stripe", stripe.event("payment_intent.succeeded")),
                          incoming("razorpay", razorpay.event("payment.failed")),
                          incoming("stripe", other.event("payment_intent.succeeded"))])
    await ingest.execute([incoming("stripe", trial.event(t))
                          for t in ("checkout.session.completed", "customer.subscription.trial_will_end")])
    # A receipt waits a while for its link to come; these are due now.
    await db.execute("UPDATE billing.email_outbox SET next_attempt_at = now()")
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        notifier = TakingNotifier()
        dispatch = DispatchEmails(PostgresOutbox(pool), notifier, clock=lambda: datetime.now(UTC),
                                  profiles=PostgresBillingReader(pool))
        while await dispatch.run_once():
            pass
    finally:
        await pool.close()
    sent = {(i.tenant_id, i.kind): as_sent(i.content, i.profile) for i in notifier.sent}
    receipt = sent[("acme", "payment_received")]
    assert receipt.tenant_name == "Shree Packaging"
    assert (receipt.branding.reply_to, receipt.branding.brand_color, receipt.branding.logo_url) == (
        "accounts@shreepackaging.in", "#0f766e", "https://shreepackaging.in/logo.png")
    # A failed payment the provider gave no page for is paid again in the tenant's portal.
    failed = sent[("acme", "payment_failed")]
    assert failed.payment_failed.retry_url == f"https://shreepackaging.in/billing?customer={failed.user_id}"
    # A tenant without a profile: BoxCostPro's name and look.
    plain = sent[("globex", "payment_received")]
    assert plain.tenant_name == "BoxCostPro" and not plain.HasField("branding")
    # The kind acme turned off was never handed over, and says why.
    assert ("acme", "subscription_trial_ending") not in sent
    skipped = await db.fetch("SELECT kind, status, last_error FROM billing.email_outbox WHERE status <> 'delivered'")
    assert [tuple(r) for r in skipped] == [("subscription_trial_ending", "skipped",
                                            "turned off in the tenant's profile")]
