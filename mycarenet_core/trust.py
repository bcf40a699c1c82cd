"""The trust model of the mesh, read from ``trust.toml`` and enforced by one server interceptor.

Every RPC of every service names, in ``trust.toml``, the grants that let a caller in: the client certificate
it presents (what kind of party it is), whether a session token is needed (a provider acting for itself, or
a person under a mandate the provider gave) and, with a session, the roles and the mandated service. The
:class:`TrustInterceptor` enforces that before any handler runs, and leaves who called in context variables
(:func:`current_peer`, :func:`current_grant`, :func:`current_session`) for the handler's own scope rules
("only its own relations"). README's table is generated from the same file (``scripts/trust_table.py``).

Next to the grants, every RPC declares what its server does with an admitted call: its ``throttle`` (the
unit its tokens are counted in, :class:`Throttling`) and its ``audit`` (which calls leave a row,
:class:`Auditing`); a method without both, or with an unknown value, is a load error. A server enforces them
with one handler per method built once from the table (:meth:`TrustTable.declared` gives a service's
methods with their policies; the hub: :mod:`hub.policy`, the insurer nodes: :mod:`oa_node.servicers`).

Without TLS (development only: ``--insecure``) no certificate exists; a caller then declares the
certificate kind it stands for in the ``x-mcn-peer`` metadata (default ``client``), which is exactly as
trustworthy as a plaintext network is. Health and reflection stay open to every peer the CA vouches for.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import enum
import importlib
import pkgutil
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from mycarenet_core.errors import McnCode, MeshError, permission_denied, unauthenticated
from mycarenet_core.identifiers import Role
from mycarenet_core.sessions import Caller, TokenVerifier, bearer_token, service_name

TABLE_PATH = Path(__file__).with_name("trust.toml")
PEER_METADATA = "x-mcn-peer"
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
E = TypeVar("E", bound=enum.StrEnum)


class Certificate(enum.StrEnum):
    """Kinds of client certificate of the mesh (the common name, or its prefix for ``oa-XXX``)."""

    CLIENT = "client"
    HUB = "hub"
    EHEALTH = "ehealth"
    OA = "oa"
    BACKOFFICE = "backoffice"
    ADMIN = "admin"


class SessionNeed(enum.StrEnum):
    """What a grant asks of the session token."""

    NONE = "none"
    PROVIDER = "provider"
    MANDATED = "mandated"


class Throttling(enum.StrEnum):
    """What an admitted call costs in the throttle of its requester of record (taken once the request is
    parsed, given back when the call fails through no fault of its caller)."""

    NONE = "none"
    CALL = "call"
    """One token per call."""
    INSURER = "insurer"
    """One token per insurer the call goes to: the insurers its request asks, or the insurers its request is
    routed to (at least one); the parsed request names them (``insurers``) and the audit row records them."""


class Auditing(enum.StrEnum):
    """Which admitted calls leave an audit row (a refusal of the trust model always leaves one)."""

    CALL = "call"
    """A row for every call, with its outcome (a watch stream: when it opens, with the opening's outcome)."""
    FAILURES = "failures"
    """A row for a call that fails only."""
    NONE = "none"


@dataclass(frozen=True)
class Grant:
    """One way into an RPC."""

    certificate: Certificate
    session: SessionNeed
    roles: frozenset[Role] = frozenset()
    service: str = ""
    scope: str = ""
    restricted_service: str = ""
    """A mandate covering this service instead of ``service`` is admitted too, for a use the handler
    restricts (its ``scope`` says how): a tarification office's TARIFICATION_OFFICE (seed 003 §8.2.2.7)."""


@dataclass(frozen=True)
class Policy:
    """Every grant of one RPC (at most one per certificate kind)."""

    method: str
    grants: Mapping[Certificate, Grant]
    throttle: Throttling | None = None
    """None: not declared, only in a table built by hand (:func:`load_table` requires both; a server that
    enforces the policy refuses to serve the method)."""
    audit: Auditing | None = None

    @property
    def service(self) -> str:
        return self.method.split("/")[1]

    @property
    def name(self) -> str:
        return self.method.split("/")[2]


@dataclass(frozen=True)
class TrustTable:
    certificates: Mapping[Certificate, str]
    sessions: Mapping[SessionNeed, str]
    policies: Mapping[str, Policy]
    throttles: Mapping[Throttling, str] = field(default_factory=dict)
    audits: Mapping[Auditing, str] = field(default_factory=dict)

    def for_service(self, prefix: str) -> list[Policy]:
        """The policies of the methods whose full name starts with ``/<prefix>``."""
        return [p for m, p in self.policies.items() if m.startswith(f"/{prefix}")]

    def declared(self, service: ServiceDescriptor) -> list[tuple[MethodDescriptor, Policy]]:
        """Each method of ``service`` with its policy, for a server building its handlers at start; a
        method missing from the table, or without a throttle and an audit, is an error (no start)."""
        declared = []
        for method in service.methods:
            full = f"/{service.full_name}/{method.name}"
            policy = self.policies.get(full)
            if policy is None:
                raise ValueError(f"{full} is not in the trust table")
            if policy.throttle is None or policy.audit is None:
                raise ValueError(f"{full} declares no throttle and audit in the trust table")
            declared.append((method, policy))
        return declared


def load_table(path: Path = TABLE_PATH) -> TrustTable:
    """Parse and check the table (unknown kinds, throttle units or audits, duplicate methods or grants, a
    method without its throttle or its audit, a throttle on a call without a session are errors)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    certificates = {Certificate(k): str(v) for k, v in data["certificates"].items()}
    sessions = {SessionNeed(k): str(v) for k, v in data["sessions"].items()}
    throttles = {Throttling(k): str(v) for k, v in data.get("throttles", {}).items()}
    audits = {Auditing(k): str(v) for k, v in data.get("audits", {}).items()}
    policies: dict[str, Policy] = {}
    for entry in data["rpc"]:
        method = str(entry["method"])
        if method in policies:
            raise ValueError(f"{path}: {method} appears twice")
        grants: dict[Certificate, Grant] = {}
        for raw in entry["grants"]:
            grant = Grant(
                certificate=Certificate(raw["certificate"]),
                session=SessionNeed(raw["session"]),
                roles=frozenset(Role[r] for r in raw.get("roles", ())),
                service=str(raw.get("service", "")),
                scope=str(raw.get("scope", "")),
                restricted_service=str(raw.get("restricted_service", "")),
            )
            if grant.certificate in grants:
                raise ValueError(f"{path}: {method} grants {grant.certificate} twice")
            if grant.session is SessionNeed.NONE and (grant.roles or grant.service):
                raise ValueError(f"{path}: {method}: roles and service need a session")
            if grant.session is SessionNeed.MANDATED and not grant.service:
                raise ValueError(f"{path}: {method}: a mandated grant names its service")
            if grant.restricted_service and grant.session is not SessionNeed.MANDATED:
                raise ValueError(f"{path}: {method}: a restricted service needs a mandated grant")
            grants[grant.certificate] = grant
        unknown = set(entry) - {"method", "grants", "throttle", "audit"}
        if unknown:
            raise ValueError(f"{path}: {method}: unknown keys {sorted(unknown)}")
        missing = [key for key in ("throttle", "audit") if key not in entry]
        if missing:
            raise ValueError(f"{path}: {method}: no {missing[0]} (every RPC declares its throttle and audit)")
        throttle = _declared(Throttling, entry["throttle"], path, method)
        if throttle is not Throttling.NONE and any(g.session is SessionNeed.NONE for g in grants.values()):
            raise ValueError(f"{path}: {method}: a throttle counts per requester: its grants need a session")
        audit = _declared(Auditing, entry["audit"], path, method)
        policies[method] = Policy(method, grants, throttle, audit)
    return TrustTable(certificates, sessions, policies, throttles, audits)


def _declared(kind: type[E], value: object, path: Path, method: str) -> E:
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(repr(str(v)) for v in kind)
        raise ValueError(f"{path}: {method}: {value!r} is no {kind.__name__} ({allowed})") from None


TABLE = load_table()


def service_modules() -> list[ModuleType]:
    """Every generated ``*_pb2`` module of ``protos/`` that declares a service."""
    import mycarenet_core.gen as gen

    modules = []
    for info in pkgutil.walk_packages(gen.__path__, prefix="mycarenet_core.gen."):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(info.name)
            if module.DESCRIPTOR.services_by_name:
                modules.append(module)
    return modules


def all_methods() -> set[str]:
    """The full name ("/package.Service/Method") of every RPC in ``protos/``."""
    return {
        f"/{service.full_name}/{method.name}"
        for module in service_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


@dataclass(frozen=True)
class Peer:
    """The party at the other end of the connection, from its certificate."""

    certificate: Certificate | None
    name: str
    insurer_code: str = ""

    @classmethod
    def from_name(cls, name: str) -> Peer:
        if name.startswith("oa-") and len(name) == 6 and name[3:].isdigit():
            return cls(Certificate.OA, name, name[3:])
        try:
            return cls(Certificate(name), name)
        except ValueError:
            return cls(None, name)


def peer_names(context: Any) -> list[str]:
    """Names in the client certificate (CN and SANs) of an mTLS peer; empty without TLS."""
    auth = context.auth_context()
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text not in names:
                names.append(text)
    return names


def identify(context: Any, *, secure: bool) -> Peer:
    """Who the peer is: the first name of its certificate that is a known kind; without TLS, the kind it
    declares in ``x-mcn-peer`` (``client`` when it declares none)."""
    if secure:
        names = peer_names(context)
        for name in names:
            peer = Peer.from_name(name)
            if peer.certificate is not None:
                return peer
        return Peer(None, names[0] if names else "")
    for key, value in context.invocation_metadata() or ():
        if key == PEER_METADATA:
            return Peer.from_name(value.decode() if isinstance(value, bytes) else str(value))
    return Peer(Certificate.CLIENT, "client")


_peer: contextvars.ContextVar[Peer | None] = contextvars.ContextVar("mcn_peer", default=None)
_grant: contextvars.ContextVar[Grant | None] = contextvars.ContextVar("mcn_grant", default=None)
_session: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("mcn_session", default=None)


def current_peer() -> Peer:
    """The peer of the running RPC (set by :class:`TrustInterceptor`)."""
    peer = _peer.get()
    if peer is None:
        raise RuntimeError("no trust context: is the TrustInterceptor installed?")
    return peer


def current_grant() -> Grant:
    """The grant the running RPC was let in by."""
    grant = _grant.get()
    if grant is None:
        raise RuntimeError("no trust context: is the TrustInterceptor installed?")
    return grant


def current_session() -> Caller | None:
    """The verified session of the running RPC, when its grant asks for one."""
    return _session.get()


def require_session() -> Caller:
    """The verified session (the grant asked for one)."""
    session = _session.get()
    if session is None:
        raise unauthenticated("MISSING_TOKEN", "this call needs a session")
    return session


@dataclass(frozen=True)
class CallRecord:
    """What the interceptor saw of one call, for the audit of the service (refusals included)."""

    method: str
    peer: Peer
    session: Caller | None
    outcome: str  # "OK" or the status code name
    reason: str = ""
    codes: tuple[int, ...] = ()  # the MyCareNet codes of a refusal (140 ...)
    when: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    admitted: bool = False
    """The trust model let the call in (its handler ran): the RPC's declared audit decides whether it has a
    row. A call refused here always has one."""

    def audited(self, audit: Auditing | None) -> bool:
        """Whether this call has an audit row under its RPC's declared ``audit``."""
        if not self.admitted or audit is Auditing.CALL:
            return True
        return audit is Auditing.FAILURES and self.outcome != "OK"


Observer = Callable[[CallRecord], "Awaitable[None] | None"]
"""Sees every call's record; what it returns (the commit of an audit row) is awaited before the call
answers, unless the call was cancelled (issue 17: nothing acknowledged is missing from the audit)."""


def check_session(grant: Grant, session: Caller) -> None:
    """The session rules of a grant: own session, mandate coverage, roles. PERMISSION_DENIED 140."""
    if grant.session is SessionNeed.PROVIDER and session.principal:
        raise permission_denied(
            "MANDATE_NOT_ALLOWED",
            "this call is made by the provider itself; a session under a mandate cannot make it",
            code=McnCode.PROVIDER_NOT_ENTITLED,
        )
    if grant.session is SessionNeed.MANDATED and session.principal:
        covered = {service_name(s) for s in session.mandate_services}
        if grant.service not in covered and (
            not grant.restricted_service or grant.restricted_service not in covered
        ):
            raise permission_denied(
                "MANDATE_NOT_COVERING",
                f"the mandate {session.mandate_id} does not cover {grant.service}",
                code=McnCode.PROVIDER_NOT_ENTITLED,
            )
    if not session.requester_inami:
        raise permission_denied(
            "MANDATE_REQUIRED",
            "the session names no care provider: open it under a mandate",
            code=McnCode.PROVIDER_NOT_ENTITLED,
        )
    if grant.roles:
        role = session.role
        if role is None or role not in grant.roles:
            what = role.value if role else "session without a known role"
            raise permission_denied(
                "PROVIDER_NOT_ENTITLED",
                f"a {what} may not use {grant.service or 'this service'}",
                code=McnCode.PROVIDER_NOT_ENTITLED,
            )


class TrustInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Enforces :data:`TABLE` for every RPC of the server: certificate, then session, then roles.

    ``verifier`` verifies session tokens (needed when a served method has a grant with a session);
    ``observe`` receives a :class:`CallRecord` for every call that is refused here or that ends (for audit).
    """

    def __init__(
        self,
        *,
        secure: bool,
        verifier: TokenVerifier | None = None,
        table: TrustTable = TABLE,
        observe: Observer | None = None,
    ) -> None:
        self.secure = secure
        self.verifier = verifier
        self.table = table
        self.observe = observe

    async def admit(self, method: str, context: Any) -> tuple[Peer, Grant, Caller | None]:
        """Who the caller is and by which grant it may call ``method``; raise the refusal otherwise."""
        peer = identify(context, secure=self.secure)
        _peer.set(peer)
        policy = self.table.policies.get(method)
        if policy is None:
            raise permission_denied("METHOD_NOT_IN_TRUST_TABLE", f"{method} is open to no one")
        grant = policy.grants.get(peer.certificate) if peer.certificate is not None else None
        if grant is None:
            allowed = ", ".join(sorted(policy.grants))
            who = peer.name or "an anonymous peer"
            raise permission_denied(
                "CERTIFICATE_NOT_ALLOWED", f"{policy.name} answers {allowed} certificates, not {who}"
            )
        _grant.set(grant)
        session: Caller | None = None
        if grant.session is not SessionNeed.NONE:
            if self.verifier is None:
                raise RuntimeError(f"{method} needs sessions but the server has no token verifier")
            session = await self.verifier.verify(bearer_token(context.invocation_metadata()))
            _session.set(session)
            check_session(grant, session)
        return peer, grant, session

    async def _record(self, method: str, context: Any, error: BaseException | None, admitted: bool) -> None:
        if self.observe is None:
            return
        peer = _peer.get() or Peer(None, "")
        codes: tuple[int, ...] = ()
        if error is None:
            outcome, reason = "OK", ""
        elif isinstance(error, MeshError):
            outcome, reason, codes = error.status.name, error.reason, error.codes
        else:
            code = context.code() if hasattr(context, "code") else None
            outcome = code.name if isinstance(code, grpc.StatusCode) else "CANCELLED"
            reason = type(error).__name__
        record = CallRecord(method, peer, _session.get(), outcome, reason, codes, admitted=admitted)
        pending = self.observe(record)
        if pending is not None and not isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            await asyncio.shield(pending)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        admit, record = self.admit, self._record

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                error: BaseException | None = None
                admitted = False
                try:
                    await admit(method, context)
                    admitted = True
                    return await inner(request, context)
                except BaseException as failed:
                    error = failed
                    raise
                finally:
                    await record(method, context, error, admitted)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                error: BaseException | None = None
                admitted = False
                try:
                    await admit(method, context)
                    admitted = True
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as failed:
                    error = failed
                    raise
                finally:
                    await record(method, context, error, admitted)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def declare_peer(name: str) -> list[Any]:
    """Client interceptors (unary and streaming) that declare ``name`` as the certificate kind on a
    plaintext channel. grpc.aio files an interceptor under one kind only, hence two objects."""
    metadata = ((PEER_METADATA, name),)
    unary_base: Any = grpc.aio.UnaryUnaryClientInterceptor
    stream_base: Any = grpc.aio.UnaryStreamClientInterceptor

    class _Unary(unary_base):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return await continuation(_with(details, metadata), request)

    class _Stream(stream_base):  # type: ignore[misc]
        async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return await continuation(_with(details, metadata), request)

    return [_Unary(), _Stream()]


def _with(details: Any, extra: tuple[tuple[str, str], ...]) -> Any:
    present = [(k, v) for k, v in (details.metadata or ()) if k != PEER_METADATA]
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*present, *extra),
        details.credentials,
        details.wait_for_ready,
    )


__all__ = [
    "TABLE",
    "Auditing",
    "CallRecord",
    "Certificate",
    "Grant",
    "Peer",
    "Policy",
    "SessionNeed",
    "Throttling",
    "TrustInterceptor",
    "TrustTable",
    "all_methods",
    "check_session",
    "current_grant",
    "current_peer",
    "current_session",
    "declare_peer",
    "identify",
    "load_table",
    "require_session",
    "service_modules",
]
