"""Emails in the customer's language: the catalogs complete, money and dates as the locale writes them."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from babel.messages.pofile import read_po
from billing.domain.providers import stripe_events
from notifier.domain.contents import EmailKind, InvalidEmailRequest, Money
from notifier.domain.locales import CATALOGS, Catalogs, messages
from notifier.domain.model import validate
from notifier.domain.render import SUBJECTS, TEMPLATES, Renderer, money
from notifier.domain.samples import SAMPLE_BRANDING, sample

renderer = Renderer()
# Billing's words for what a provider's page asks of the customer: sent as data, translated by the notifier.
BILLING_TEXTS = {text for _link, text in stripe_events._HOSTED_ACTIONS.values()} | {stripe_events._AUTHENTICATE}


def _placeholders(text: str) -> list[str]:
    return sorted(re.findall(r"%\((\w+)\)s", text))


@pytest.mark.parametrize("po", sorted(CATALOGS.glob("*/LC_MESSAGES/messages.po")), ids=lambda p: p.parent.parent.name)
def test_every_text_of_every_email_has_its_translation_with_the_same_values(po):
    with po.open("rb") as f:
        catalog = read_po(f)
    wanted = set(messages(TEMPLATES, list(SUBJECTS.values()))) | BILLING_TEXTS
    have = {m.id: m for m in catalog if m.id}
    assert sorted(wanted - have.keys()) == [], "texts without a translation: run make messages, then translate"
    assert sorted(have.keys() - wanted) == [], "translations no email uses any more"
    for text, message in have.items():
        assert message.string and not message.fuzzy, text
        assert _placeholders(message.string) == _placeholders(text), text


@pytest.mark.parametrize(("locale", "shown"), [
    ("en-IN", "₹2,49,900.00"), ("hi-IN", "₹2,49,900.00"), ("", "₹249,900.00"), ("en-US", "₹249,900.00")])
def test_rupees_are_grouped_in_lakhs_for_an_indian_locale(locale, shown):
    assert money(Money(24990000, "INR"), Catalogs().locale_for(locale)) == shown


def test_a_hindi_email_is_hindi_throughout_with_indian_money_and_dates():
    request = sample(EmailKind.PAYMENT_FAILED, SAMPLE_BRANDING)
    rendered = renderer.render(validate(replace(request, locale="hi-IN", content=replace(
        request.content, amount=Money(24990000, "INR")))))
    assert rendered.subject == "₹2,49,900.00 का आपका भुगतान नहीं हो सका"
    assert rendered.text.startswith("नमस्ते Asha Rao,\n") and "फिर से प्रयास करें: " in rendered.text
    assert '<html lang="hi-IN">' in rendered.html and "<strong>₹2,49,900.00</strong>" in rendered.html
    trial = renderer.render(validate(replace(sample(EmailKind.SUBSCRIPTION_TRIAL_ENDING), locale="hi-IN")))
    assert trial.subject == "आपका Pro monthly ट्रायल 14 मार्च 2026 को समाप्त होगा"


def test_a_language_without_a_catalog_is_english_with_its_regions_money_and_dates():
    rendered = renderer.render(validate(replace(sample(EmailKind.SUBSCRIPTION_TRIAL_ENDING), locale="ta-IN")))
    assert rendered.subject == "Your Pro monthly trial ends on 14 March 2026"
    assert "₹1,250.00" in rendered.text and '<html lang="en-IN">' in rendered.html


@pytest.mark.parametrize("locale", ["klingon", "en-XX-YY", "hi\r\nBcc: x@y.in", "x" * 40])
def test_a_locale_that_is_not_one_is_refused_naming_the_field(locale):
    with pytest.raises(InvalidEmailRequest) as refused:
        validate(replace(sample(EmailKind.PAYMENT_RECEIVED), locale=locale))
    assert refused.value.field == "content.locale"


def test_words_a_sender_wrote_are_translated_where_known_and_escaped_always():
    request = sample(EmailKind.PAYMENT_ACTION_REQUIRED)
    known = renderer.render(validate(replace(request, locale="hi", content=replace(
        request.content, instructions="Your bank asks you to confirm this payment."))))
    assert "आपका बैंक इस भुगतान की पुष्टि करने के लिए कह रहा है।" in known.text
    hostile = renderer.render(validate(replace(request, locale="hi", content=replace(
        request.content, instructions="<img src=x onerror=alert(1)> Call us"))))
    assert "<img src=x" not in hostile.html and "&lt;img src=x onerror=alert(1)&gt; Call us" in hostile.html


def test_the_digest_of_a_request_in_a_locale_differs_from_the_english_one():
    english = sample(EmailKind.PAYMENT_RECEIVED)
    assert replace(english, locale="hi-IN").fingerprint() != english.fingerprint()


def test_a_date_is_the_day_it_is_where_the_customer_is():
    late = sample(EmailKind.PAYMENT_RECEIVED)
    late = replace(late, content=replace(late.content, payment_date=datetime(2026, 3, 14, 22, 30, tzinfo=UTC)))
    assert "Date: March 14, 2026" in renderer.render(validate(late)).text
    assert "Date: March 15, 2026" in renderer.render(validate(replace(late, time_zone="Asia/Kolkata"))).text
    with pytest.raises(InvalidEmailRequest) as refused:
        validate(replace(late, time_zone="India/Pune"))
    assert refused.value.field == "content.time_zone"
