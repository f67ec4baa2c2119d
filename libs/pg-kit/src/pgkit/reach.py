"""Connecting to PostgreSQL, with a failure that says which server could not be reached."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit


class DatabaseUnreachable(ConnectionError):
    pass


def server_of(dsn: str) -> str:
    """Where a postgresql:// URL points, host:port/database, without its credentials."""
    try:
        parts = urlsplit(dsn)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
    except ValueError:
        return "the configured database"


@contextmanager
def reaching(dsn: str) -> Iterator[None]:
    """Connection failures below (refused, unknown host, timed out) name the server tried. The driver's own
    errors do not: uvloop's say only "Connection refused"."""
    try:
        yield
    except OSError as exc:
        cause = str(exc) or type(exc).__name__  # a connect timeout says nothing of itself
        raise DatabaseUnreachable(f"cannot reach PostgreSQL at {server_of(dsn)}: {cause}") from exc
