"""The use cases behind billing's internal API, wired to one store that implements every port."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from billing.domain.api_ports import AttributionPort, EventsPort, RecordsPort, RefusedEmailsPort
from billing.domain.attribution import Attribution
from billing.domain.dispatch import RefusedEmails
from billing.domain.erasure import EraseCustomer, ErasurePort
from billing.domain.ingest import IngestEvents
from billing.domain.records import TenantRecords
from billing.domain.replay import EventOperations
from billing.domain.plans import PlanCatalog, PlanStore
from billing.domain.tenant_profiles import TenantProfilePort, TenantProfiles


class BillingStore(RecordsPort, EventsPort, RefusedEmailsPort, AttributionPort, ErasurePort, TenantProfilePort,
                   PlanStore, Protocol):
    """Every port of the internal API."""


@dataclass(frozen=True)
class InternalApi:
    records: TenantRecords
    events: EventOperations
    refused: RefusedEmails
    attribution: Attribution
    erasure: EraseCustomer
    profiles: TenantProfiles
    plans: PlanCatalog

    @classmethod
    def wired(cls, store: BillingStore, ingest: IngestEvents, on_emails_queued: Callable[[], None] = lambda: None,
              clock: Callable[[], datetime] = lambda: datetime.now(UTC),
              plans: PlanCatalog | None = None) -> InternalApi:
        return cls(TenantRecords(store), EventOperations(store, ingest), RefusedEmails(store, on_emails_queued),
                   Attribution(store, ingest, clock), EraseCustomer(store), TenantProfiles(store),
                   plans or PlanCatalog(store))
