"""Webhook signature verification, on the raw request body, before anything in it is trusted.

Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, each v1 an HMAC-SHA256 keyed with the
endpoint secret (as-is, `whsec_` prefix included) over `"<t>." + body`. Razorpay:
`X-Razorpay-Signature: <hex>`, an HMAC-SHA256 keyed with the webhook secret over the body.
Every configured secret is tried (rotation), each comparison constant-time. A header that is not
printable ASCII, or cannot be parsed, is a failed authentication like a wrong signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


class SignatureError(ValueError):
    """The request is not authentically from the provider (or is too old or too new)."""


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def stripe_signature(secret: str, timestamp: int, body: bytes) -> str:
    return _hmac_hex(secret, str(timestamp).encode() + b"." + body)


def razorpay_signature(secret: str, body: bytes) -> str:
    return _hmac_hex(secret, body)


def _ascii(header: str, name: str) -> bytes:
    """The header's bytes for comparison; signatures are lowercase hex, so anything else cannot match."""
    if not header.isascii() or not header.isprintable():
        raise SignatureError(f"{name} must be printable ASCII")
    return header.encode("ascii")


def _parse_stripe_header(header: str) -> tuple[int, list[bytes]]:
    _ascii(header, "Stripe-Signature")
    timestamp: int | None = None
    signatures: list[bytes] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not value.isdigit() or len(value) > 12:
                raise SignatureError("Stripe-Signature timestamp is malformed")
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value.encode("ascii"))
    if timestamp is None or not signatures:
        raise SignatureError("Stripe-Signature must carry t= and at least one v1=")
    return timestamp, signatures


def verify_stripe(
    header: str | None, body: bytes, secrets: Sequence[str], *, now: float, tolerance: int
) -> int:
    """Checks a Stripe signature; returns its timestamp."""
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp, signatures = _parse_stripe_header(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureError("Stripe-Signature timestamp is outside the tolerance")
    for secret in secrets:
        expected = stripe_signature(secret, timestamp, body).encode("ascii")
        if any(hmac.compare_digest(expected, given) for given in signatures):
            return timestamp
    raise SignatureError("no Stripe-Signature v1 matches a configured secret")


def verify_razorpay(header: str | None, body: bytes, secrets: Sequence[str]) -> None:
    if not header:
        raise SignatureError("missing X-Razorpay-Signature header")
    given = _ascii(header.strip(), "X-Razorpay-Signature")
    if any(hmac.compare_digest(razorpay_signature(secret, body).encode("ascii"), given) for secret in secrets):
        return
    raise SignatureError("X-Razorpay-Signature does not match a configured secret")
