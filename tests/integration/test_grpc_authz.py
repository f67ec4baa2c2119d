"""Every internal caller is authorized, per method and per tenant, by the policy the deploy manifests ship,
with real certificates on real gRPC servers over PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import grpc
import pytest
import trustme
from billing.adapters.postgres import PostgresEventStore, create_pool
from billing.adapters.reader import PostgresBillingReader
from billing.api.servicer import BillingServicer
from billing.domain.ingest import IngestEvents
from billing.domain.internal_api import InternalApi
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc
from boxcost.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from devstack.stack import free_port
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from notifier.adapters.postgres import PostgresEmailLog
from notifier.api.servicer import NotifierServicer
from notifier.domain.erasure import EraseRecipient
from notifier.domain.accept import AcceptEmail, EmailFactory, InlineEmails
from notifier.domain.operations import ReadEmails, RequeueFailedEmails
from notifier.domain.render import Renderer
from prometheus_client import REGISTRY
from servicekit import tls as tls_module
from servicekit.authz import server_policy
from servicekit.env import ConfigError
from servicekit.grpcserve import new_server
from servicekit.tls import GrpcTls

from tests.certs import spiffe, write_identity
from tests.integration.test_notifier_grpc import content

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "deploy" / "overlays" / "prod" / "policies"
BILLING = billing_pb2.DESCRIPTOR.services_by_name["BillingService"]
NOTIFIER = notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"]

# What the shipped policy grants, written out here rather than read from it: the test states the intent.
APP_READS = {"CreatePendingTransaction", "GetTransaction", "ListTransactions", "GetSubscription", "ListSubscriptions",
             "GetTenantProfile", "SetTenantProfile"}
BILLING_GRANTS = {
    "webhook-gateway": {"IngestEvents"},
    "billing": set(),
    "boxcost-app": APP_READS,
    "payments-operator": {m.name for m in BILLING.methods},
    "unknown-service": set(),
}
NOTIFIER_GRANTS = {
    "webhook-gateway": set(),
    "billing": {"SendEmail", "SendEmails"},
    "boxcost-app": {"SendEmail", "SendEmails", "GetEmail", "ListEmails", "PreviewEmail"},
    "payments-operator": {m.name for m in NOTIFIER.methods},
    "unknown-service": set(),
}
ACCOUNTS = {"webhook-gateway": spiffe("webhook-gateway"), "billing": spiffe("billing"),
            "boxcost-app": spiffe("boxcost-app", namespace="boxcost"),
            "payments-operator": spiffe("payments-operator"), "unknown-service": spiffe("reporting")}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def identities(ca, tmp_path_factory) -> dict[str, GrpcTls]:
    folder = tmp_path_factory.mktemp("identities")
    made = {name: write_identity(folder, name, ca, uri) for name, uri in ACCOUNTS.items()}
    made["server"] = write_identity(folder, "server", ca, "127.0.0.1", "localhost")
    made["portal-acme"] = write_identity(folder, "portal-acme", ca, spiffe("portal", namespace="boxcost"))
    return made


async def _serve(server: grpc.aio.Server, tls: GrpcTls) -> str:
    port = free_port()
    assert tls.bind(server, f"127.0.0.1:{port}") == port
    await server.start()
    return f"127.0.0.1:{port}"


@pytest.fixture
async def started():
    """The servers and pools a test starts, and a way to start one: stopped and closed at its end."""
    servers, pools = [], []

    async def start(server: grpc.aio.Server, pool, tls: GrpcTls) -> str:
        servers.append(server)
        pools.append(pool)
        return await _serve(server, tls)

    yield start
    for server in servers:
        await server.stop(0)
    for pool in pools:
        await pool.close()


@pytest.fixture
def billing_at(database_url, identities, started):
    """A billing server with its production wiring and interceptors, enforcing `policy_file`."""

    async def start(policy_file: Path) -> str:
        pool = await create_pool(database_url, min_size=1, max_size=4)
        ingest = IngestEvents(PostgresEventStore(pool))
        server = new_server(server_policy(False, str(policy_file), [billing_pb2.DESCRIPTOR]))
        billing_pb2_grpc.add_BillingServiceServicer_to_server(
            BillingServicer(ingest, InternalApi.wired(PostgresBillingReader(pool), ingest)), server)
        health_pb2_grpc.add_HealthServicer_to_server(_Healthy(), server)
        reflection.enable_server_reflection((BILLING.full_name, reflection.SERVICE_NAME), server)
        return await started(server, pool, identities["server"])

    return start


@pytest.fixture
def notifier_at(database_url, identities, started):
    async def start(policy_file: Path) -> str:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        log = PostgresEmailLog(pool)
        server = new_server(server_policy(False, str(policy_file), [notifier_pb2.DESCRIPTOR]))
        notifier_pb2_grpc.add_NotifierServiceServicer_to_server(
            NotifierServicer(AcceptEmail(log, InlineEmails(EmailFactory(Renderer(), "boxcostpro.com"))),
                             ReadEmails(log), Renderer(), RequeueFailedEmails(log), EraseRecipient(log)), server)
        return await started(server, pool, identities["server"])

    return start


class _Healthy(health_pb2_grpc.HealthServicer):
    async def Check(self, request, context):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def call(channel: grpc.aio.Channel, service, method_name: str, request=None):
    """Call `service`'s method with `request` (default: an empty one); the status code and the reply."""
    method = service.methods_by_name[method_name]
    request_type = message_factory.GetMessageClass(method.input_type)
    reply_type = message_factory.GetMessageClass(method.output_type)
    callable_ = channel.unary_unary(f"/{service.full_name}/{method_name}",
                                    request_serializer=request_type.SerializeToString,
                                    response_deserializer=reply_type.FromString)
    try:
        reply = await callable_(request if request is not None else request_type(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, reply


@pytest.mark.parametrize("caller", sorted(BILLING_GRANTS))
async def test_every_billing_rpc_is_allowed_or_refused_as_the_shipped_policy_says(billing_at, identities, caller, db):
    addr = await billing_at(POLICIES / "billing.yaml")
    async with identities[caller].channel(addr) as channel:
        for method in BILLING.methods:
            code, details = await call(channel, BILLING, method.name)
            if method.name in BILLING_GRANTS[caller]:
                assert code is not grpc.StatusCode.PERMISSION_DENIED, (caller, method.name, details)
            else:
                assert code is grpc.StatusCode.PERMISSION_DENIED, (caller, method.name, code)
                assert method.name in details
        code, reply = await call(channel, health_pb2.DESCRIPTOR.services_by_name["Health"], "Check")
        assert code is grpc.StatusCode.OK, caller  # health is open to every verified caller


@pytest.mark.parametrize("caller", sorted(NOTIFIER_GRANTS))
async def test_every_notifier_rpc_is_allowed_or_refused_as_the_shipped_policy_says(notifier_at, identities, caller):
    addr = await notifier_at(POLICIES / "notifier.yaml")
    async with identities[caller].channel(addr) as channel:
        for method in NOTIFIER.methods:
            code, details = await call(channel, NOTIFIER, method.name)
            if method.name in NOTIFIER_GRANTS[caller]:
                assert code is not grpc.StatusCode.PERMISSION_DENIED, (caller, method.name, details)
            else:
                assert code is grpc.StatusCode.PERMISSION_DENIED, (caller, method.name, code)


async def test_a_refused_write_changes_nothing_and_is_logged_and_counted(billing_at, identities, db, caplog):
    addr = await billing_at(POLICIES / "billing.yaml")
    method = f"/{BILLING.full_name}/CreatePendingTransaction"
    before = REGISTRY.get_sample_value("grpc_calls_denied_total", {"method": method, "caller": "webhook-gateway"}) or 0
    request = billing_pb2.CreatePendingTransactionRequest(
        idempotency_key="k-1", tenant_id="acme", provider=billing_pb2.PROVIDER_STRIPE,
        amount=billing_pb2.Money(amount_minor=1000, currency="INR"), stripe_payment_intent_id="pi_forged")
    async with identities["webhook-gateway"].channel(addr) as channel:
        with caplog.at_level(logging.WARNING, logger="servicekit.authz"):
            code, details = await call(channel, BILLING, "CreatePendingTransaction", request)
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert details == f"webhook-gateway may not call {BILLING.full_name}/CreatePendingTransaction"
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 0
    labels = {"method": method, "caller": "webhook-gateway"}
    assert REGISTRY.get_sample_value("grpc_calls_denied_total", labels) == before + 1
    [record] = [r for r in caplog.records if r.getMessage() == "call refused"]
    assert record.fields["identities"] == [ACCOUNTS["webhook-gateway"]] and record.fields["method"] == method


TENANT_POLICY = f"""
callers:
  - name: portal-acme
    identities: ["{spiffe("portal", namespace="boxcost")}"]
    methods: [boxcost.billing.v1.BillingService/CreatePendingTransaction,
              boxcost.billing.v1.BillingService/GetTransaction, boxcost.billing.v1.BillingService/ListTransactions,
              boxcost.billing.v1.BillingService/SetTenantProfile]
    tenants: [acme]
  - name: boxcost-app
    identities: ["{spiffe("boxcost-app", namespace="boxcost")}"]
    methods: [boxcost.billing.v1.BillingService/CreatePendingTransaction,
              boxcost.billing.v1.BillingService/GetTransaction]
"""


def pending(tenant: str, key: str, amount: int, intent: str) -> billing_pb2.CreatePendingTransactionRequest:
    return billing_pb2.CreatePendingTransactionRequest(
        idempotency_key=key, tenant_id=tenant, user_id="u1", provider=billing_pb2.PROVIDER_STRIPE,
        amount=billing_pb2.Money(amount_minor=amount, currency="INR"), stripe_payment_intent_id=intent)


async def test_a_tenant_bound_caller_reads_and_writes_only_its_tenants_rows(billing_at, identities, tmp_path, db):
    (tmp_path / "policy.yaml").write_text(TENANT_POLICY)
    addr = await billing_at(tmp_path / "policy.yaml")
    async with identities["portal-acme"].channel(addr) as portal, identities["boxcost-app"].channel(addr) as app:
        code, globex = await call(app, BILLING, "CreatePendingTransaction", pending("globex", "g-1", 9900, "pi_g"))
        assert code is grpc.StatusCode.OK
        code, mine = await call(portal, BILLING, "CreatePendingTransaction", pending("acme", "a-1", 4900, "pi_a"))
        assert code is grpc.StatusCode.OK and mine.transaction.tenant_id == "acme"

        refused = [
            await call(portal, BILLING, "CreatePendingTransaction", pending("globex", "a-2", 100, "pi_x")),
            await call(portal, BILLING, "GetTransaction",
                       billing_pb2.GetTransactionRequest(tenant_id="globex", id=globex.transaction.id)),
            await call(portal, BILLING, "ListTransactions", billing_pb2.ListTransactionsRequest(tenant_id="globex")),
            await call(portal, BILLING, "ListTransactions", billing_pb2.ListTransactionsRequest()),
            await call(portal, BILLING, "SetTenantProfile", billing_pb2.SetTenantProfileRequest(
                tenant_id="globex", profile=billing_pb2.TenantProfile(display_name="Not Globex"))),
        ]
        assert [code for code, _ in refused] == [grpc.StatusCode.PERMISSION_DENIED] * 5
        assert "'globex'" in refused[0][1] and "named none" in refused[3][1]

        code, listed = await call(portal, BILLING, "ListTransactions",
                                  billing_pb2.ListTransactionsRequest(tenant_id="acme"))
        assert code is grpc.StatusCode.OK and [t.id for t in listed.transactions] == [mine.transaction.id]
        code, profile = await call(portal, BILLING, "SetTenantProfile", billing_pb2.SetTenantProfileRequest(
            tenant_id="acme", profile=billing_pb2.TenantProfile(display_name="Acme Cartons")))
        assert code is grpc.StatusCode.OK and profile.profile.updated_by == "spiffe://boxcost.internal/ns/boxcost/sa/portal"
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 2
    assert await db.fetchval("SELECT array_agg(tenant_id) FROM billing.tenant_profiles") == ["acme"]


async def test_another_tenants_idempotency_key_never_returns_or_changes_its_row(billing_at, identities, tmp_path, db):
    (tmp_path / "policy.yaml").write_text(TENANT_POLICY)
    addr = await billing_at(tmp_path / "policy.yaml")
    async with identities["portal-acme"].channel(addr) as portal, identities["boxcost-app"].channel(addr) as app:
        code, mine = await call(portal, BILLING, "CreatePendingTransaction",
                                pending("acme", "shared-key", 4900, "pi_a"))
        assert code is grpc.StatusCode.OK and mine.created
        # Another tenant, the same key: refused, and nothing of acme's payment in the answer.
        for request in (pending("globex", "shared-key", 4900, "pi_a"), pending("globex", "shared-key", 7700, "pi_g")):
            code, details = await call(app, BILLING, "CreatePendingTransaction", request)
            assert code is grpc.StatusCode.ALREADY_EXISTS
            assert mine.transaction.id not in details
    row = await db.fetchrow("SELECT tenant_id, requested_amount, stripe_payment_intent_id FROM billing.transactions")
    assert dict(row) == {"tenant_id": "acme", "requested_amount": 4900, "stripe_payment_intent_id": "pi_a"}
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 1


async def test_concurrent_requests_with_one_key_create_one_row(billing_at, identities, tmp_path, db):
    (tmp_path / "policy.yaml").write_text(TENANT_POLICY)
    addr = await billing_at(tmp_path / "policy.yaml")
    async with identities["portal-acme"].channel(addr) as portal:
        answers = await asyncio.gather(*(call(portal, BILLING, "CreatePendingTransaction",
                                              pending("acme", "once", 4900, "pi_once")) for _ in range(12)))
    assert {code for code, _ in answers} == {grpc.StatusCode.OK}
    assert len({reply.transaction.id for _, reply in answers}) == 1
    assert sum(reply.created for _, reply in answers) == 1
    assert await db.fetchval("SELECT count(*) FROM billing.transactions") == 1


NOTIFIER_TENANT_POLICY = f"""
callers:
  - name: portal-acme
    identities: ["{spiffe("portal", namespace="boxcost")}"]
    methods: [boxcost.notifier.v1.NotifierService/SendEmail, boxcost.notifier.v1.NotifierService/GetEmail]
    tenants: [acme]
  - name: boxcost-app
    identities: ["{spiffe("boxcost-app", namespace="boxcost")}"]
    methods: [boxcost.notifier.v1.NotifierService/SendEmail, boxcost.notifier.v1.NotifierService/SendEmails]
"""


async def test_notifier_keeps_tenants_apart_by_identity_and_by_idempotency_key(notifier_at, identities, tmp_path, db):
    (tmp_path / "policy.yaml").write_text(NOTIFIER_TENANT_POLICY)
    addr = await notifier_at(tmp_path / "policy.yaml")
    send = notifier_pb2.SendEmailRequest
    async with identities["portal-acme"].channel(addr) as portal, identities["boxcost-app"].channel(addr) as app:
        code, mine = await call(portal, NOTIFIER, "SendEmail", send(idempotency_key="mail-1", content=content("acme")))
        assert code is grpc.StatusCode.OK
        code, details = await call(portal, NOTIFIER, "SendEmail",
                                   send(idempotency_key="mail-2", content=content("globex")))
        assert code is grpc.StatusCode.PERMISSION_DENIED and "'globex'" in details
        # A batch naming another tenant in any one email is refused whole.
        batch = notifier_pb2.SendEmailsRequest(emails=[send(idempotency_key="mail-3", content=content("acme")),
                                                       send(idempotency_key="mail-4", content=content("globex"))])
        assert (await call(portal, NOTIFIER, "SendEmails", batch))[0] is grpc.StatusCode.PERMISSION_DENIED
        code, details = await call(app, NOTIFIER, "SendEmail",
                                   send(idempotency_key="mail-1", content=content("globex")))
        assert code is grpc.StatusCode.ALREADY_EXISTS and mine.email.id not in details
        code, _ = await call(portal, NOTIFIER, "GetEmail",
                             notifier_pb2.GetEmailRequest(tenant_id="globex", id=mine.email.id))
        assert code is grpc.StatusCode.PERMISSION_DENIED
    rows = await db.fetch("SELECT idempotency_key, tenant_id FROM notifier.email_logs")
    assert [dict(r) for r in rows] == [{"idempotency_key": "mail-1", "tenant_id": "acme"}]


def test_a_policy_naming_a_method_the_server_lacks_or_missing_with_mtls_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigError, match="GRPC_POLICY_FILE"):
        server_policy(False, None, [billing_pb2.DESCRIPTOR])
    (tmp_path / "typo.yaml").write_text("callers:\n  - name: x\n    identities: [a]\n"
                                        "    methods: [boxcost.billing.v1.BillingService/IngestEvent]\n")
    with pytest.raises(ConfigError, match="no such method on this server: .*BillingService/IngestEvent$"):
        server_policy(False, str(tmp_path / "typo.yaml"), [billing_pb2.DESCRIPTOR])
    assert server_policy(True, None, [billing_pb2.DESCRIPTOR]) is None  # plaintext: local development


async def test_without_tls_every_call_is_allowed_and_the_server_says_so_once(caplog):
    with caplog.at_level(logging.WARNING, logger="servicekit.grpcserve"):
        new_server(None)
    assert [r.getMessage() for r in caplog.records] == [
        "no authorization policy: every caller may call every method (local development only)"]


async def test_a_client_refuses_a_server_whose_certificate_is_not_from_its_ca(identities, tmp_path):
    rogue = write_identity(tmp_path, "rogue-server", trustme.CA(), "127.0.0.1")
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Healthy(), server)
    addr = await _serve(server, rogue)
    try:
        async with identities["payments-operator"].channel(addr) as channel:
            code, details = await call(channel, health_pb2.DESCRIPTOR.services_by_name["Health"], "Check")
        assert code is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_renewed_certificates_are_used_for_new_connections_without_a_restart(
        billing_at, identities, ca, tmp_path, monkeypatch):
    monkeypatch.setattr(tls_module, "RELOAD_CHECK_SECONDS", 0.0)
    addr = await billing_at(POLICIES / "billing.yaml")
    # A client renewed in place as another identity: its next calls present the new certificate.
    client = write_identity(tmp_path / "client", "me", ca, ACCOUNTS["unknown-service"])
    async with client.channel(addr) as channel:
        assert (await call(channel, BILLING, "ListWebhookEvents"))[0] is grpc.StatusCode.PERMISSION_DENIED
        write_identity(tmp_path / "client", "me", ca, ACCOUNTS["payments-operator"])
        assert (await call(channel, BILLING, "ListWebhookEvents"))[0] is grpc.StatusCode.OK

    # A server renewed in place from another CA: new connections get the new certificate.
    new_ca = trustme.CA()
    server_tls = write_identity(tmp_path / "server", "server", ca, "127.0.0.1")
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Healthy(), server)
    renewed_addr = await _serve(server, server_tls)
    try:
        old_trust = write_identity(tmp_path / "old", "client", ca, ACCOUNTS["payments-operator"])
        new_trust = write_identity(tmp_path / "new", "client", new_ca, ACCOUNTS["payments-operator"])
        health = health_pb2.DESCRIPTOR.services_by_name["Health"]
        async with old_trust.channel(renewed_addr) as channel:
            assert (await call(channel, health, "Check"))[0] is grpc.StatusCode.OK
        write_identity(tmp_path / "server", "server", new_ca, "127.0.0.1")
        async with new_trust.channel(renewed_addr) as channel:
            assert (await call(channel, health, "Check"))[0] is grpc.StatusCode.OK
        async with old_trust.channel(renewed_addr) as channel:
            assert (await call(channel, health, "Check"))[0] is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_server_reflection_a_stream_is_the_operators_only(billing_at, identities):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    addr = await billing_at(POLICIES / "billing.yaml")
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    outcomes = {}
    for caller in ("payments-operator", "webhook-gateway"):
        async with identities[caller].channel(addr) as channel:
            try:
                replies = [r async for r in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([ask]), timeout=10)]
                outcomes[caller] = sorted(s.name for r in replies for s in r.list_services_response.service)
            except grpc.aio.AioRpcError as exc:
                outcomes[caller] = exc.code()
    assert "boxcost.billing.v1.BillingService" in outcomes["payments-operator"]
    assert outcomes["webhook-gateway"] is grpc.StatusCode.PERMISSION_DENIED
