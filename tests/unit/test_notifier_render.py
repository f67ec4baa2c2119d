"""Email templates: golden files for every kind, escaping, money and request validation."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import pytest
from jinja2 import UndefinedError
from notifier.domain.contents import EmailKind, InvalidEmailRequest, Money
from notifier.domain.model import Branding, EmailRequest, validate
from notifier.domain.render import Renderer, money
from notifier.domain.samples import SAMPLE_BRANDING, sample

GOLDEN = Path(__file__).parent / "golden"
renderer = Renderer()


def _with(kind: EmailKind, **changes) -> EmailRequest:
    """A sample request with `data` changing fields of its content and the rest fields of the request."""
    base = sample(kind)
    return replace(base, content=replace(base.content, **changes.pop("data", {})), **changes)


# Each kind without a profile (BoxCostPro's look), with the sample tenant's, and in Hindi with it.
VARIANTS = {"": (Branding(), ""), "branded": (SAMPLE_BRANDING, ""), "hi-IN": (SAMPLE_BRANDING, "hi-IN")}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=lambda v: v or "no-profile")
@pytest.mark.parametrize("kind", list(EmailKind), ids=lambda k: k.value)
def test_rendered_email_matches_golden_file(kind, variant):
    """Regenerate after an intended design change with UPDATE_GOLDEN=1 make test-unit, and review the diff."""
    branding, locale = VARIANTS[variant]
    rendered = renderer.render(validate(replace(sample(kind, branding), locale=locale)))
    expected = {"html": rendered.html, "txt": f"Subject: {rendered.subject}\n\n{rendered.text}"}
    for suffix, content in expected.items():
        path = GOLDEN / variant / f"{kind.value}.{suffix}"
        if os.environ.get("UPDATE_GOLDEN"):
            path.write_text(content)
        assert content == path.read_text(), f"{path.name} differs from its golden file"


@pytest.mark.parametrize("kind", list(EmailKind), ids=lambda k: k.value)
def test_every_email_has_branding_footer_and_both_parts(kind):
    rendered = renderer.render(validate(sample(kind)))
    assert "Shree Packaging" in rendered.html and "Shree Packaging" in rendered.text
    assert "do not reply" in rendered.html and "do not reply" in rendered.text
    assert 'style="' in rendered.html  # CSS inlined for mail clients
    assert "<" not in rendered.text


@pytest.mark.parametrize("kind", list(EmailKind), ids=lambda k: k.value)
def test_a_tenants_profile_gives_its_colour_logo_contacts_and_invites_replies(kind):
    rendered = renderer.render(validate(sample(kind, SAMPLE_BRANDING)))
    html = " ".join(rendered.html.split())
    assert "background: #0f766e" in html and "#8a5a2b" not in html
    assert '<img src="https://shreepackaging.in/logo.png" alt="Shree Packaging"' in html
    assert 'href="mailto:support@shreepackaging.in"' in html and 'href="https://shreepackaging.in/help"' in html
    for part in (html, rendered.text):
        assert "Questions? Contact Shree Packaging at support@shreepackaging.in" in part.replace(
            '<a href="mailto:support@shreepackaging.in">', "").replace("</a>", "")
        assert "You can reply to this email." in part and "do not reply" not in part


def test_a_customer_without_a_name_is_greeted_without_one():
    rendered = renderer.render(validate(replace(sample(EmailKind.PAYMENT_RECEIVED), to_name="")))
    assert rendered.text.startswith("Hello,\n") and "<p>Hello,</p>" in rendered.html
    assert "there" not in rendered.text


@pytest.mark.parametrize(("field", "value"), [
    ("brand_color", "red"), ("brand_color", "#0f766e; x: url(evil)"), ("logo_url", "http://shreepackaging.in/l.png"),
    ("logo_url", "javascript:alert(1)"), ("support_url", "ftp://x"), ("reply_to", "not an address"),
    ("reply_to", "a@b.in\r\nBcc: all@x.in"), ("support_email", "x@"),
])
def test_a_branding_field_that_could_break_the_email_is_refused_naming_it(field, value):
    bad = sample(EmailKind.PAYMENT_RECEIVED, replace(SAMPLE_BRANDING, **{field: value}))
    with pytest.raises(InvalidEmailRequest) as refused:
        validate(bad)
    assert refused.value.field == f"content.branding.{field}"


def test_an_email_billing_sends_as_the_platform_does_not_say_it_came_through_itself():
    # Billing knows no tenant's display name, so its emails go out as BoxCostPro.
    rendered = renderer.render(validate(replace(sample(EmailKind.PAYMENT_FAILED), tenant_name="BoxCostPro")))
    for part in (rendered.text, " ".join(rendered.html.split())):
        assert "This email was sent by BoxCostPro because of activity on your account." in part
    tenants = renderer.render(validate(sample(EmailKind.PAYMENT_FAILED)))
    assert "sent by Shree Packaging through BoxCostPro because" in tenants.text


def test_a_subscription_email_with_no_plan_name_names_none():
    activated = _with(EmailKind.SUBSCRIPTION_ACTIVATED, data={"plan": ""})
    rendered = renderer.render(validate(activated))
    assert rendered.subject == "Your subscription is active"
    assert "Plan" not in rendered.text and ">Plan<" not in rendered.html
    assert "Next billing date: March 14, 2026" in rendered.text
    cancelled = _with(EmailKind.SUBSCRIPTION_CANCELLED, data={"plan": ""})
    rendered = renderer.render(validate(cancelled))
    assert rendered.subject == "Your subscription has been cancelled"
    assert "Your subscription ends on March 14, 2026." in rendered.text
    assert "Your subscription ends on" in " ".join(rendered.html.replace("<strong>", "").split())


def test_a_subscription_that_ended_at_once_is_told_it_ended_not_that_access_goes_on():
    ended = _with(EmailKind.SUBSCRIPTION_CANCELLED, data={"ended": True})
    rendered = renderer.render(validate(ended))
    html = " ".join(rendered.html.replace("<strong>", "").replace("</strong>", "").split())
    for part in (rendered.text, html):
        assert "Your Pro monthly subscription ended on March 14, 2026." in part
        assert "keep access" not in part
    ending = renderer.render(validate(sample(EmailKind.SUBSCRIPTION_CANCELLED)))
    assert "ends on March 14, 2026. You keep access until then." in ending.text


def test_customer_supplied_text_is_escaped_in_html():
    request = _with(EmailKind.TICKET_CREATED, to_name="<script>alert(1)</script>",
                    data={"subject": '<img src=x onerror="x()">'})
    rendered = renderer.render(validate(request))
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert "<img" not in rendered.html and "&lt;img" in rendered.html


@pytest.mark.parametrize(("amount", "currency", "shown"),
                         [(4999, "USD", "$49.99"), (125000, "INR", "₹1,250.00"), (500, "JPY", "¥500"),
                          (0, "EUR", "€0.00"), (123456789, "USD", "$1,234,567.89"), (5000, "KWD", "KWD5.000"),
                          # ISO 4217 gives these minor units that CLDR's display digits leave out: the
                          # amount is still in hundredths (thousandths for IQD), never shown 100 times over.
                          (1000000, "HUF", "HUF10,000"), (15000000, "COP", "COP150,000"),
                          (1234567, "IQD", "IQD1,234.567"), (1000050, "HUF", "HUF10,000.5"),
                          (500, "ISK", "ISK500"), (50000, "MGA", "MGA500")])
def test_money_is_formatted_from_iso_4217_minor_units(amount, currency, shown):
    assert money(Money(amount, currency)) == shown


def test_undefined_template_variable_is_an_error(tmp_path):
    for path in GOLDEN.parent.parent.parent.joinpath("services/notifier/src/notifier/templates").iterdir():
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "payment_received.txt").write_text("Paid by {{ payment_card_holder }}")
    with pytest.raises(UndefinedError):
        Renderer(tmp_path).render(sample(EmailKind.PAYMENT_RECEIVED))


@pytest.mark.parametrize(
    ("request_", "field"),
    [(_with(EmailKind.PAYMENT_RECEIVED, to_email="not-an-address"), "content.to.email"),
     (_with(EmailKind.PAYMENT_RECEIVED, to_email=""), "content.to.email"),
     (_with(EmailKind.PAYMENT_RECEIVED, to_email="a@b.com\r\nBcc: x@evil.com"), "content.to.email"),
     (_with(EmailKind.PAYMENT_RECEIVED, to_name="Asha\r\nBcc: x@evil.com"), "content.to.name"),
     (_with(EmailKind.PAYMENT_RECEIVED, tenant_name="Shree\nSubject: hi"), "content.tenant_name"),
     (_with(EmailKind.TICKET_CREATED, data={"subject": "Help\r\nBcc: x@evil.com"}), "content.ticket_created.subject"),
     (_with(EmailKind.PAYMENT_RECEIVED, tenant_id=""), "content.tenant_id"),
     (_with(EmailKind.PAYMENT_RECEIVED, data={"amount": None}), "content.payment_received.amount"),
     (_with(EmailKind.PAYMENT_RECEIVED, data={"amount": Money(-1, "USD")}), "content.payment_received.amount"),
     (_with(EmailKind.PAYMENT_RECEIVED, data={"amount": Money(1, "usdollar")}), "content.payment_received.amount"),
     (_with(EmailKind.PAYMENT_RECEIVED, data={"receipt_url": "javascript:alert(1)"}),
      "content.payment_received.receipt_url"),
     (_with(EmailKind.INVOICE_GENERATED, data={"due_date": None}), "content.invoice_generated.due_date")],
)
def test_invalid_requests_name_the_field(request_, field):
    with pytest.raises(InvalidEmailRequest) as error:
        validate(request_)
    assert error.value.field == field


def test_valid_request_is_normalised():
    request = _with(EmailKind.PAYMENT_RECEIVED, to_email="Asha@Example.COM")
    assert validate(request).to_email == "Asha@example.com"
    assert sample(EmailKind.PAYMENT_RECEIVED).content.payment_date.tzinfo is UTC
