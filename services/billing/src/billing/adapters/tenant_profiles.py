"""Tenant profiles in PostgreSQL: one row per tenant, replaced whole."""

from __future__ import annotations

import asyncpg

from billing.domain.tenant_profiles import TEXT_FIELDS as _FIELDS
from billing.domain.tenant_profiles import TenantProfile

_COLUMNS = ", ".join(("tenant_id", *_FIELDS, "disabled_emails", "updated_at", "updated_by"))

_SAVE = f"""
INSERT INTO billing.tenant_profiles ({_COLUMNS})
VALUES ($1, {", ".join(f"${i}" for i in range(2, len(_FIELDS) + 3))}, now(), ${len(_FIELDS) + 3})
ON CONFLICT (tenant_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in (*_FIELDS, "disabled_emails", "updated_at", "updated_by"))}
RETURNING {_COLUMNS}
"""


def _profile(row: asyncpg.Record) -> TenantProfile:
    return TenantProfile(**{f: row[f] for f in _FIELDS}, disabled_emails=tuple(row["disabled_emails"]),
                         updated_at=row["updated_at"], updated_by=row["updated_by"])


async def save_profile(pool: asyncpg.Pool, tenant_id: str, profile: TenantProfile, updated_by: str) -> TenantProfile:
    row = await pool.fetchrow(_SAVE, tenant_id, *(getattr(profile, f) for f in _FIELDS),
                              list(profile.disabled_emails), updated_by[:255])
    return _profile(row)


async def profiles(pool: asyncpg.Pool, tenant_ids: list[str]) -> dict[str, TenantProfile]:
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM billing.tenant_profiles WHERE tenant_id = ANY($1::text[])",
                            tenant_ids)
    return {r["tenant_id"]: _profile(r) for r in rows}
