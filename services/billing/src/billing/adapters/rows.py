"""Billing's rows as PostgreSQL holds them: the columns of the row types, their SQL types, and the rows
read back, from asyncpg records or from the JSON PostgreSQL builds of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

import orjson

from billing.domain.model import Provider, Refund, RefundState, Subscription, SubStatus, Transaction, TxnStatus

TXN_COLUMNS = [f.name for f in fields(Transaction)]
SUB_COLUMNS = [f.name for f in fields(Subscription)]


# PostgreSQL types of the row columns (the rest are text).
PG_TYPES = {
    "id": "uuid", "amount": "bigint", "amount_refunded": "bigint", "requested_amount": "bigint", "currency": "text",
    "customer_email_rank": "smallint", "customer_name_rank": "smallint", "refunds": "jsonb",
    "refunds_reported": "bigint", "price_amount": "bigint",
    "status_at": "timestamptz", "failed_at": "timestamptz", "paid_at": "timestamptz",
    "refunded_at": "timestamptz", "disputed_at": "timestamptz", "current_period_start": "timestamptz",
    "current_period_end": "timestamptz", "cancelled_at": "timestamptz", "cancel_at": "timestamptz",
    "trial_ends": "timestamptz", "action_requested_at": "timestamptz",
}


_TXN_TIMES = [c for c in TXN_COLUMNS if PG_TYPES.get(c) == "timestamptz"]
_SUB_TIMES = [c for c in SUB_COLUMNS if PG_TYPES.get(c) == "timestamptz"]


def _times(data: dict[str, Any], columns: list[str]) -> None:
    # Rows read as JSON carry times as RFC 3339 text; asyncpg records carry datetimes already.
    for c in columns:
        if isinstance(data[c], str):
            data[c] = datetime.fromisoformat(data[c])


def transaction_from_row(row: Mapping[str, Any]) -> Transaction:
    """A transaction from its row: an asyncpg record, or the row as PostgreSQL's JSON gives it."""
    data = {c: row[c] for c in TXN_COLUMNS}
    _times(data, _TXN_TIMES)
    refunds = data["refunds"]
    if isinstance(refunds, str):  # an asyncpg record carries jsonb as its text; the JSON rows, parsed
        refunds = orjson.loads(refunds)
    data.update(id=str(row["id"]), provider=Provider(row["provider"]), status=TxnStatus(row["status"]),
                refunds=tuple(Refund(r["id"], r["amount"], RefundState(r["state"]), r.get("failure_reason"))
                              for r in refunds))
    return Transaction(**data)


def subscription_from_row(row: Mapping[str, Any]) -> Subscription:
    data = {c: row[c] for c in SUB_COLUMNS}
    _times(data, _SUB_TIMES)
    data.update(id=str(row["id"]), provider=Provider(row["provider"]), status=SubStatus(row["status"]))
    return Subscription(**data)
