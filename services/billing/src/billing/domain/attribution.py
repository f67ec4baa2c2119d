"""Use cases: payments and subscriptions no tenant owns, listed for finance and given their tenant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from billing.domain.api_ports import AttributionPort
from billing.domain.api_types import MAX_UNATTRIBUTED, Stamped, operator_limit, tenant, text
from billing.domain.errors import InvalidRequest, NotAssignable, NotFound
from billing.domain.ingest import IngestEvents
from billing.domain.model import Owner, Provider, SubRef, Subscription, Transaction

T = TypeVar("T")


class Attribution:
    def __init__(self, store: AttributionPort, ingest: IngestEvents,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._ingest = ingest
        self._clock = clock

    async def assign_tenant(self, txn_id: str, tenant_id: str, user_id: str,
                            request_id: str = "") -> Stamped[Transaction]:
        """Give a payment that no tenant owns its tenant (and user), as finance found it out. A payment that
        has a tenant keeps it: NotAssignable, unless it is already this one's (the call can be repeated).
        The emails that waited for a tenant go out as if an event had brought it now: a receipt only for
        a payment made within a day (see notifications)."""
        text("transaction_id", txn_id)
        owner = Owner(tenant(tenant_id), text("user_id", user_id, required=False) or None)
        found = await self._store.payment_by_id(txn_id)
        if found is None:
            raise NotFound(f"no transaction {txn_id}")
        row = found.row
        if not row.tenant_id:
            row = await self._ingest.assign_tenant(row, owner, self._clock(), request_id) or row
        if row.tenant_id != tenant_id:
            raise NotAssignable(f"transaction {row.id} belongs to another tenant" if row.tenant_id
                                else f"transaction {row.id} was merged into another since; look it up again")
        return await self._given(self._store.get_transaction(tenant_id, row.id), f"transaction {txn_id}")

    async def assign_subscription_tenant(self, provider: Provider | None, sub_id: str, tenant_id: str,
                                         user_id: str, request_id: str = "") -> Stamped[Subscription]:
        """As assign_tenant, for a subscription named by the provider's id (a subscription made in the
        provider's dashboard): its payments without a tenant take it too, so its renewals are the tenant's."""
        if provider is None:
            raise InvalidRequest("provider", "is required")
        ref = SubRef(provider, text("subscription_id", sub_id))
        owner = Owner(tenant(tenant_id), text("user_id", user_id, required=False) or None)
        row = await self._ingest.assign_subscription_tenant(ref, owner, self._clock(), request_id)
        if row is None:
            raise NotFound(f"no {provider.value} subscription {sub_id}")
        if row.tenant_id != tenant_id:
            raise NotAssignable(f"subscription {sub_id} belongs to another tenant")
        return await self._given(self._store.get_subscription(tenant_id, row.id), f"subscription {sub_id}")

    @staticmethod
    async def _given(read: Awaitable[Stamped[T] | None], what: str) -> Stamped[T]:
        """The row just given its tenant, as the tenant now reads it (gone only if merged meanwhile)."""
        stamped = await read
        if stamped is None:
            raise NotFound(f"{what} was merged into another since; look it up again")
        return stamped

    async def unattributed_payments(self, limit: int) -> list[Stamped[Transaction]]:
        """Payments received that no tenant owns: made without the platform's metadata (a payment link, an
        invoice from the provider's dashboard), or whose subscription billing never heard of. No tenant
        sees them, so operators and finance do."""
        return await self._store.unattributed_payments(operator_limit(limit, MAX_UNATTRIBUTED))

    async def unattributed_subscriptions(self, limit: int) -> list[Stamped[Subscription]]:
        """Subscriptions that no tenant owns (made in the provider's dashboard): no tenant has their access,
        and one with no payment yet shows in no list of payments."""
        return await self._store.unattributed_subscriptions(operator_limit(limit, MAX_UNATTRIBUTED))
