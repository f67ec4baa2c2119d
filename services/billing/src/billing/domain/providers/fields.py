"""Reading typed fields out of a provider's JSON, with errors that say which field is wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from babel import Locale, UnknownLocaleError

from billing.domain.model import Owner

MAX_ID_LENGTH = 255


class InvalidEvent(ValueError):
    """The event is authentic but its content is not what the provider documents."""


T = TypeVar("T")


def known(meanings: Mapping[str, T], word: str, what: str) -> T:
    """What a provider's status word means here. A word not known (one the provider added) makes the event
    invalid: it is kept failed, for operators to see, rather than read as something else."""
    try:
        return meanings[word]
    except KeyError:
        raise InvalidEvent(f"unknown {what} {word!r}") from None


def obj(parent: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    value = parent.get(key)
    if isinstance(value, dict):
        return value
    if value is None and not required:
        return {}
    raise InvalidEvent(f"{key} must be an object")


# Links and messages, which may be longer than any id.
_LONG_TEXT = frozenset({"receipt_url", "hosted_invoice_url", "hosted_instructions_url", "hosted_verification_url",
                        "hosted_voucher_url", "failure_message", "description", "error_description", "message"})


def text(parent: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = parent.get(key)
    if value is None or value == "":
        if required:
            raise InvalidEvent(f"{key} is required")
        return None
    if isinstance(value, dict):
        # An expanded reference: Stripe sends the object in place of its id when asked to.
        value = value.get("id")
    if not isinstance(value, str):
        raise InvalidEvent(f"{key} must be a string")
    if len(value) > MAX_ID_LENGTH and key not in _LONG_TEXT:
        raise InvalidEvent(f"{key} is too long")
    return value


def amount(parent: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise InvalidEvent(f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(f"{key} must be a non-negative integer in minor units")
    return value


def currency(parent: dict[str, Any], key: str = "currency", *, required: bool = False) -> str | None:
    """An ISO-4217 code, upper case. Required where the event states an amount: money without its
    currency is not a record finance can use."""
    value = text(parent, key)
    if value is None:
        if required:
            raise InvalidEvent(f"{key} is required with an amount")
        return None
    if len(value) != 3 or not value.isalpha():
        raise InvalidEvent(f"{key} must be an ISO-4217 code")
    return value.upper()


def timestamp(parent: dict[str, Any], key: str, *, required: bool = False) -> datetime | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise InvalidEvent(f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidEvent(f"{key} must be a unix timestamp")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidEvent(f"{key} is out of range") from None


def owner(*sources: Any) -> Owner | None:
    """The tenant and user named in Stripe `metadata` / Razorpay `notes`, first source that has one.

    Razorpay sends empty notes as `[]`; ids may be numbers or strings.
    """
    for source in sources:
        if not isinstance(source, dict):
            continue
        tenant = _id_value(source.get("tenant_id"), "tenant_id")
        if tenant:
            return Owner(tenant_id=tenant, user_id=_id_value(source.get("user_id"), "user_id"),
                         locale=locale(source.get("locale")))
    return None


def locale(value: Any) -> str | None:
    """A customer's language as the platform's metadata or a checkout names it (hi-IN, en): the tag, when
    it is a locale CLDR knows. Anything else is left out, never failing the event: the email is then in
    the tenant's language."""
    if not isinstance(value, str) or not 2 <= len(value) <= 35:
        return None
    try:
        Locale.parse(value.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return None
    return value


def _id_value(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidEvent(f"{key} must be a string or integer")
    value = str(value)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{key} is too long")
    return value


_LAST4 = re.compile(r"[0-9]{4}")


def method_detail(brand: Any, last4: Any, name: Any = None) -> str | None:
    """What a customer knows a payment method by: a card's brand and last four digits ("visa 4242"), else a
    bank's or wallet's name. A card end that is not exactly four digits is not kept."""
    if isinstance(brand, str) and brand.strip() and isinstance(last4, str) and _LAST4.fullmatch(last4):
        return f"{brand.strip().lower()[:40]} {last4}"
    if isinstance(name, str) and name.strip():
        return name.strip()[:80]
    return None
