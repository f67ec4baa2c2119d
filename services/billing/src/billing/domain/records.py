"""Use cases: a tenant's payments and subscriptions, read by tenant, and payments made ahead of checkout."""

from __future__ import annotations

from billing.domain.api_ports import RecordsPort
from billing.domain.api_types import (
    SUB_STATUSES,
    TXN_STATUSES,
    Page,
    PendingPayment,
    Stamped,
    SubFilter,
    TxnFilter,
    check_status,
    checked_page_size,
    tenant,
    text,
)
from billing.domain.errors import AlreadyExists, NotFound
from billing.domain.model import Subscription, Transaction


class TenantRecords:
    """Every read filters by tenant in the query itself."""

    def __init__(self, store: RecordsPort) -> None:
        self._store = store

    async def create_pending(self, pending: PendingPayment) -> tuple[Stamped[Transaction], bool]:
        pending = pending.validated()
        stamped, created, stored = await self._store.create_pending(pending)
        if not created and stored.get("idempotency_key") != pending.idempotency_key:
            raise AlreadyExists("this provider payment is already recorded")
        if not created and (stored.get("tenant_id"), stored.get("amount"), stored.get("currency")) != (
                pending.tenant_id, pending.amount, pending.currency):
            raise AlreadyExists("the idempotency key was used for a different payment")
        return stamped, created

    async def get_transaction(self, tenant_id: str, txn_id: str) -> Stamped[Transaction]:
        found = await self._store.get_transaction(tenant(tenant_id), text("id", txn_id))
        if found is None:
            raise NotFound(f"no transaction {txn_id} for this tenant")
        return found

    async def list_transactions(self, f: TxnFilter, page_size: int, token: str | None) -> Page[Stamped[Transaction]]:
        tenant(f.tenant_id)
        check_status(f.status, TXN_STATUSES)
        return await self._store.list_transactions(f, checked_page_size(page_size), token or None)

    async def get_subscription(self, tenant_id: str, sub_id: str) -> Stamped[Subscription]:
        found = await self._store.get_subscription(tenant(tenant_id), text("id", sub_id))
        if found is None:
            raise NotFound(f"no subscription {sub_id} for this tenant")
        return found

    async def list_subscriptions(self, f: SubFilter, page_size: int, token: str | None) -> Page[Stamped[Subscription]]:
        tenant(f.tenant_id)
        check_status(f.status, SUB_STATUSES)
        return await self._store.list_subscriptions(f, checked_page_size(page_size), token or None)
