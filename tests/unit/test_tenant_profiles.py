"""A tenant's profile applied to the emails billing hands over: name, look, contacts and portal links."""

from __future__ import annotations

from billing.adapters.email_messages import as_sent
from billing.domain.tenant_profiles import TenantProfile, checked
from boxcost.notifier.v1 import notifier_pb2 as pb

PROFILE = checked(TenantProfile(display_name=" Shree Packaging ", reply_to="Accounts@ShreePackaging.in", locale="hi-IN",
                                time_zone="Asia/Kolkata",
                                brand_color="#0F766E", portal_url_template="https://shree.in/pay?c={user_id}",
                                disabled_emails=("payment_refunded", "payment_refunded")))


def _failed(retry_url: str = "", user_id: str = "u7") -> pb.EmailContent:
    return pb.EmailContent(tenant_id="shree", user_id=user_id, tenant_name="BoxCostPro",
                           payment_failed=pb.PaymentFailed(amount=pb.Money(amount_minor=100, currency="INR"),
                                                           retry_url=retry_url))


def test_a_profile_is_stored_in_one_spelling():
    assert PROFILE.display_name == "Shree Packaging" and PROFILE.brand_color == "#0f766e"
    assert PROFILE.disabled_emails == ("payment_refunded",)
    assert not PROFILE.sends("payment_refunded") and PROFILE.sends("payment_received")


def test_the_portal_stands_in_only_where_the_provider_gave_no_link_and_the_customer_is_known():
    assert as_sent(_failed(), PROFILE).payment_failed.retry_url == "https://shree.in/pay?c=u7"
    stripe_page = "https://invoice.stripe.com/i/acct_1/test_1"
    assert as_sent(_failed(stripe_page), PROFILE).payment_failed.retry_url == stripe_page
    assert as_sent(_failed(user_id=""), PROFILE).payment_failed.retry_url == ""
    cancelled = pb.EmailContent(tenant_id="shree", user_id="u7", subscription_cancelled=pb.SubscriptionCancelled())
    assert as_sent(cancelled, PROFILE).subscription_cancelled.reactivation_url == "https://shree.in/pay?c=u7"


def test_the_email_takes_the_tenants_name_and_look_and_the_stored_one_is_left_as_it_was():
    stored = _failed()
    sent = as_sent(stored, PROFILE)
    assert sent.tenant_name == "Shree Packaging" and sent.branding.reply_to == "Accounts@ShreePackaging.in"
    assert sent.branding.brand_color == "#0f766e" and (sent.locale, sent.time_zone) == ("hi-IN", "Asia/Kolkata")
    assert stored.tenant_name == "BoxCostPro" and not stored.HasField("branding")
    assert as_sent(stored, None) is stored
