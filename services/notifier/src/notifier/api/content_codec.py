"""An email's content from its proto message: one decoder per kind, field by field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from boxcost.notifier.v1 import notifier_pb2 as pb
from servicekit.timestamps import field_datetime

from notifier.domain import contents as c
from notifier.domain.contents import InvalidEmailRequest, Money
from notifier.domain.model import Branding, EmailRequest


def _money(message: Any, name: str) -> Money | None:
    if not message.HasField(name):
        return None
    value = getattr(message, name)
    return Money(value.amount_minor, value.currency.upper())


def _date(message: Any, name: str, kind: str) -> datetime | None:
    try:
        return field_datetime(message, name)
    except ValueError:
        raise InvalidEmailRequest(f"content.{kind}.{name}", "is not a valid timestamp") from None


def _quote_created(m: pb.QuoteCreated) -> c.QuoteCreated:
    return c.QuoteCreated(quote_number=m.quote_number, total=_money(m, "total"), view_url=m.view_url,
                          valid_until=_date(m, "valid_until", "quote_created"))


def _invoice_generated(m: pb.InvoiceGenerated) -> c.InvoiceGenerated:
    return c.InvoiceGenerated(invoice_number=m.invoice_number, amount=_money(m, "amount"),
                              due_date=_date(m, "due_date", "invoice_generated"), pay_url=m.pay_url)


def _payment_received(m: pb.PaymentReceived) -> c.PaymentReceived:
    return c.PaymentReceived(transaction_id=m.transaction_id, amount=_money(m, "amount"),
                             payment_method=m.payment_method, receipt_url=m.receipt_url,
                             payment_date=_date(m, "payment_date", "payment_received"))


def _payment_failed(m: pb.PaymentFailed) -> c.PaymentFailed:
    return c.PaymentFailed(amount=_money(m, "amount"), reason=m.reason, retry_url=m.retry_url)


def _payment_action_required(m: pb.PaymentActionRequired) -> c.PaymentActionRequired:
    return c.PaymentActionRequired(amount=_money(m, "amount"), action_url=m.action_url, instructions=m.instructions)


def _payment_refunded(m: pb.PaymentRefunded) -> c.PaymentRefunded:
    return c.PaymentRefunded(transaction_id=m.transaction_id, refunded=_money(m, "refunded"),
                             original=_money(m, "original"), full=m.full)


def _payment_refund_failed(m: pb.PaymentRefundFailed) -> c.PaymentRefundFailed:
    return c.PaymentRefundFailed(transaction_id=m.transaction_id, amount=_money(m, "amount"), reason=m.reason)


def _ticket_created(m: pb.TicketCreated) -> c.TicketCreated:
    return c.TicketCreated(ticket_number=m.ticket_number, subject=m.subject, ticket_url=m.ticket_url)


def _ticket_updated(m: pb.TicketUpdated) -> c.TicketUpdated:
    return c.TicketUpdated(ticket_number=m.ticket_number, subject=m.subject, old_status=m.old_status,
                           new_status=m.new_status, ticket_url=m.ticket_url)


def _subscription_activated(m: pb.SubscriptionActivated) -> c.SubscriptionActivated:
    return c.SubscriptionActivated(plan=m.plan, price=_money(m, "price"),
                                   next_billing_date=_date(m, "next_billing_date", "subscription_activated"))


def _subscription_cancelled(m: pb.SubscriptionCancelled) -> c.SubscriptionCancelled:
    return c.SubscriptionCancelled(plan=m.plan, effective_date=_date(m, "effective_date", "subscription_cancelled"),
                                   reactivation_url=m.reactivation_url, ended=m.ended)


def _subscription_trial_ending(m: pb.SubscriptionTrialEnding) -> c.SubscriptionTrialEnding:
    return c.SubscriptionTrialEnding(plan=m.plan, trial_end=_date(m, "trial_end", "subscription_trial_ending"),
                                     price=_money(m, "price"))


_DECODERS: dict[str, Callable[[Any], c.EmailContent]] = {
    "quote_created": _quote_created,
    "invoice_generated": _invoice_generated,
    "payment_received": _payment_received,
    "payment_failed": _payment_failed,
    "payment_action_required": _payment_action_required,
    "payment_refunded": _payment_refunded,
    "payment_refund_failed": _payment_refund_failed,
    "ticket_created": _ticket_created,
    "ticket_updated": _ticket_updated,
    "subscription_activated": _subscription_activated,
    "subscription_cancelled": _subscription_cancelled,
    "subscription_trial_ending": _subscription_trial_ending,
}


def decode_content(content: pb.EmailContent) -> EmailRequest:
    kind = content.WhichOneof("kind")
    if kind is None:
        raise InvalidEmailRequest("content.kind", "one email kind is required")
    b = content.branding
    return EmailRequest(tenant_id=content.tenant_id, user_id=content.user_id, to_email=content.to.email,
                        to_name=content.to.name, tenant_name=content.tenant_name,
                        content=_DECODERS[kind](getattr(content, kind)),
                        branding=Branding(reply_to=b.reply_to, support_email=b.support_email,
                                          support_url=b.support_url, brand_color=b.brand_color, logo_url=b.logo_url),
                        locale=content.locale, time_zone=content.time_zone)
