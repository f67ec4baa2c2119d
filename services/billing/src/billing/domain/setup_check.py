"""Whether a provider's webhook set-up sends billing what it needs: which event types are missing (and
what their absence costs), which are sent but ignored, and which API version the endpoint is pinned to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billing.domain.providers import razorpay_events, stripe_events

# What is lost when Stripe does not send a type; the other types only make a state show later than it could.
STRIPE_LOSSES = {
    "charge.succeeded": "receipts lose their receipt link (they wait a minute, then go without it)",
    "payment_intent.succeeded": "one-off payments are recorded only from their charges",
    "payment_intent.payment_failed": "failed payments send no email",
    "invoice.payment_failed": "failed renewals send no email and show no page to pay again",
    "invoice_payment.paid": "from API version 2025-03-31, subscription payments stay recorded twice",
    "refund.updated": "refunds that fail later are not seen: the payment stays counted as refunded",
    "refund.failed": "a failed refund is not told to the customer",
    "customer.subscription.deleted": "cancellations are not recorded or told",
    "customer.subscription.trial_will_end": "no trial-ending emails",
}
STRIPE_NEEDED = tuple(sorted(stripe_events.HANDLERS))
RAZORPAY_CHECKLIST = tuple(sorted(razorpay_events.HANDLED_TYPES))


@dataclass(frozen=True)
class EndpointReport:
    url: str
    endpoint_id: str | None  # None: no endpoint sends to the URL
    enabled: bool
    api_version: str | None
    missing: tuple[tuple[str, str | None], ...]  # (type, what its absence costs, if anything is lost)
    ignored: tuple[str, ...]  # sent, but billing does not act on them

    @property
    def complete(self) -> bool:
        return self.endpoint_id is not None and self.enabled and not self.missing


def check_stripe_endpoint(endpoints: list[dict[str, Any]], url: str) -> EndpointReport:
    """The endpoint among Stripe's that sends to `url` (the enabled one, if several), and what it lacks."""
    found = sorted((e for e in endpoints if e.get("url") == url), key=lambda e: e.get("status") != "enabled")
    if not found:
        return EndpointReport(url, None, False, None, tuple((t, STRIPE_LOSSES.get(t)) for t in STRIPE_NEEDED), ())
    endpoint = found[0]
    sent = set(endpoint.get("enabled_events") or ())
    if "*" in sent:
        sent = set(STRIPE_NEEDED)
    return EndpointReport(
        url, endpoint["id"], endpoint.get("status") == "enabled", endpoint.get("api_version"),
        tuple((t, STRIPE_LOSSES.get(t)) for t in STRIPE_NEEDED if t not in sent),
        tuple(sorted(sent - set(STRIPE_NEEDED))))
