"""gRPC transport for billing: decode, call one use case, map results and errors."""

from __future__ import annotations

import logging
from datetime import datetime

import grpc
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc
from servicekit.authz import caller_name
from servicekit.grpcserve import maps_errors
from servicekit.logs import request_id_var
from servicekit.timestamps import field_datetime, to_timestamp

from billing.domain import ingest
from billing.domain.events import IncomingEvent, IngestResult, Outcome, TransientStoreError
from billing.domain.model import Provider, Subscription, Transaction
from billing.domain.errors import AlreadyExists, InvalidRequest, NotAssignable, NotFound, NotReplayable
from billing.domain.internal_api import InternalApi
from billing.domain.plans import Plan
from billing.domain.tenant_profiles import TEXT_FIELDS, TenantProfile
from billing.domain.api_types import (
    EventFilter,
    EventSelection,
    PendingPayment,
    Stamped,
    StoredEvent,
    SubFilter,
    TxnFilter,
)

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_HEADERS = 16

_PROVIDERS = {
    billing_pb2.PROVIDER_STRIPE: Provider.STRIPE,
    billing_pb2.PROVIDER_RAZORPAY: Provider.RAZORPAY,
}
_OUTCOMES = {
    Outcome.PROCESSED: billing_pb2.INGEST_STATUS_PROCESSED,
    Outcome.DUPLICATE: billing_pb2.INGEST_STATUS_DUPLICATE,
    Outcome.IGNORED: billing_pb2.INGEST_STATUS_IGNORED,
    Outcome.FAILED: billing_pb2.INGEST_STATUS_FAILED,
}
# Domain/adapter error -> gRPC status. Anything else is a defect: UNKNOWN, logged with its trace by grpc.
_ERRORS: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    NotReplayable: grpc.StatusCode.FAILED_PRECONDITION,
    NotAssignable: grpc.StatusCode.FAILED_PRECONDITION,
    TransientStoreError: grpc.StatusCode.UNAVAILABLE,
    OSError: grpc.StatusCode.UNAVAILABLE,
}
_PROVIDER_TO_PB = {v: k for k, v in _PROVIDERS.items()}
errors = maps_errors(_ERRORS)


def _decode(request: billing_pb2.IngestEventsRequest) -> list[IncomingEvent]:
    if not request.events:
        raise InvalidRequest("events", "at least one event is required")
    if len(request.events) > MAX_BATCH:
        raise InvalidRequest("events", f"at most {MAX_BATCH} events per call")
    events = []
    for i, e in enumerate(request.events):
        provider = _PROVIDERS.get(e.provider)
        if provider is None:
            raise InvalidRequest(f"events[{i}].provider", "must be STRIPE or RAZORPAY")
        if not e.event_id or len(e.event_id) > 255:
            raise InvalidRequest(f"events[{i}].event_id", "required, at most 255 characters")
        if not e.event_type or len(e.event_type) > 255:
            raise InvalidRequest(f"events[{i}].event_type", "required, at most 255 characters")
        if not e.HasField("received_at"):
            raise InvalidRequest(f"events[{i}].received_at", "required")
        if len(e.request_id) > 255:
            raise InvalidRequest(f"events[{i}].request_id", "at most 255 characters")
        if len(e.headers) > MAX_HEADERS or any(len(k) > 64 or len(v) > 1024 for k, v in e.headers.items()):
            raise InvalidRequest(f"events[{i}].headers", f"at most {MAX_HEADERS}, each at most 1,024 characters")
        if len(e.client_address) > 64:
            raise InvalidRequest(f"events[{i}].client_address", "at most 64 characters")
        events.append(
            IncomingEvent(
                provider=provider,
                event_id=e.event_id,
                event_type=e.event_type,
                payload=e.payload,
                received_at=_time(e, "received_at", f"events[{i}].received_at"),
                request_id=e.request_id,
                headers=tuple(sorted((k.lower(), v) for k, v in e.headers.items())),
                client_address=e.client_address,
            )
        )
    return events


def _encode(result: IngestResult) -> billing_pb2.IngestResult:
    return billing_pb2.IngestResult(
        event_id=result.event_id,
        status=_OUTCOMES[result.outcome],
        error=result.error or "",
        transaction_ids=result.transaction_ids,
        subscription_ids=result.subscription_ids,
    )




def _selection(message: billing_pb2.EventSelection) -> EventSelection:
    return EventSelection(
        provider=_provider_filter(message.provider), event_ids=tuple(message.event_ids),
        event_type=message.event_type or None, tenant_id=message.tenant_id or None,
        statuses=tuple(message.statuses), received_after=_time(message, "received_after", "selection.received_after"),
        received_before=_time(message, "received_before", "selection.received_before"))


def _provider_filter(value: int) -> Provider | None:
    """A list's provider filter: unset means every provider; a value this server doesn't know is refused,
    never dropped (which would list every provider's rows)."""
    if value == billing_pb2.PROVIDER_UNSPECIFIED:
        return None
    if value not in _PROVIDERS:
        raise InvalidRequest("provider", "must be STRIPE, RAZORPAY or unset")
    return _PROVIDERS[value]


def _time(message, name: str, path: str | None = None) -> datetime | None:
    """The message's timestamp field `name` as a datetime, None when unset."""
    try:
        return field_datetime(message, name)
    except ValueError:
        raise InvalidRequest(path or name, "is not a valid timestamp") from None


def _transaction_pb(stamped: Stamped[Transaction]) -> billing_pb2.Transaction:
    t = stamped.row
    return billing_pb2.Transaction(
        id=t.id, tenant_id=t.tenant_id or "", user_id=t.user_id or "", provider=_PROVIDER_TO_PB[t.provider],
        amount=billing_pb2.Money(amount_minor=t.amount or 0, currency=t.currency or ""),
        status=t.status.value, provider_status=t.provider_status or "", amount_refunded=t.amount_refunded,
        stripe_payment_intent_id=t.stripe_payment_intent_id or "", stripe_charge_id=t.stripe_charge_id or "",
        stripe_invoice_id=t.stripe_invoice_id or "", stripe_subscription_id=t.stripe_subscription_id or "",
        razorpay_order_id=t.razorpay_order_id or "", razorpay_payment_id=t.razorpay_payment_id or "",
        razorpay_subscription_id=t.razorpay_subscription_id or "", payment_method=t.payment_method or "",
        failure_code=t.failure_code or "", failure_message=t.failure_message or "",
        receipt_url=t.receipt_url or "", invoice_url=t.invoice_url or "",
        paid_at=to_timestamp(t.paid_at), refunded_at=to_timestamp(t.refunded_at),
        disputed_at=to_timestamp(t.disputed_at), created_at=to_timestamp(stamped.created_at),
        updated_at=to_timestamp(stamped.updated_at),
        requested_amount=billing_pb2.Money(amount_minor=t.requested_amount, currency=t.requested_currency or "")
        if t.requested_amount is not None else None,
        refunds=[billing_pb2.Refund(id=r.id, amount=billing_pb2.Money(amount_minor=r.amount, currency=t.currency or ""),
                                    status=r.state.value, failure_reason=r.failure_reason or "")
                 for r in t.refunds],
    )


def _subscription_pb(stamped: Stamped[Subscription]) -> billing_pb2.Subscription:
    s = stamped.row
    return billing_pb2.Subscription(
        id=s.id, tenant_id=s.tenant_id or "", user_id=s.user_id or "", provider=_PROVIDER_TO_PB[s.provider],
        plan=s.plan or "", status=s.status.value, provider_status=s.provider_status or "",
        stripe_subscription_id=s.stripe_subscription_id or "", razorpay_subscription_id=s.razorpay_subscription_id or "",
        current_period_start=to_timestamp(s.current_period_start),
        current_period_end=to_timestamp(s.current_period_end), cancelled_at=to_timestamp(s.cancelled_at),
        created_at=to_timestamp(stamped.created_at), updated_at=to_timestamp(stamped.updated_at),
        cancel_at=to_timestamp(s.cancel_at),
        price=billing_pb2.Money(amount_minor=s.price_amount, currency=s.price_currency or "")
        if s.price_amount is not None else None,
    )


def _event_pb(e: StoredEvent) -> billing_pb2.StoredEvent:
    kept = e.evidence
    return billing_pb2.StoredEvent(
        id=e.id, provider=_PROVIDER_TO_PB[e.provider], event_id=e.event_id, event_type=e.event_type,
        status=e.status, error=e.error or "", attempts=e.attempts, received_at=to_timestamp(e.received_at),
        processed_at=to_timestamp(e.processed_at), request_id=e.request_id or "", payload=e.payload,
        dead_letter=e.dead_letter, next_retry_at=to_timestamp(e.next_retry_at), erased_at=to_timestamp(e.erased_at),
        **({"body": kept.body, "body_sha256": kept.body_sha256, "headers": kept.headers,
            "client_address": kept.client_address, "transaction_ids": kept.transaction_ids,
            "subscription_ids": kept.subscription_ids} if kept else {}),
    )


def _profile(p: billing_pb2.TenantProfile) -> TenantProfile:
    return TenantProfile(**{f: getattr(p, f) for f in TEXT_FIELDS}, disabled_emails=tuple(p.disabled_emails))


def _profile_pb(p: TenantProfile) -> billing_pb2.TenantProfile:
    return billing_pb2.TenantProfile(**{f: getattr(p, f) for f in TEXT_FIELDS},
                                     disabled_emails=list(p.disabled_emails), updated_at=to_timestamp(p.updated_at),
                                     updated_by=p.updated_by)


def _plan(p: billing_pb2.Plan) -> Plan:
    provider = _PROVIDERS.get(p.provider)
    if provider is None:
        raise InvalidRequest("plan.provider", "must be STRIPE or RAZORPAY")
    has_amount = p.HasField("amount")
    return Plan(provider, p.plan_id, p.name, p.interval, p.interval_count or None,
                p.amount.amount_minor if has_amount else None, p.amount.currency.upper() if has_amount else None)


def _plan_pb(p: Plan) -> billing_pb2.Plan:
    return billing_pb2.Plan(
        provider=_PROVIDER_TO_PB[p.provider], plan_id=p.plan_id, name=p.name, interval=p.interval,
        interval_count=p.interval_count or 0, source=p.source, updated_at=to_timestamp(p.updated_at),
        updated_by=p.updated_by, amount=billing_pb2.Money(amount_minor=p.amount, currency=p.currency or "")
        if p.amount is not None else None)


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, ingest_events: ingest.IngestEvents, api: InternalApi) -> None:
        self._ingest = ingest_events
        self._records = api.records
        self._events = api.events
        self._refused = api.refused
        self._attribution = api.attribution
        self._erasure = api.erasure
        self._profiles = api.profiles
        self._plans = api.plans

    @errors
    async def IngestEvents(self, request: billing_pb2.IngestEventsRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.IngestEventsResponse:
        events = _decode(request)
        results = await self._ingest.execute(events)
        return billing_pb2.IngestEventsResponse(results=[_encode(r) for r in results])

    @errors
    async def CreatePendingTransaction(
            self, request: billing_pb2.CreatePendingTransactionRequest, context: grpc.aio.ServicerContext,
    ) -> billing_pb2.CreatePendingTransactionResponse:
        pending = PendingPayment(
            idempotency_key=request.idempotency_key, tenant_id=request.tenant_id, user_id=request.user_id,
            provider=_PROVIDERS.get(request.provider), amount=request.amount.amount_minor,
            currency=request.amount.currency.upper(), stripe_payment_intent_id=request.stripe_payment_intent_id,
            razorpay_order_id=request.razorpay_order_id)
        stamped, created = await self._records.create_pending(pending)
        return billing_pb2.CreatePendingTransactionResponse(transaction=_transaction_pb(stamped), created=created)

    @errors
    async def GetTransaction(self, request: billing_pb2.GetTransactionRequest,
                             context: grpc.aio.ServicerContext) -> billing_pb2.GetTransactionResponse:
        stamped = await self._records.get_transaction(request.tenant_id, request.id)
        return billing_pb2.GetTransactionResponse(transaction=_transaction_pb(stamped))

    @errors
    async def ListTransactions(self, request: billing_pb2.ListTransactionsRequest,
                               context: grpc.aio.ServicerContext) -> billing_pb2.ListTransactionsResponse:
        where = TxnFilter(request.tenant_id, request.user_id or None, request.status or None,
                          _provider_filter(request.provider), _time(request, "created_after"),
                          _time(request, "created_before"))
        page = await self._records.list_transactions(where, request.page_size, request.page_token)
        return billing_pb2.ListTransactionsResponse(transactions=[_transaction_pb(t) for t in page.items],
                                                    next_page_token=page.next_token or "")

    @errors
    async def GetSubscription(self, request: billing_pb2.GetSubscriptionRequest,
                              context: grpc.aio.ServicerContext) -> billing_pb2.GetSubscriptionResponse:
        stamped = await self._records.get_subscription(request.tenant_id, request.id)
        return billing_pb2.GetSubscriptionResponse(subscription=_subscription_pb(stamped))

    @errors
    async def ListSubscriptions(self, request: billing_pb2.ListSubscriptionsRequest,
                                context: grpc.aio.ServicerContext) -> billing_pb2.ListSubscriptionsResponse:
        where = SubFilter(request.tenant_id, request.user_id or None, request.status or None,
                          _provider_filter(request.provider))
        page = await self._records.list_subscriptions(where, request.page_size, request.page_token)
        return billing_pb2.ListSubscriptionsResponse(subscriptions=[_subscription_pb(s) for s in page.items],
                                                     next_page_token=page.next_token or "")

    @errors
    async def ListWebhookEvents(self, request: billing_pb2.ListWebhookEventsRequest,
                                context: grpc.aio.ServicerContext) -> billing_pb2.ListWebhookEventsResponse:
        where = EventFilter(_provider_filter(request.provider), request.status or None, request.event_type or None,
                            _time(request, "received_after"),
                            _time(request, "received_before"))
        page = await self._events.list_events(where, request.page_size, request.page_token)
        return billing_pb2.ListWebhookEventsResponse(events=[_event_pb(e) for e in page.items],
                                                     next_page_token=page.next_token or "")

    @errors
    async def GetWebhookEvent(self, request: billing_pb2.GetWebhookEventRequest,
                              context: grpc.aio.ServicerContext) -> billing_pb2.GetWebhookEventResponse:
        event = await self._events.get_event(_PROVIDERS.get(request.provider), request.event_id)
        return billing_pb2.GetWebhookEventResponse(event=_event_pb(event))

    @errors
    async def ReplayWebhookEvents(self, request: billing_pb2.ReplayWebhookEventsRequest,
                                  context: grpc.aio.ServicerContext) -> billing_pb2.ReplayWebhookEventsResponse:
        if not request.HasField("selection"):
            results = await self._events.replay(_PROVIDERS.get(request.provider), request.event_id, request.all_failed)
            return billing_pb2.ReplayWebhookEventsResponse(results=[_encode(r) for r in results])
        if request.event_id or request.all_failed:
            raise InvalidRequest("selection", "give a selection, or event_id / all_failed, not both")
        report = await self._events.replay_selection(
            _selection(request.selection), request.selection.limit, dry_run=request.dry_run, reason=request.reason,
            requested_by=caller_name(context))
        preview = report.preview
        return billing_pb2.ReplayWebhookEventsResponse(
            results=[_encode(r) for r in report.results], replay_id=report.replay_id,
            changed_transaction_ids=preview.changed_transaction_ids if preview else [],
            changed_subscription_ids=preview.changed_subscription_ids if preview else [],
            email_kinds=preview.email_kinds if preview else [])

    @errors
    async def RetryRefusedEmails(self, request: billing_pb2.RetryRefusedEmailsRequest,
                                 context: grpc.aio.ServicerContext) -> billing_pb2.RetryRefusedEmailsResponse:
        emails = await self._refused.refused_emails(request.limit, requeue=not request.dry_run)
        return billing_pb2.RetryRefusedEmailsResponse(emails=[
            billing_pb2.RefusedEmail(id=e.id, idempotency_key=e.idempotency_key, kind=e.kind, refusal=e.refusal,
                                     created_at=to_timestamp(e.created_at)) for e in emails])

    @errors
    async def ListUnattributedTransactions(
            self, request: billing_pb2.ListUnattributedTransactionsRequest, context: grpc.aio.ServicerContext,
    ) -> billing_pb2.ListUnattributedTransactionsResponse:
        payments = await self._attribution.unattributed_payments(request.limit)
        return billing_pb2.ListUnattributedTransactionsResponse(transactions=[_transaction_pb(t) for t in payments])

    @errors
    async def ListUnattributedSubscriptions(
            self, request: billing_pb2.ListUnattributedSubscriptionsRequest, context: grpc.aio.ServicerContext,
    ) -> billing_pb2.ListUnattributedSubscriptionsResponse:
        subscriptions = await self._attribution.unattributed_subscriptions(request.limit)
        return billing_pb2.ListUnattributedSubscriptionsResponse(
            subscriptions=[_subscription_pb(s) for s in subscriptions])

    @errors
    async def AssignTransactionTenant(self, request: billing_pb2.AssignTransactionTenantRequest,
                                      context: grpc.aio.ServicerContext) -> billing_pb2.AssignTransactionTenantResponse:
        payment = await self._attribution.assign_tenant(request.transaction_id, request.tenant_id, request.user_id,
                                                request_id_var.get())
        return billing_pb2.AssignTransactionTenantResponse(transaction=_transaction_pb(payment))

    @errors
    async def AssignSubscriptionTenant(
            self, request: billing_pb2.AssignSubscriptionTenantRequest, context: grpc.aio.ServicerContext,
    ) -> billing_pb2.AssignSubscriptionTenantResponse:
        subscription = await self._attribution.assign_subscription_tenant(
            _PROVIDERS.get(request.provider), request.subscription_id, request.tenant_id, request.user_id,
            request_id_var.get())
        return billing_pb2.AssignSubscriptionTenantResponse(subscription=_subscription_pb(subscription))

    @errors
    async def EraseCustomer(self, request: billing_pb2.EraseCustomerRequest,
                            context: grpc.aio.ServicerContext) -> billing_pb2.EraseCustomerResponse:
        erased = await self._erasure.execute(
            request.email, request.reason,
            requested_by=caller_name(context))
        return billing_pb2.EraseCustomerResponse(
            erasure_id=erased.erasure_id, transactions=erased.transactions, subscriptions=erased.subscriptions,
            events=erased.events, outbox_emails=erased.outbox_emails)

    @errors
    async def SetTenantProfile(self, request: billing_pb2.SetTenantProfileRequest,
                               context: grpc.aio.ServicerContext) -> billing_pb2.SetTenantProfileResponse:
        stored = await self._profiles.set(request.tenant_id, _profile(request.profile), caller_name(context))
        return billing_pb2.SetTenantProfileResponse(profile=_profile_pb(stored))

    @errors
    async def GetTenantProfile(self, request: billing_pb2.GetTenantProfileRequest,
                               context: grpc.aio.ServicerContext) -> billing_pb2.GetTenantProfileResponse:
        return billing_pb2.GetTenantProfileResponse(profile=_profile_pb(await self._profiles.get(request.tenant_id)))

    @errors
    async def SetPlan(self, request: billing_pb2.SetPlanRequest,
                      context: grpc.aio.ServicerContext) -> billing_pb2.SetPlanResponse:
        return billing_pb2.SetPlanResponse(plan=_plan_pb(await self._plans.set(_plan(request.plan),
                                                                                caller_name(context))))

    @errors
    async def ListPlans(self, request: billing_pb2.ListPlansRequest,
                        context: grpc.aio.ServicerContext) -> billing_pb2.ListPlansResponse:
        plans = await self._plans.list(_provider_filter(request.provider), request.limit)
        return billing_pb2.ListPlansResponse(plans=[_plan_pb(p) for p in plans])
