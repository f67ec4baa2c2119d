"""Billing's schema migrations (files in services/billing/migrations)."""

from __future__ import annotations

from pathlib import Path

from pgkit.migrations import migrate as _migrate

# The source tree's folder; images put the files elsewhere and say so with MIGRATIONS_DIR.
DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "migrations"


async def migrate(dsn: str, directory: Path = DEFAULT_DIRECTORY) -> list[str]:
    return await _migrate(dsn, "billing", directory)
