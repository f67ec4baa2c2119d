"""Billing's schema migrations (files in services/billing/migrations)."""

from __future__ import annotations

from pathlib import Path

from pgkit.migrations import migrate as _migrate

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "migrations"


async def migrate(dsn: str, directory: Path = DEFAULT_DIRECTORY) -> list[str]:
    return await _migrate(dsn, "billing", directory)
