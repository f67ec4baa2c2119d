"""The minimum the edge must know of an authenticated event: its id and type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

MAX_ID_LENGTH = 255
_EVENT_ID = re.compile(r"[!-~]+")


class InvalidEvent(ValueError):
    """The authenticated body is not an event of the provider's documented shape."""


@dataclass(frozen=True)
class Envelope:
    event_id: str
    event_type: str


def _load(body: bytes) -> dict[str, Any]:
    try:
        # orjson: strict RFC 8259 (no NaN), valid UTF-8 only, bounded nesting, and several times faster.
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidEvent("body is not JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidEvent("body must be a JSON object")
    if b"\\u0000" in body:
        raise InvalidEvent("body contains a NUL character, which cannot be stored")
    return parsed


def _field(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{name} is too long")
    return value


def _int_field(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(f"{name} must be an integer")


def parse_stripe(body: bytes) -> Envelope:
    event = _load(body)
    event_id = _field(event.get("id"), "id")
    event_type = _field(event.get("type"), "type")
    _int_field(event.get("created"), "created")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise InvalidEvent("data.object must be an object")
    return Envelope(event_id, event_type)


def parse_razorpay(body: bytes, event_id_header: str | None) -> Envelope:
    if not event_id_header:
        raise InvalidEvent("missing X-Razorpay-Event-Id header")
    event_id = _field(event_id_header.strip(), "X-Razorpay-Event-Id")
    if not _EVENT_ID.fullmatch(event_id):  # it is stored, logged and sent on: visible ASCII only
        raise InvalidEvent("X-Razorpay-Event-Id must be visible ASCII characters")
    event = _load(body)
    event_type = _field(event.get("event"), "event")
    _int_field(event.get("created_at"), "created_at")
    if not isinstance(event.get("payload"), dict):
        raise InvalidEvent("payload must be an object")
    return Envelope(event_id, event_type)
