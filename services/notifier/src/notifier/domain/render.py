"""Rendering emails from Jinja2 templates: HTML (CSS inlined for mail clients) and plain text.

Autoescaping is on for HTML, and an undefined variable is an error, not an empty string.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from decimal import Decimal
from pathlib import Path

import css_inline
import iso4217
from babel.numbers import format_currency, get_currency_precision
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from notifier.domain.contents import EmailKind, Money
from notifier.domain.model import EmailRequest, RenderedEmail

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
BRAND_COLOUR = "#8a5a2b"  # a tenant without a colour of its own gets BoxCostPro's
PLATFORM = "BoxCostPro"  # whose service sends every tenant's emails; a tenant of that name is the platform itself

SUBJECTS: dict[EmailKind, str] = {
    EmailKind.QUOTE_CREATED: "Your quote {{ quote_number }} from {{ tenant_name }}",
    EmailKind.INVOICE_GENERATED: "Invoice {{ invoice_number }} from {{ tenant_name }}: {{ amount | money }} due",
    EmailKind.PAYMENT_RECEIVED: "Payment received: {{ amount | money }}",
    EmailKind.PAYMENT_FAILED: "Your payment of {{ amount | money }} did not go through",
    EmailKind.PAYMENT_ACTION_REQUIRED: "Your payment of {{ amount | money }} needs one more step from you",
    EmailKind.PAYMENT_REFUNDED: "{{ 'Refund' if full else 'Partial refund' }} of {{ refunded | money }} issued",
    EmailKind.TICKET_CREATED: "Ticket {{ ticket_number }} received: {{ subject }}",
    EmailKind.TICKET_UPDATED: "Ticket {{ ticket_number }} is now {{ new_status }}",
    EmailKind.SUBSCRIPTION_ACTIVATED: "Your {% if plan %}{{ plan }} {% endif %}subscription is active",
    EmailKind.SUBSCRIPTION_CANCELLED: "Your {% if plan %}{{ plan }} {% endif %}subscription has been cancelled",
    EmailKind.PAYMENT_REFUND_FAILED: "Your refund of {{ amount | money }} could not be completed",
    EmailKind.SUBSCRIPTION_TRIAL_ENDING: "Your {% if plan %}{{ plan }} {% endif %}trial ends on {{ trial_end | date }}",
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
def money(value: Money) -> str:
    """ISO 4217 minor units to a display amount: USD 4999 -> $49.99, INR 125000 -> ₹1,250.00, JPY 500 -> ¥500,
    HUF 1000000 -> HUF10,000. Shown to CLDR's digits for the currency, never rounding a fraction away."""
    amount = Decimal(value.amount_minor).scaleb(-_exponent(value.currency))
    return format_currency(amount, value.currency, locale="en_US", decimal_quantization=False)


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def date(value: datetime) -> str:
    """March 14, 2026 (the emails are in English; strftime's %B would follow the process locale)."""
    return f"{_MONTHS[value.month - 1]} {value.day}, {value.year}"


class Renderer:
    def __init__(self, templates: Path = TEMPLATES) -> None:
        html = Environment(
            loader=FileSystemLoader(templates),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates ship with the code: no stat() of every file per email
        )
        # Plain text and subjects are not HTML: no escaping, still strict about undefined names.
        plain = Environment(loader=FileSystemLoader(templates), autoescape=False, undefined=StrictUndefined,
                            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                            auto_reload=False)
        for env in (html, plain):
            env.filters["money"] = money
            env.filters["date"] = date
            env.globals["platform"] = PLATFORM
        self._html = html
        self._plain = plain
        self._subjects = {kind: plain.from_string(source) for kind, source in SUBJECTS.items()}
        # Styles go inline for clients that strip <style>; the block stays for the responsive @media rule.
        self._inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)

    def render(self, request: EmailRequest) -> RenderedEmail:
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
        }
        html = self._html.get_template(f"{request.kind.value}.html").render(context)
        text = self._plain.get_template(f"{request.kind.value}.txt").render(context)
        subject = self._subjects[request.kind].render(context)
        return RenderedEmail(subject=subject, html=self._inliner.inline(html), text=text)
