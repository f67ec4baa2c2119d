"""Billing's emails as the notifier's messages, and as the outbox stores them.

The outbox keeps each email as its serialized EmailContent message. A field that comes later (a receipt's
link) is stored as a message holding only that field, appended to the first: parsing concatenated messages
merges them, the last value of a field winning.
"""

from __future__ import annotations

from datetime import datetime
from functools import singledispatch
from typing import Any

from boxcost.notifier.v1 import notifier_pb2 as pb
from google.protobuf import json_format
from servicekit.timestamps import to_timestamp

from billing.domain import email_contents as c
from billing.domain.notifications import EmailIntent
from billing.domain.tenant_profiles import TenantProfile


def _money(value: c.Money | None) -> pb.Money | None:
    return None if value is None else pb.Money(amount_minor=value.amount_minor, currency=value.currency)


def _time(value: datetime | None):
    return None if value is None else to_timestamp(value)


@singledispatch
def _message(content: Any) -> Any:
    raise TypeError(f"no message for {type(content).__name__}")


@_message.register
def _(content: c.PaymentReceived) -> pb.PaymentReceived:
    return pb.PaymentReceived(transaction_id=content.transaction_id, amount=_money(content.amount),
                              payment_method=content.payment_method, payment_date=_time(content.payment_date),
                              receipt_url=content.receipt_url)


@_message.register
def _(content: c.PaymentActionRequired) -> pb.PaymentActionRequired:
    return pb.PaymentActionRequired(amount=_money(content.amount), action_url=content.action_url,
                                    instructions=content.instructions)


@_message.register
def _(content: c.PaymentFailed) -> pb.PaymentFailed:
    return pb.PaymentFailed(amount=_money(content.amount), reason=content.reason, retry_url=content.retry_url)


@_message.register
def _(content: c.PaymentRefunded) -> pb.PaymentRefunded:
    return pb.PaymentRefunded(transaction_id=content.transaction_id, refunded=_money(content.refunded),
                              original=_money(content.original), full=content.full)


@_message.register
def _(content: c.PaymentRefundFailed) -> pb.PaymentRefundFailed:
    return pb.PaymentRefundFailed(transaction_id=content.transaction_id, amount=_money(content.amount),
                                  reason=content.reason)


@_message.register
def _(content: c.SubscriptionActivated) -> pb.SubscriptionActivated:
    return pb.SubscriptionActivated(plan=content.plan, price=_money(content.price),
                                    next_billing_date=_time(content.next_billing_date))


@_message.register
def _(content: c.SubscriptionCancelled) -> pb.SubscriptionCancelled:
    return pb.SubscriptionCancelled(plan=content.plan, effective_date=_time(content.effective_date),
                                    ended=content.ended)


@_message.register
def _(content: c.SubscriptionTrialEnding) -> pb.SubscriptionTrialEnding:
    return pb.SubscriptionTrialEnding(plan=content.plan, trial_end=_time(content.trial_end),
                                      price=_money(content.price))


def email_content(intent: EmailIntent) -> pb.EmailContent:
    return pb.EmailContent(
        tenant_id=intent.tenant_id, user_id=intent.user_id, tenant_name=intent.tenant_name, locale=intent.locale,
        to=pb.Recipient(email=intent.to_email, name=intent.to_name), **{intent.kind: _message(intent.content)})


def stored(intent: EmailIntent) -> bytes:
    """The email as the outbox stores it."""
    return email_content(intent).SerializeToString()


def appendix(kind: str, field: str, value: str) -> bytes:
    """What to append to a stored email of `kind` to set one of its fields."""
    return pb.EmailContent(**{kind: {field: value}}).SerializeToString()


def _previous_release(kind: str, request: dict[str, Any]) -> dict[str, Any]:
    """Rows written before the outbox kept messages hold JSON: the kind's fields under "data", money as
    minor units and dates as ISO 8601, which protobuf's JSON form accepts."""
    rest = {k: v for k, v in request.items() if k not in ("kind", "data")}
    return {**rest, kind: request["data"]}


def from_stored(kind: str, content: bytes | None, request: dict[str, Any] | None = None) -> pb.EmailContent:
    if content is not None:
        return pb.EmailContent.FromString(content)
    return json_format.ParseDict(_previous_release(kind, request or {"data": {}}), pb.EmailContent())


# Links the tenant's billing portal stands in for when the provider gave none: where to pay again, where
# to take a cancelled subscription up again.
_PORTAL_LINKS = {"payment_failed": "retry_url", "subscription_cancelled": "reactivation_url"}
_NAMES_A_PLAN = ("subscription_activated", "subscription_cancelled", "subscription_trial_ending")


def as_sent(content: pb.EmailContent, profile: TenantProfile | None, plan_name: str = "") -> pb.EmailContent:
    """The email as it goes to the notifier: with the catalog's name of its plan, and as its tenant's
    profile has it (the tenant's name, look, contacts, locale and time zone, and its billing portal where the email
    has no link of its own). With neither, as it is."""
    kind = content.WhichOneof("kind") or ""
    if profile is None and not (plan_name and kind in _NAMES_A_PLAN):
        return content
    sent = pb.EmailContent()
    sent.CopyFrom(content)
    if plan_name and kind in _NAMES_A_PLAN:
        getattr(sent, kind).plan = plan_name
    if profile is None:
        return sent
    sent.tenant_name = profile.display_name
    if not sent.locale:  # the customer's own language, where a provider told it, comes first
        sent.locale = profile.locale
    sent.time_zone = profile.time_zone
    sent.branding.CopyFrom(pb.Branding(
        reply_to=profile.reply_to, support_email=profile.support_email, support_url=profile.support_url,
        brand_color=profile.brand_color, logo_url=profile.logo_url))
    link = _PORTAL_LINKS.get(kind)
    if link and not getattr(getattr(sent, kind), link):
        setattr(getattr(sent, kind), link, profile.portal_url(sent.user_id))
    return sent
