"""Rendering emails from Jinja2 templates: HTML (CSS inlined for mail clients) and plain text, in the
request's locale.

Autoescaping is on for HTML, and an undefined variable is an error, not an empty string. Text goes through
gettext (Jinja2's i18n extension): a translation is HTML its translator wrote, the values put into it are
escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import css_inline
import iso4217
from babel.dates import format_date
from babel.numbers import format_currency, get_currency_precision
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup

from notifier.domain.contents import EmailKind, Money
from notifier.domain.locales import DEFAULT_LOCALE, Catalogs
from notifier.domain.model import EmailRequest, RenderedEmail

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
BRAND_COLOUR = "#8a5a2b"  # a tenant without a colour of its own gets BoxCostPro's
PLATFORM = "BoxCostPro"  # whose service sends every tenant's emails; a tenant of that name is the platform itself

# Subjects are Jinja2 too, their text in the message catalogs like the templates'.
SUBJECTS: dict[EmailKind, str] = {
    EmailKind.QUOTE_CREATED: '{{ _("Your quote %(number)s from %(tenant)s", number=quote_number, tenant=tenant_name) }}',
    EmailKind.INVOICE_GENERATED: '{{ _("Invoice %(number)s from %(tenant)s: %(amount)s due", number=invoice_number, '
                                 'tenant=tenant_name, amount=amount|money) }}',
    EmailKind.PAYMENT_RECEIVED: '{{ _("Payment received: %(amount)s", amount=amount|money) }}',
    EmailKind.PAYMENT_FAILED: '{{ _("Your payment of %(amount)s did not go through", amount=amount|money) }}',
    EmailKind.PAYMENT_ACTION_REQUIRED: '{{ _("Your payment of %(amount)s needs one more step from you", '
                                       'amount=amount|money) }}',
    EmailKind.PAYMENT_REFUNDED: '{{ _("Refund of %(amount)s issued", amount=refunded|money) if full else '
                                '_("Partial refund of %(amount)s issued", amount=refunded|money) }}',
    EmailKind.TICKET_CREATED: '{{ _("Ticket %(number)s received: %(subject)s", number=ticket_number, subject=subject) }}',
    EmailKind.TICKET_UPDATED: '{{ _("Ticket %(number)s is now %(status)s", number=ticket_number, status=new_status) }}',
    EmailKind.SUBSCRIPTION_ACTIVATED: '{{ _("Your %(plan)s subscription is active", plan=plan) if plan else '
                                      '_("Your subscription is active") }}',
    EmailKind.SUBSCRIPTION_CANCELLED: '{{ _("Your %(plan)s subscription has been cancelled", plan=plan) if plan else '
                                      '_("Your subscription has been cancelled") }}',
    EmailKind.PAYMENT_REFUND_FAILED: '{{ _("Your refund of %(amount)s could not be completed", amount=amount|money) }}',
    EmailKind.SUBSCRIPTION_TRIAL_ENDING: '{{ _("Your %(plan)s trial ends on %(date)s", plan=plan, date=trial_end|date) '
                                         'if plan else _("Your trial ends on %(date)s", date=trial_end|date) }}',
}


def _exponent(code: str) -> int:
    """Digits of the currency's minor unit, as ISO 4217 sets them (what amount_minor counts). CLDR's own
    digits, which babel formats with, differ for some (HUF, COP and IDR have 2 in ISO 4217, 0 in CLDR)."""
    try:
        exponent = iso4217.Currency(code).exponent
    except ValueError:  # not in ISO 4217's current list: CLDR's digits are the best there is
        return get_currency_precision(code)
    return exponent or 0


@lru_cache(maxsize=4096)
def money(value: Money, locale: str = DEFAULT_LOCALE) -> str:
    """ISO 4217 minor units to a display amount in the locale's way: USD 4999 -> $49.99, JPY 500 -> ¥500,
    HUF 1000000 -> HUF10,000; INR 24990000 in en-IN -> ₹2,49,900.00 (grouped in lakhs). Shown to CLDR's
    digits for the currency, never rounding a fraction away."""
    amount = Decimal(value.amount_minor).scaleb(-_exponent(value.currency))
    return format_currency(amount, value.currency, locale=locale, decimal_quantization=False)


def date(value: datetime, locale: str = DEFAULT_LOCALE, time_zone: str = "") -> str:
    """March 14, 2026 in English, 14 March 2026 in en-IN, 14 मार्च 2026 in Hindi (CLDR's long form): the
    day it is in the time zone, UTC without one."""
    if time_zone:
        value = value.astimezone(ZoneInfo(time_zone))
    return format_date(value, format="long", locale=locale)


@pass_context
def _in_time_zone(context: Context, value: datetime) -> str:
    return date(value, context["locale"], context["time_zone"])


def _strong(value: object) -> Markup:
    return Markup("<strong>%s</strong>") % value


def _mailto(address: str) -> Markup:
    return Markup('<a href="mailto:%s">%s</a>') % (address, address)


def _link(url: str) -> Markup:
    return Markup('<a href="%s">%s</a>') % (url, url)


def _same(value: object) -> object:
    return value


@dataclass(frozen=True)
class _Environments:
    html: Environment
    plain: Environment
    subjects: dict[EmailKind, Template]


class Renderer:
    """Renders every kind in every locale: the text in the locale's language where a catalog has it (else
    English), money and dates in the locale's way."""

    def __init__(self, templates: Path = TEMPLATES, catalogs: Catalogs | None = None) -> None:
        self._templates = templates
        self._catalogs = catalogs or Catalogs.load()
        self._environments: dict[str, _Environments] = {}
        # Styles go inline for clients that strip <style>; the block stays for the responsive @media rule.
        self._inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)

    def _for(self, locale: str) -> _Environments:
        made = self._environments.get(locale)
        if made is not None:
            return made
        common = dict(loader=FileSystemLoader(self._templates), undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, auto_reload=False,  # templates ship with the code: no stat() per email
                      extensions=["jinja2.ext.i18n"])
        html = Environment(autoescape=select_autoescape(["html"]), **common)
        # Plain text and subjects are not HTML: no escaping, still strict about undefined names.
        plain = Environment(autoescape=False, keep_trailing_newline=True, **common)
        translations = self._catalogs.translations(locale)
        for env, marked in ((html, True), (plain, False)):
            env.install_gettext_translations(translations, newstyle=True)
            env.filters["money"] = lambda value, _l=locale: money(value, _l)
            env.filters["date"] = _in_time_zone
            env.filters["strong"] = _strong if marked else _same
            env.filters["mailto"] = _mailto if marked else _same
            env.filters["link"] = _link if marked else _same
            # Text a sender wrote in English (billing's words for a provider's step), in the catalog's
            # language where it has it: plain text, escaped like any value.
            env.filters["translated"] = translations.gettext
            env.globals["platform"] = PLATFORM
            env.globals["lang"] = locale.replace("_", "-")
        made = _Environments(html, plain, {kind: plain.from_string(source) for kind, source in SUBJECTS.items()})
        self._environments[locale] = made
        return made

    def render(self, request: EmailRequest) -> RenderedEmail:
        locale = self._catalogs.locale_for(request.locale)
        envs = self._for(locale)
        context = {
            **request.content.values(),
            "kind": request.kind.value,
            "tenant_name": request.tenant_name,
            "customer_name": request.to_name,
            "brand_color": request.branding.brand_color or BRAND_COLOUR,
            "logo_url": request.branding.logo_url,
            "support_email": request.branding.support_email,
            "support_url": request.branding.support_url,
            "reply_to": request.branding.reply_to,
            "locale": locale,
            "time_zone": request.time_zone,
        }
        html = envs.html.get_template(f"{request.kind.value}.html").render(context)
        text = envs.plain.get_template(f"{request.kind.value}.txt").render(context)
        subject = envs.subjects[request.kind].render(context)
        return RenderedEmail(subject=subject, html=self._inliner.inline(html), text=text)
