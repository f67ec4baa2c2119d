"""The plan catalog in PostgreSQL."""

from __future__ import annotations

import asyncpg

from billing.domain.model import Provider
from billing.domain.plans import Plan

_COLUMNS = "provider, plan_id, name, interval, interval_count, amount, currency, source, updated_at, updated_by"

# An operator's entry stays when a provider's is offered: theirs is the name customers are meant to see.
_SAVE = f"""
INSERT INTO billing.plans ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), $9)
ON CONFLICT (provider, plan_id) DO UPDATE SET
    name = EXCLUDED.name, interval = EXCLUDED.interval, interval_count = EXCLUDED.interval_count,
    amount = EXCLUDED.amount, currency = EXCLUDED.currency, source = EXCLUDED.source, updated_at = now(),
    updated_by = EXCLUDED.updated_by
WHERE NOT $10 OR billing.plans.source <> 'operator'
RETURNING {_COLUMNS}
"""


def _plan(row: asyncpg.Record) -> Plan:
    return Plan(Provider(row["provider"]), row["plan_id"], row["name"], row["interval"], row["interval_count"],
                row["amount"], row["currency"], row["source"], row["updated_at"], row["updated_by"])


async def plans(pool: asyncpg.Pool, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Plan]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM billing.plans p JOIN unnest($1::text[], $2::text[]) AS k(provider, plan_id) "
        "USING (provider, plan_id)", [k[0] for k in keys], [k[1] for k in keys])
    return {(r["provider"], r["plan_id"]): _plan(r) for r in rows}


async def save_plan(pool: asyncpg.Pool, plan: Plan, *, keep_operators: bool) -> Plan:
    row = await pool.fetchrow(_SAVE, plan.provider.value, plan.plan_id, plan.name, plan.interval,
                              plan.interval_count, plan.amount, plan.currency, plan.source, plan.updated_by[:255],
                              keep_operators)
    if row is None:  # an operator's entry, kept
        return (await plans(pool, [(plan.provider.value, plan.plan_id)]))[(plan.provider.value, plan.plan_id)]
    return _plan(row)


async def list_plans(pool: asyncpg.Pool, provider: Provider | None, limit: int) -> list[Plan]:
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM billing.plans WHERE $1::text IS NULL OR provider = $1 "
                            "ORDER BY provider, plan_id LIMIT $2", provider.value if provider else None, limit)
    return [_plan(r) for r in rows]
