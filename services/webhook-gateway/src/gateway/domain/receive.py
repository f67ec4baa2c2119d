"""Use case: authenticate a provider's webhook and hand it to billing, answering only once committed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol

from gateway.domain.edge import AuthFailureLimiter, IPAddress, Network, SourceNotAllowed, TooManyFailures, check_allowed
from gateway.domain.envelope import Envelope, InvalidEvent, parse_razorpay, parse_stripe
from gateway.domain.signatures import SignatureError, verify_razorpay, verify_stripe

__all__ = ["InvalidEvent", "SignatureError", "SourceNotAllowed", "TooManyFailures"]


class Provider(str, Enum):
    STRIPE = "stripe"
    RAZORPAY = "razorpay"


# The headers kept with each event as evidence: with the body, the signature can be checked again. A
# signature is a MAC of the body, not the secret; no header that carries a secret is ever kept.
_EVIDENCE_HEADERS = {
    Provider.STRIPE: ("Stripe-Signature", "User-Agent", "Content-Type"),
    Provider.RAZORPAY: ("X-Razorpay-Signature", "X-Razorpay-Event-Id", "User-Agent", "Content-Type"),
}
_MAX_HEADER_KEPT = 1024


def evidence_headers(provider: Provider, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name.lower(), _storable(value[:_MAX_HEADER_KEPT])) for name in _EVIDENCE_HEADERS[provider]
                 if (value := headers.get(name)) is not None)


def _storable(value: str) -> str:
    """A header as text any store takes: bytes that are not UTF-8 (which the HTTP server hands over as
    lone surrogates) and NUL become U+FFFD. The headers a signature check reads are ASCII already."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "\ufffd")


@dataclass(frozen=True)
class AuthenticatedEvent:
    provider: Provider
    event_id: str
    event_type: str
    payload: bytes
    received_at: datetime
    request_id: str
    headers: tuple[tuple[str, str], ...] = ()  # evidence_headers(): lower-case names, never a secret
    client_address: str = ""


@dataclass(frozen=True)
class ProcessingResult:
    status: str  # processed | duplicate | ignored | failed
    error: str | None = None
    transaction_ids: tuple[str, ...] = ()
    subscription_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Receipt:
    envelope: Envelope
    result: ProcessingResult


class BillingUnavailable(Exception):
    """Billing did not confirm the event as committed; the provider must retry."""


class BillingPort(Protocol):
    async def ingest(self, event: AuthenticatedEvent) -> ProcessingResult: ...

    async def is_serving(self) -> bool: ...


@dataclass(frozen=True)
class WebhookSecrets:
    stripe: Sequence[str] = field(default_factory=tuple)
    razorpay: Sequence[str] = field(default_factory=tuple)


class ProviderNotConfigured(Exception):
    """No webhook secret is configured for this provider, so nothing from it can be authenticated."""


@dataclass(frozen=True)
class EdgePolicy:
    """Allowed source networks per provider (empty: any), and the limiter of failed authentications."""

    limiter: AuthFailureLimiter
    allowed: Mapping[Provider, Sequence[Network]] = field(default_factory=dict)


class ReceiveWebhook:
    def __init__(
        self,
        billing: BillingPort,
        secrets: WebhookSecrets,
        *,
        tolerance_seconds: int,
        clock: Callable[[], datetime],
        edge: EdgePolicy | None = None,
    ) -> None:
        self._billing = billing
        self._secrets = secrets
        self._tolerance = tolerance_seconds
        self._clock = clock
        self._edge = edge or EdgePolicy(AuthFailureLimiter(per_minute=30, burst=30))

    async def execute(
        self, provider: Provider, headers: Mapping[str, str], body: bytes, request_id: str,
        client: IPAddress | None = None,
    ) -> Receipt:
        now = self._clock()
        check_allowed(client, self._edge.allowed.get(provider, ()))
        try:
            envelope = self._authenticate(provider, headers, body, now)
        except SignatureError:
            # Only failures spend the client's allowance: genuine deliveries are never throttled.
            self._edge.limiter.record_failure(str(client), now.timestamp())
            raise
        result = await self._billing.ingest(
            AuthenticatedEvent(provider, envelope.event_id, envelope.event_type, body, now, request_id,
                               evidence_headers(provider, headers), str(client) if client else "")
        )
        return Receipt(envelope, result)

    def _authenticate(self, provider: Provider, headers: Mapping[str, str], body: bytes, now: datetime) -> Envelope:
        if provider is Provider.STRIPE:
            if not self._secrets.stripe:
                raise ProviderNotConfigured("stripe")
            verify_stripe(
                headers.get("Stripe-Signature"), body, self._secrets.stripe,
                now=now.timestamp(), tolerance=self._tolerance,
            )
            return parse_stripe(body)
        if not self._secrets.razorpay:
            raise ProviderNotConfigured("razorpay")
        verify_razorpay(headers.get("X-Razorpay-Signature"), body, self._secrets.razorpay)
        return parse_razorpay(body, headers.get("X-Razorpay-Event-Id"))
