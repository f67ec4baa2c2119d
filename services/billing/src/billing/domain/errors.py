"""Why billing's internal API refuses a request: each maps to one gRPC status in api/servicer.py."""

from __future__ import annotations


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(Exception):
    pass


class AlreadyExists(Exception):
    pass


class NotReplayable(Exception):
    """Only failed events are replayed; the others already had their effect."""


class NotAssignable(Exception):
    """A payment that has a tenant is never given another."""
