"""Sample content for every email kind: for designers (`python -m notifier render`) and golden-file tests."""

from __future__ import annotations

from datetime import UTC, datetime

from notifier.domain import contents as c
from notifier.domain.contents import EmailKind, Money
from notifier.domain.model import Branding, EmailRequest

_WHEN = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
_TXN = "3f2b8c1e-7d4a-4e8f-9a21-5c6d7e8f9a0b"
_TICKET = "https://app.boxcostpro.com/support/T-314"

_CONTENT: dict[EmailKind, c.EmailContent] = {
    EmailKind.QUOTE_CREATED: c.QuoteCreated(quote_number="Q-2026-0042", total=Money(1875000, "INR"),
                                            view_url="https://app.boxcostpro.com/quotes/Q-2026-0042",
                                            valid_until=_WHEN),
    EmailKind.INVOICE_GENERATED: c.InvoiceGenerated(invoice_number="INV-1001", amount=Money(4999, "USD"),
                                                    due_date=_WHEN,
                                                    pay_url="https://app.boxcostpro.com/invoices/INV-1001/pay"),
    EmailKind.PAYMENT_RECEIVED: c.PaymentReceived(transaction_id=_TXN, amount=Money(4999, "USD"),
                                                  payment_method="card", payment_date=_WHEN,
                                                  receipt_url="https://pay.stripe.com/receipts/payment/ch_sample"),
    EmailKind.PAYMENT_FAILED: c.PaymentFailed(amount=Money(125000, "INR"), reason="Your card has insufficient funds.",
                                              retry_url="https://app.boxcostpro.com/billing/retry"),
    EmailKind.PAYMENT_ACTION_REQUIRED: c.PaymentActionRequired(
        amount=Money(249990000, "INR"), action_url="https://invoice.stripe.com/i/acct_sample/test_sample",
        instructions="Your bank asks you to confirm this payment."),
    EmailKind.PAYMENT_REFUNDED: c.PaymentRefunded(transaction_id=_TXN, refunded=Money(1000, "USD"),
                                                  original=Money(4999, "USD"), full=False),
    EmailKind.TICKET_CREATED: c.TicketCreated(ticket_number="T-314", subject="Flute B quote shows wrong GSM",
                                              ticket_url=_TICKET),
    EmailKind.TICKET_UPDATED: c.TicketUpdated(ticket_number="T-314", subject="Flute B quote shows wrong GSM",
                                              old_status="open", new_status="resolved", ticket_url=_TICKET),
    EmailKind.SUBSCRIPTION_ACTIVATED: c.SubscriptionActivated(plan="Pro monthly", price=Money(500, "JPY"),
                                                              next_billing_date=_WHEN),
    EmailKind.SUBSCRIPTION_CANCELLED: c.SubscriptionCancelled(
        plan="Pro monthly", effective_date=_WHEN, reactivation_url="https://app.boxcostpro.com/billing/reactivate"),
    EmailKind.PAYMENT_REFUND_FAILED: c.PaymentRefundFailed(transaction_id=_TXN, amount=Money(4999, "USD"),
                                                           reason="the card has expired or was cancelled"),
    EmailKind.SUBSCRIPTION_TRIAL_ENDING: c.SubscriptionTrialEnding(plan="Pro monthly", trial_end=_WHEN,
                                                                   price=Money(125000, "INR")),
}


# A tenant's look and contacts, as its profile in billing gives them.
SAMPLE_BRANDING = Branding(reply_to="accounts@shreepackaging.in", support_email="support@shreepackaging.in",
                           support_url="https://shreepackaging.in/help", brand_color="#0f766e",
                           logo_url="https://shreepackaging.in/logo.png")


def sample(kind: EmailKind, branding: Branding = Branding()) -> EmailRequest:
    return EmailRequest(tenant_id="tenant_demo", user_id="user_demo", to_email="asha@example.com",
                        to_name="Asha Rao", tenant_name="Shree Packaging", content=_CONTENT[kind], branding=branding)
