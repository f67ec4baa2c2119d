"""Who may call which RPC, and for which tenants: a policy file checked on every call.

A caller is known by the SANs of its verified client certificate: SPIFFE-style URIs
(`spiffe://boxcost.internal/ns/payments/sa/webhook-gateway`) and DNS names. The policy lists callers:

    callers:
      - name: webhook-gateway
        identities: ["spiffe://boxcost.internal/ns/payments/sa/webhook-gateway"]
        methods: ["boxcost.billing.v1.BillingService/IngestEvents"]
      - name: quoting
        identities: ["spiffe://boxcost.internal/ns/apps/sa/quoting"]
        methods: ["boxcost.billing.v1.BillingService/GetTransaction"]
        tenants: ["acme", "globex"]

A method is `package.Service/Method`, or `package.Service/*` for all of a service's. Without `tenants` a
caller may act for any tenant; with it, every `tenant_id` in its request must be one of them (a request that
names none is refused). Anything not granted is refused. Health checks are open to every verified caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import grpc
import yaml
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import Message
from prometheus_client import Counter

from servicekit.env import ConfigError

log = logging.getLogger(__name__)

DENIED = Counter("grpc_calls_denied_total", "Calls refused by the authorization policy, by method and caller "
                 "(the policy's name for it, or unknown).", ["method", "caller"])

OPEN_TO_ALL = ("grpc.health.v1.Health",)


@dataclass(frozen=True)
class Caller:
    name: str
    identities: frozenset[str]
    methods: frozenset[str]  # full method names and `Service/*` patterns, without the leading slash
    tenants: frozenset[str] | None  # None: any tenant

    def may_call(self, method: str) -> bool:
        service = method.rsplit("/", 1)[0]
        return method in self.methods or f"{service}/*" in self.methods


@dataclass(frozen=True)
class Decision:
    allowed: bool
    caller: str
    reason: str = ""


class Policy:
    def __init__(self, callers: Sequence[Caller]) -> None:
        self.callers = tuple(callers)

    def _matching(self, identities: Iterable[str]) -> list[Caller]:
        given = set(identities)
        return [c for c in self.callers if c.identities & given]

    def decide(self, identities: Sequence[str], method: str, tenants: Iterable[str] | None = None) -> Decision:
        """Whether a caller with these identities may call `method` for `tenants` (None: not asked yet).
        Refused unless one caller entry matching the identities grants both."""
        method = method.lstrip("/")
        matching = self._matching(identities)
        name = matching[0].name if matching else "unknown"
        if method.rsplit("/", 1)[0] in OPEN_TO_ALL:
            return Decision(True, name)
        granting = [c for c in matching if c.may_call(method)]
        if not granting:
            return Decision(False, name, f"{name} may not call {method}")
        if tenants is None or any(c.tenants is None for c in granting):
            return Decision(True, granting[0].name)
        asked = set(tenants)
        if not asked or "" in asked:
            return Decision(False, name, f"{name} acts for named tenants only; the request to {method} named none")
        for caller in granting:
            assert caller.tenants is not None
            if asked <= caller.tenants:
                return Decision(True, caller.name)
        outside = sorted(asked - frozenset().union(*(c.tenants or () for c in granting)))
        return Decision(False, name, f"{name} may not act for tenant {(outside or sorted(asked))[0]!r}")

    def tenant_bound(self, identities: Sequence[str], method: str) -> bool:
        """Whether every caller entry granting this method to these identities limits the tenants."""
        granting = [c for c in self._matching(identities) if c.may_call(method.lstrip("/"))]
        return bool(granting) and all(c.tenants is not None for c in granting)

    @classmethod
    def load(cls, path: str, services: Sequence[FileDescriptor]) -> Policy:
        """Read and check a policy file against the services this server offers: a method that does not
        exist is a configuration error, not a grant that silently never applies."""
        try:
            document = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"GRPC_POLICY_FILE: cannot read {path}: {exc}") from None
        known = set(_methods(services))
        return cls(list(_callers(document, known, path)))


def _methods(files: Sequence[FileDescriptor]) -> Iterator[str]:
    for file in files:
        for service in file.services_by_name.values():
            yield f"{service.full_name}/*"
            for method in service.methods:
                yield f"{service.full_name}/{method.name}"


def _strings(entry: Mapping, key: str, path: str, required: bool = True) -> frozenset[str] | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{path}: {key} must be a non-empty list of strings")
    return frozenset(value)


def _callers(document: object, known: set[str], path: str) -> Iterator[Caller]:
    if not isinstance(document, dict) or not isinstance(document.get("callers"), list):
        raise ConfigError(f"{path}: expected a mapping with a list `callers`")
    names: set[str] = set()
    for i, entry in enumerate(document["callers"]):
        where = f"{path}: callers[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"{where}: each caller needs a name")
        if entry["name"] in names:
            raise ConfigError(f"{where}: caller {entry['name']!r} is listed twice")
        names.add(entry["name"])
        unknown = set(entry) - {"name", "identities", "methods", "tenants"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        methods = _strings(entry, "methods", where)
        assert methods is not None
        missing = sorted(m for m in methods if m not in known)
        if missing:
            raise ConfigError(f"{where}: no such method on this server: {', '.join(missing)}")
        identities = _strings(entry, "identities", where)
        assert identities is not None
        yield Caller(entry["name"], identities, methods, _strings(entry, "tenants", where, required=False))


def peer_identities(context: grpc.aio.ServicerContext) -> tuple[str, ...]:
    """The URI and DNS SANs of the caller's verified certificate."""
    auth = context.auth_context()
    return tuple(v.decode("utf-8", "replace") for key in ("peer_uri", "peer_dns") for v in auth.get(key, ()))


def caller_name(context: grpc.aio.ServicerContext) -> str:
    """Who called, for audit records: the certificate's identities, or that there was no certificate."""
    return ", ".join(peer_identities(context)) or "a caller without a certificate (plaintext)"


@cache
def _tenant_paths(descriptor: Descriptor) -> tuple[tuple[str, Descriptor | None, bool], ...]:
    """(field, message type or None for the tenant_id string itself, repeated) of the fields that hold
    or may contain a tenant_id."""
    found = []
    for field in descriptor.fields:
        repeated = field.is_repeated
        if field.name == "tenant_id" and field.type == field.TYPE_STRING and not repeated:
            found.append((field.name, None, False))
        elif field.type == field.TYPE_MESSAGE and field.message_type is not descriptor and _tenant_paths(
                field.message_type):
            found.append((field.name, field.message_type, repeated))
    return tuple(found)


def request_tenants(message: Message) -> list[str]:
    """Every tenant_id a request names, nested messages included (empty ones too: they name no tenant)."""
    tenants: list[str] = []
    for name, nested, repeated in _tenant_paths(message.DESCRIPTOR):
        if nested is None:
            tenants.append(getattr(message, name))
        elif repeated:
            for item in getattr(message, name):
                tenants.extend(request_tenants(item))
        elif message.HasField(name):
            tenants.extend(request_tenants(getattr(message, name)))
    return tenants


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with PERMISSION_DENIED naming the method, every call the policy does not grant."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        policy = self._policy

        async def refuse(context: grpc.aio.ServicerContext, decision: Decision, identities: Sequence[str]) -> None:
            DENIED.labels(method, decision.caller).inc()
            log.warning("call refused", extra={"fields": {"method": method, "caller": decision.caller,
                                                          "identities": list(identities), "reason": decision.reason}})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, decision.reason)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request, context):
                identities = peer_identities(context)
                decision = policy.decide(identities, method)
                if decision.allowed and isinstance(request, Message) and policy.tenant_bound(identities, method):
                    decision = policy.decide(identities, method, request_tenants(request))
                if not decision.allowed:
                    await refuse(context, decision, identities)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)
        # Streams (health watches, reflection) carry no tenant: the method alone decides.
        def streaming(inner):
            async def behaviour(request, context):
                identities = peer_identities(context)
                decision = policy.decide(identities, method)
                if not decision.allowed:
                    await refuse(context, decision, identities)
                async for reply in inner(request, context):
                    yield reply

            return behaviour

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                streaming(handler.stream_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # no client-streaming RPCs are served


def server_policy(plaintext: bool, policy_file: str | None, services: Sequence[FileDescriptor]) -> Policy | None:
    """The policy a server of `services` enforces (with health and reflection, which every server has):
    none in plaintext (local development), and a file required with mTLS."""
    if plaintext:
        return None
    if not policy_file:
        raise ConfigError("mutual TLS is on, so GRPC_POLICY_FILE must name the policy of who may call what")
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    return Policy.load(policy_file, [*services, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR])
