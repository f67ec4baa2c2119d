"""Which changes a customer hears about, decided from a row before and after one event.

Each email has an idempotency key derived from what it reports (the payment and the email kind), so
duplicate or re-ordered events never produce a second email: the outbox keeps one row per key, and the
notifier sends one email per key.
- payment received: the first time a payment is known paid;
- payment failed: a transition into failed that the payment did not already pass (a late failure
  after a success sends nothing), and a failure over RETRY_GAP after the one recorded (a retry); it
  links the invoice's page when the payment is a Stripe invoice's;
- payment refunded: each new cumulative refunded amount (a refund that failed lowers it, and a later
  refund that raises it again is emailed);
- payment needs the customer: once per attempt that waits on them with a page to act on (an invoice to
  authenticate, a bank transfer to make, a voucher to pay), not once the payment has gone on;
- refund failed: once per refund that failed (the customer has to be refunded another way);
- subscription activated: the first activation only, not renewals; with the price of each period where
  one fixed price states it;
- subscription cancelled: once, when the customer asks (effective at the period's end) or, if it ends
  at once, when it ends (and the email says it has ended);
- trial ending: once per trial end, when the provider gives notice of it (Stripe, three days before),
  the subscription is still in its trial and the trial has not ended by the time the notice is received.
A Stripe receipt waits up to RECEIPT_LINK_WAIT for the payment's receipt link, which comes on the charge's
own event (charge.succeeded), in either order with the payment intent's: the charge's event adds the link
to the waiting email and sends it at once (an EmailAmendment).
An email needs the customer's address and tenant, which may come on another event than the change
(a payment intent without receipt_email, then its charge; a subscription, then its checkout): whichever
of the two comes last asks for it, unless the address comes over a day after the change (stale news).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from billing.domain.email_contents import (
    EmailContent,
    Money,
    PaymentActionRequired,
    PaymentFailed,
    PaymentReceived,
    PaymentRefunded,
    PaymentRefundFailed,
    SubscriptionActivated,
    SubscriptionCancelled,
    SubscriptionTrialEnding,
)
from billing.domain.model import Provider, Refund, RefundState, SubStatus, Subscription, Transaction, TxnStatus

DEFAULT_TENANT_NAME = "BoxCostPro"


@dataclass(frozen=True)
class EmailIntent:
    """An email to ask the notifier for, and how long it waits in the outbox before it is sent."""

    idempotency_key: str
    tenant_id: str
    user_id: str
    to_email: str
    to_name: str
    content: EmailContent
    tenant_name: str = DEFAULT_TENANT_NAME
    request_id: str = ""
    hold: timedelta = timedelta(0)
    plan_ref: str = ""  # the subscription's plan in the catalog, whose name the email takes when handed over
    locale: str = ""  # the customer's language; empty: the tenant's

    @property
    def kind(self) -> str:
        return self.content.kind

    def amended(self, amendment: EmailAmendment) -> EmailIntent:
        """This email with the amendment's link, due at once."""
        return replace(self, content=self.content.amended(amendment.field, amendment.value), hold=timedelta(0))


@dataclass(frozen=True)
class EmailAmendment:
    """What came later for an email asked for already (its receipt link, the card that paid): added to it
    while it waits unsent, and it is then sent at once. An email sent already stays as it was."""

    idempotency_key: str
    kind: str  # the email's
    field: str
    value: str


def fold_amendments(intents: list[EmailIntent], amendments: list[EmailAmendment],
                    ) -> tuple[list[EmailIntent], list[EmailAmendment]]:
    """Amendments of emails asked for in the same batch go into those emails; the rest are for emails
    asked for before."""
    if not amendments:
        return intents, amendments
    position = {intent.idempotency_key: i for i, intent in enumerate(intents)}
    folded, rest = list(intents), []
    for amendment in amendments:
        i = position.get(amendment.idempotency_key)
        if i is None:
            rest.append(amendment)
        else:
            folded[i] = folded[i].amended(amendment)
    return folded, rest


def _money(amount: int | None, currency: str | None) -> Money | None:
    if amount is None or currency is None:
        return None
    return Money(amount, currency)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _intent(row: Transaction | Subscription, key: str, content: EmailContent, request_id: str) -> EmailIntent | None:
    if not row.customer_email or not row.tenant_id:
        return None  # no one to write to, or no tenant to write as
    return EmailIntent(key, row.tenant_id, row.user_id or "", row.customer_email, row.customer_name or "",
                       content, request_id=request_id, locale=row.customer_locale or "",
                       plan_ref=plan_ref(row) if isinstance(row, Subscription) else "")


_Row = Transaction | Subscription


def _reachable(row: _Row) -> bool:
    return bool(row.customer_email and row.tenant_id)


# An address that comes later than the change it is about still brings that change's email, if the event
# that brings it was made within this time of the change (by the events' own times, not their arrival).
# Later than that, the email would be stale news: a receipt or an activation months afterwards.
LATE_ADDRESS_WINDOW = timedelta(days=1)


def _newly(before: _Row | None, after: _Row, holds: Callable[[Any], bool], at: datetime,
           since: Callable[[Any], datetime | None]) -> bool:
    """`holds` is true of the row and its customer can be written to, for the first time. The address
    may come on another event than the change, in either order: whichever comes last brings the email,
    unless the change (which began at `since`) is older than LATE_ADDRESS_WINDOW at the event time `at`."""
    if not (holds(after) and _reachable(after)):
        return False
    if before is None or not holds(before):
        return True
    if _reachable(before):
        return False  # asked for already
    return _recent(since(before), at)


def _recent(started: datetime | None, at: datetime) -> bool:
    return started is None or at - started <= LATE_ADDRESS_WINDOW


def _paid(row: Transaction) -> bool:
    return row.paid_at is not None


# Stripe's charge events come within seconds of the payment intent's, and retried ones within minutes: long
# enough to catch nearly every link, short enough that a receipt is still news.
RECEIPT_LINK_WAIT = timedelta(seconds=60)


def _receipt_link_to_come(row: Transaction) -> bool:
    """A Stripe payment intent's receipt link is on its charge, whose event has not come yet. An invoice's
    page serves as its receipt; Razorpay has no receipt links."""
    return (row.provider is Provider.STRIPE and row.stripe_payment_intent_id is not None
            and not row.receipt_url and not row.invoice_url)


def _receipt_key(row: Transaction) -> str:
    return f"txn:{row.id}:payment_received"


def link_amendments(before: Transaction | None, after: Transaction) -> list[EmailAmendment]:
    """Links that came after the email that needs them was asked for: the receipt's link, and the page
    where a failed payment is paid again (a Razorpay subscription's, known from its event)."""
    if before is None:
        return []
    amendments = []
    if _paid(before) and _reachable(before) and not before.receipt_url and after.receipt_url:
        amendments.append(EmailAmendment(_receipt_key(after), PaymentReceived.kind, "receipt_url", after.receipt_url))
        # The charge that brings the link names the card too; the intent before it named the type only.
        method = _method_name(after.payment_method, after.payment_method_detail)
        if method and method != _method_name(before.payment_method, before.payment_method_detail):
            amendments.append(EmailAmendment(_receipt_key(after), PaymentReceived.kind, "payment_method", method))
    if (_failed(before) and _reachable(before) and not before.invoice_url and after.invoice_url
            and after.failed_at == before.failed_at):
        amendments.append(EmailAmendment(_failure_key(after), PaymentFailed.kind, "retry_url", after.invoice_url))
    return amendments


def _awaits_customer(row: Transaction) -> bool:
    """The payment waits on its customer, on a page of the provider's. Once it has gone on (paid, failed,
    cancelled), a request to act that arrives late is stale and tells nothing."""
    return row.status is TxnStatus.REQUIRES_ACTION and row.action_url is not None


def _asked_again(before: Transaction | None, after: Transaction) -> bool:
    """Another attempt (a renewal retried days later) that waits on the customer, with no outcome between."""
    return (before is not None and _awaits_customer(before) and _awaits_customer(after) and _reachable(after)
            and before.action_requested_at is not None and after.action_requested_at is not None
            and after.action_requested_at - before.action_requested_at > RETRY_GAP)


def _failure_key(row: Transaction) -> str:
    return f"txn:{row.id}:payment_failed:{_iso(row.failed_at)}"


def _failed(row: Transaction) -> bool:
    return row.status is TxnStatus.FAILED


# Stripe retries a subscription's failed payment days apart, and each retry is reported failed with no
# attempt in progress between; the several reports of one attempt (invoice, intent, charge) come seconds
# apart. A failure this long after the one recorded is another attempt, and the customer hears of it.
RETRY_GAP = timedelta(hours=1)


def _failed_again(before: Transaction | None, after: Transaction) -> bool:
    return (before is not None and _failed(before) and _failed(after) and _reachable(after)
            and before.failed_at is not None and after.failed_at is not None
            and after.failed_at - before.failed_at > RETRY_GAP)


# The providers' names of payment methods (Stripe's payment method types, Razorpay's methods), as a
# customer reads them; one not listed is shown with its underscores as spaces, capitalised.
_METHOD_NAMES = {
    "card": "Card", "link": "Link", "paypal": "PayPal", "klarna": "Klarna", "affirm": "Affirm",
    "afterpay_clearpay": "Afterpay", "us_bank_account": "US bank account", "sepa_debit": "SEPA Direct Debit",
    "bacs_debit": "Bacs Direct Debit", "au_becs_debit": "BECS Direct Debit", "acss_debit": "Pre-authorized debit",
    "ideal": "iDEAL", "bancontact": "Bancontact", "sofort": "Sofort", "giropay": "giropay", "eps": "EPS",
    "p24": "Przelewy24", "customer_balance": "Bank transfer", "upi": "UPI", "netbanking": "Net banking",
    "wallet": "Wallet", "emi": "EMI", "cardless_emi": "Cardless EMI", "paylater": "Pay later",
    "bank_transfer": "Bank transfer", "nach": "NACH", "emandate": "e-mandate",
}


# Card brands as Stripe and Razorpay spell them, as their holders read them.
_BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "American Express", "american express": "American Express",
           "rupay": "RuPay", "discover": "Discover", "diners": "Diners Club", "diners club": "Diners Club",
           "jcb": "JCB", "unionpay": "UnionPay", "maestro": "Maestro", "cartes_bancaires": "Cartes Bancaires"}


def _method_name(method: str | None, detail: str | None = None) -> str | None:
    """"Visa •••• 4242", "Net banking (HDFC)", "UPI": the method as the customer knows it."""
    if not method:
        return None
    name = _METHOD_NAMES.get(method) or method.replace("_", " ").capitalize()
    if not detail:
        return name
    brand, _, last4 = detail.rpartition(" ")
    if method == "card" and brand and len(last4) == 4 and last4.isdigit():
        return f"{_BRANDS.get(brand, brand.title())} •••• {last4}"
    return f"{name} ({detail})"


def payment_emails(before: Transaction | None, after: Transaction, at: datetime,
                   request_id: str = "") -> list[EmailIntent]:
    """The emails a change of a payment calls for, from an event made at `at` with `request_id`."""
    intents: list[EmailIntent | None] = []
    money = _money(after.amount, after.currency)
    if _newly(before, after, _paid, at, since=lambda row: row.paid_at):
        receipt = _intent(after, _receipt_key(after), PaymentReceived(
            transaction_id=after.id, amount=money, payment_method=_method_name(after.payment_method, after.payment_method_detail),
            payment_date=after.paid_at, receipt_url=after.receipt_url or after.invoice_url), request_id)
        if receipt is not None and _receipt_link_to_come(after):
            receipt = replace(receipt, hold=RECEIPT_LINK_WAIT)
        intents.append(receipt)
    if _newly(before, after, _failed, at, since=lambda row: row.failed_at) or _failed_again(before, after):
        # A Stripe invoice's page is where its customer pays another way, or authenticates (3-D Secure).
        intents.append(_intent(after, _failure_key(after), PaymentFailed(
            amount=money, reason=after.failure_message, retry_url=after.invoice_url), request_id))
    if (_newly(before, after, _awaits_customer, at, since=lambda row: row.action_requested_at)
            or _asked_again(before, after)):
        intents.append(_intent(after, f"txn:{after.id}:payment_action_required:{_iso(after.action_requested_at)}",
                               PaymentActionRequired(amount=money, action_url=after.action_url or "",
                                                     instructions=after.action_instructions), request_id))
    refunded_before = before.amount_refunded if before is not None else 0
    late_address = (before is not None and refunded_before > 0 and not _reachable(before)
                    and _recent(before.refunded_at, at))
    if _reachable(after) and (after.amount_refunded > refunded_before or late_address):
        intents.append(_intent(after, _refund_key(after), PaymentRefunded(
            transaction_id=after.id, refunded=_money(after.amount_refunded, after.currency), original=money,
            full=after.amount is not None and after.amount_refunded >= after.amount), request_id))
    for refund in after.refunds:
        # A refund's failure has no time of its own here, and is news whenever the customer can be emailed.
        if _told_of_failure(refund) and _newly(before, after, lambda row, r=refund.id: _failed_refund(row, r),
                                                         at, since=lambda row: None):
            intents.append(_intent(after, f"txn:{after.id}:refund_failed:{refund.id}", PaymentRefundFailed(
                transaction_id=after.id, amount=_money(refund.amount, after.currency),
                reason=_REFUND_FAILURES.get(refund.failure_reason or "")), request_id))
    return [i for i in intents if i is not None]


def trial_ending_emails(after: Subscription, trial_ends: datetime, received_at: datetime,
                        request_id: str = "") -> list[EmailIntent]:
    """The notice that a trial ends at `trial_ends`, for a subscription still in its trial. Nothing when
    the notice is late: the subscription is active or ended already, or the notice was received once the
    trial had ended (recovered days afterwards, before the event that converted it)."""
    if after.status is not SubStatus.TRIALING or trial_ends <= received_at:
        return []
    intent = _intent(after, f"sub:{after.id}:trial_ending:{_iso(trial_ends)}", SubscriptionTrialEnding(
        plan=_plan_name(after), trial_end=trial_ends, price=_money(after.price_amount, after.price_currency)),
        request_id)
    return [intent] if intent else []


def _told_of_failure(refund: Refund) -> bool:
    """A refund that failed on the customer's side, who is still owed the money. Failures the merchant
    caused or chose (Stripe's merchant_request, insufficient_funds in the merchant's balance) are theirs
    to explain, and a refund failed because the customer disputed the charge is settled by the dispute."""
    return refund.state is RefundState.FAILED and refund.failure_reason not in _NOT_TOLD


_NOT_TOLD = ("merchant_request", "insufficient_funds", "charge_for_pending_refund_disputed")


def _failed_refund(row: Transaction, refund_id: str) -> bool:
    return any(r.id == refund_id and r.state is RefundState.FAILED for r in row.refunds)


# Stripe's refund failure reasons, in words for the customer (an unknown one is left unsaid).
_REFUND_FAILURES = {
    "expired_or_canceled_card": "the card has expired or was cancelled",
    "lost_or_stolen_card": "the card was reported lost or stolen",
    "declined": "your bank declined it",
}


def _refund_key(row: Transaction) -> str:
    """One refund email per total refunded; after a refund failed, the same total reached again by a new
    refund is news again, so the refunds that failed are part of the key."""
    undone = sum(1 for r in row.refunds if r.undone)
    return f"txn:{row.id}:payment_refunded:{row.amount_refunded}" + (f":after:{undone}" if undone else "")


_LIVE = (SubStatus.ACTIVE, SubStatus.TRIALING)

# A plan with no name of the merchant's (Stripe's lookup key or nickname) is known by the provider's id of
# it: a Stripe price_… or Razorpay plan_… id means nothing to a customer, so the email names no plan.
_PROVIDER_PLAN_ID = re.compile(r"(?:price|plan)_[A-Za-z0-9]{14,}")


def _plan_name(row: Subscription) -> str | None:
    """The plan as the event named it to customers, or None: a Stripe price's nickname (its lookup key is
    a key for code, such as pro_monthly); a Razorpay subscription's events carry no name. The plan
    catalog's name, where it has one, takes its place when the email is handed over."""
    if row.plan_id is not None:
        return row.plan_nickname
    # A row from before plan ids were kept: its plan, unless that is the provider's id.
    plan = row.plan
    if plan is None or row.provider is Provider.RAZORPAY or _PROVIDER_PLAN_ID.fullmatch(plan):
        return None
    return plan


def plan_ref(row: Subscription) -> str:
    """The catalog's key of the row's plan ("stripe:price_…"); empty when the provider named none."""
    return f"{row.provider.value}:{row.plan_id}" if row.plan_id else ""


def _live(row: Subscription) -> bool:
    return row.status in _LIVE


def _cancelled(row: Subscription) -> bool:
    """Cancelled, or a cancellation asked for (at the period's end): the customer hears when they ask."""
    return row.status is SubStatus.CANCELLED or row.cancel_at is not None


def subscription_emails(before: Subscription | None, after: Subscription, at: datetime,
                        request_id: str = "", received_at: datetime | None = None) -> list[EmailIntent]:
    intents: list[EmailIntent | None] = []
    # The trial notice goes when it comes, or when the address or tenant comes after it.
    if after.trial_ends and (before is None or before.trial_ends != after.trial_ends or not _reachable(before)):
        intents.extend(trial_ending_emails(after, after.trial_ends, received_at or at, request_id))
    # status_at is the newest snapshot's time: a renewal months later makes an activation stale news.
    if _newly(before, after, _live, at, since=lambda row: row.status_at):
        intents.append(_intent(after, f"sub:{after.id}:activated", SubscriptionActivated(
            plan=_plan_name(after), price=_money(after.price_amount, after.price_currency),
            next_billing_date=after.current_period_end), request_id))
    if _newly(before, after, _cancelled, at, since=lambda row: row.cancelled_at or row.status_at):
        intents.append(_intent(after, f"sub:{after.id}:cancelled", SubscriptionCancelled(
            plan=_plan_name(after),
            effective_date=after.cancel_at or after.cancelled_at or after.current_period_end or after.status_at,
            ended=after.status is SubStatus.CANCELLED), request_id))
    return [i for i in intents if i is not None]
