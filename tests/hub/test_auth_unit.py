"""Local token verification, the hub's rows of the trust table (SPEC §3's matrix), throttling and the circuit
breaker (no servers)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import create_async_engine

from hub.audit import AuditLog
from hub.auth import CachingTokenVerifier, Caller, TokenVerifier, bearer_token, require_supervisor
from hub.insurability import InsurabilityServicer
from hub.invoicing import InvoicingServicer
from hub.routing import RoutingIndex, make_span
from hub.services import HubCore, MailboxServicer
from hub.throttle import Throttle, ThrottleConfig
from hub.upstream import CircuitBreaker
from mycarenet_core.clock import FixedClock
from mycarenet_core.dates import to_proto
from mycarenet_core.errors import MeshError, permission_denied, unavailable
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_service_pb2 as ins
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2 as inv
from mycarenet_core.identifiers import Profession, make_inami, make_niss
from mycarenet_core.trust import (
    TABLE,
    Auditing,
    CallRecord,
    Certificate,
    Peer,
    Throttling,
    TrustTable,
    _session,
    check_session,
)

NOW = dt.datetime(2025, 3, 4, 10, 0, tzinfo=dt.UTC)
KEY = Ed25519PrivateKey.generate()
GP = make_inami(Profession.PHYSICIAN, 101, "004")
TRAINEE = make_inami(Profession.PHYSICIAN, 102, "005")
SPECIALIST = make_inami(Profession.PHYSICIAN, 103, "580")
DENTIST = make_inami(Profession.DENTIST, 104, "000")
PHARMACIST = make_inami(Profession.PHARMACIST, 105, "000")
MEDICAL_HOUSE = make_inami(Profession.ORGANISATION, 106, "100")


def pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Keys:
    def __init__(self) -> None:
        self.calls = 0
        self.keys = [auth_pb2.SigningKey(key_id="k1", algorithm="EdDSA", public_key_pem=pem(KEY))]

    async def __call__(self) -> auth_pb2.GetSigningKeysResponse:
        self.calls += 1
        return auth_pb2.GetSigningKeysResponse(keys=self.keys)


def token(key: Ed25519PrivateKey = KEY, kid: str = "k1", **over: Any) -> str:
    iat = int(NOW.timestamp())
    claims = {
        "iss": "ehealth",
        "aud": "mycarenet",
        "sub": GP,
        "sub_kind": "SUBJECT_KIND_PROVIDER",
        "sid": "s1",
        "iat": iat,
        "nbf": iat,
        "exp": iat + 3600,
        "inami": GP,
        "principal": "",
        "mandate_id": "",
        "mandate_services": [],
    } | over
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


async def reason_of(verifier: TokenVerifier, text: str) -> str:
    with pytest.raises(MeshError) as err:
        await verifier.verify(text)
    assert err.value.status.name == "UNAUTHENTICATED"
    return err.value.reason


async def test_a_good_token_verifies_locally_with_one_key_fetch() -> None:
    keys = Keys()
    verifier = TokenVerifier(keys, FixedClock(NOW))
    for _ in range(3):
        caller = await verifier.verify(token())
    assert caller.requester_inami == GP
    assert keys.calls == 1


async def test_every_rejection_reason() -> None:
    clock = FixedClock(NOW)
    keys = Keys()
    verifier = TokenVerifier(keys, clock, refresh_interval=60)
    assert await reason_of(verifier, "not-a-jwt") == "MALFORMED"
    assert await reason_of(verifier, token(Ed25519PrivateKey.generate())) == "BAD_SIGNATURE"
    assert await reason_of(verifier, token(kid="k9")) == "UNKNOWN_KEY"
    assert await reason_of(verifier, token(kid="k8")) == "UNKNOWN_KEY"
    assert keys.calls == 1  # unknown kids refresh at most once per interval
    assert await reason_of(verifier, token(aud="other")) == "WRONG_AUDIENCE"
    assert await reason_of(verifier, token(exp=int(NOW.timestamp()) - 120)) == "EXPIRED"
    assert await reason_of(verifier, token(nbf=int(NOW.timestamp()) + 120)) == "NOT_YET_VALID"
    iat = int(NOW.timestamp())
    assert await reason_of(verifier, token(iat=iat - 3600, exp=iat + 12 * 3600)) == "LIFETIME_TOO_LONG"
    verifier.revoke(auth_pb2.Revocation(sequence=1, session_id="s1"))
    assert await reason_of(verifier, token()) == "REVOKED"
    with pytest.raises(MeshError) as err:
        bearer_token([])
    assert err.value.reason == "MISSING_TOKEN"
    with pytest.raises(MeshError) as err:
        bearer_token([("authorization", "Basic abc")])
    assert err.value.reason == "MALFORMED"


async def test_a_signed_token_lasting_more_than_twelve_hours_is_refused() -> None:
    """eHealth issues at most 12 h: a longer token, even signed with eHealth's key, is refused."""
    verifier = TokenVerifier(Keys(), FixedClock(NOW))
    iat = int(NOW.timestamp())
    twelve = await verifier.verify(token(exp=iat + 12 * 3600))
    assert twelve.expires == NOW + dt.timedelta(hours=12)
    with pytest.raises(MeshError) as err:
        await verifier.verify(token(exp=iat + 13 * 3600))
    assert (err.value.status.name, err.value.reason) == ("UNAUTHENTICATED", "LIFETIME_TOO_LONG")
    # ... counted from its earliest start: an nbf before iat lengthens it too
    assert await reason_of(verifier, token(nbf=iat - 2 * 3600, exp=iat + 11 * 3600)) == "LIFETIME_TOO_LONG"
    # ... and numbers that are not finite are no lifetime at all
    assert await reason_of(verifier, token(exp=float("inf"))) == "MALFORMED"
    assert await reason_of(verifier, token(iat=float("-inf"))) == "MALFORMED"
    assert await reason_of(verifier, token(exp=float("nan"))) == "MALFORMED"


async def test_a_rotated_key_is_fetched_on_first_sight() -> None:
    keys = Keys()
    verifier = TokenVerifier(keys, FixedClock(NOW), refresh_interval=0)
    await verifier.verify(token())
    new = Ed25519PrivateKey.generate()
    keys.keys.append(auth_pb2.SigningKey(key_id="k2", algorithm="EdDSA", public_key_pem=pem(new)))
    assert (await verifier.verify(token(new, "k2"))).executor_id == GP


def caller(inami: str, principal: str = "", services: tuple[str, ...] = ()) -> Caller:
    return Caller(
        executor_id=inami or "85073003328",
        executor_kind="SUBJECT_KIND_PROVIDER" if inami else "SUBJECT_KIND_PERSON",
        session_id="s",
        inami=inami,
        principal=principal,
        mandate_id="m1" if principal else "",
        mandate_services=frozenset(services),
        organisation="",
        expires=NOW,
    )


CONSULT = "/mycarenet.dmg.v1.DmgService/ConsultDmg"
NOTIFY = "/mycarenet.dmg.v1.DmgService/NotifyDmg"
ENROL = "/mycarenet.dmg.v1.DmgService/EnrolDmg"
PATIENT_LIST = "/mycarenet.dmg.v1.MailboxService/PostPatientList"
MAILBOX = "/mycarenet.dmg.v1.MailboxService/GetMessages"


def admit(method: str, session: Caller) -> None:
    """What the trust interceptor checks of a provider software's session for ``method``."""
    check_session(TABLE.policies[method].grants[Certificate.CLIENT], session)


@pytest.mark.parametrize(
    ("inami", "method", "allowed"),
    [
        (GP, CONSULT, True),
        (TRAINEE, CONSULT, True),
        (SPECIALIST, CONSULT, True),
        (DENTIST, CONSULT, True),
        (PHARMACIST, CONSULT, False),
        (MEDICAL_HOUSE, CONSULT, True),  # a medical house holds DMGs (seed 000 §2.3.2, issue 14 correction 3)
        (GP, NOTIFY, True),
        (MEDICAL_HOUSE, NOTIFY, True),
        (TRAINEE, NOTIFY, True),
        (SPECIALIST, NOTIFY, False),
        (DENTIST, NOTIFY, False),
        (GP, PATIENT_LIST, True),
        (TRAINEE, PATIENT_LIST, False),
        (SPECIALIST, PATIENT_LIST, False),
        (GP, ENROL, True),
        (MEDICAL_HOUSE, ENROL, True),
        (DENTIST, ENROL, False),
        (PHARMACIST, MAILBOX, True),
        (MEDICAL_HOUSE, MAILBOX, True),
    ],
)
def test_the_hubs_rows_of_the_trust_table_are_spec_3(inami: str, method: str, allowed: bool) -> None:
    if allowed:
        admit(method, caller(inami))
        return
    with pytest.raises(MeshError) as err:
        admit(method, caller(inami))
    assert (err.value.status.name, err.value.reason, err.value.code) == (
        "PERMISSION_DENIED",
        "PROVIDER_NOT_ENTITLED",
        140,
    )


def test_a_mandate_must_cover_the_service_and_the_principal_is_the_requester() -> None:
    mandated = caller("", GP, ("MANDATED_SERVICE_DMG_CONSULT",))
    assert mandated.requester_inami == GP
    admit(CONSULT, mandated)
    with pytest.raises(MeshError) as err:
        admit(NOTIFY, mandated)
    assert (err.value.reason, err.value.code) == ("MANDATE_NOT_COVERING", 140)
    with pytest.raises(MeshError) as err:
        admit(MAILBOX, caller(""))  # a person without a mandate is nobody's requester
    assert (err.value.status.name, err.value.reason, err.value.code) == (
        "PERMISSION_DENIED",
        "MANDATE_REQUIRED",
        140,
    )


def test_a_gp_in_training_notifies_under_a_supervisor() -> None:
    with pytest.raises(MeshError) as err:
        require_supervisor(caller(TRAINEE), "")
    assert (err.value.code, err.value.violations[0].field) == (100, "supervisor_inami")
    require_supervisor(caller(TRAINEE), GP)
    require_supervisor(caller(GP), "")


def test_throttle_lets_a_burst_through_then_refuses_with_retry_info() -> None:
    now = [0.0]
    throttle = Throttle(ThrottleConfig(rate=2, burst=5), monotonic=lambda: now[0])
    for _ in range(5):
        throttle.take(GP)
    with pytest.raises(MeshError) as err:
        throttle.take(GP)
    assert err.value.status.name == "RESOURCE_EXHAUSTED"
    assert err.value.retry_after_seconds == pytest.approx(0.5)
    throttle.take(SPECIALIST)  # others unaffected
    now[0] += 0.5
    throttle.take(GP)


def test_breaker_opens_then_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(3, 2.0, monotonic=lambda: now[0])
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert not breaker.allow()
    now[0] += 2.1
    assert breaker.allow()
    assert not breaker.allow()  # only one trial while half-open
    breaker.success()
    assert breaker.allow()


# --- the verified-token cache ---------------------------------------------------------------------------


async def test_the_cache_verifies_a_token_once_and_still_refuses_it_when_revoked_or_expired() -> None:
    clock = FixedClock(NOW)
    verifier = CachingTokenVerifier(Keys(), clock)
    text = token()
    first = await verifier.verify(text)
    for _ in range(5):
        assert await verifier.verify(text) is first
    assert (verifier.misses, verifier.cached) == (1, 1)
    other = token(sid="s2")
    await verifier.verify(other)
    assert verifier.misses == 2

    # Revoked: refused at once, although it was verified before, and dropped from the cache.
    verifier.revoke(auth_pb2.Revocation(session_id="s1", sequence=1))
    assert await reason_of(verifier, text) == "REVOKED"
    assert verifier.cached == 1
    assert (await verifier.verify(other)).session_id == "s2"

    # Expired (past the leeway): refused, although it verified an hour ago.
    clock.advance(dt.timedelta(hours=1, seconds=31))
    assert await reason_of(verifier, other) == "EXPIRED"
    assert verifier.cached == 0


async def test_the_cache_is_bounded_and_emptied_when_the_keys_are_fetched_again() -> None:
    clock = FixedClock(NOW)
    keys = Keys()
    verifier = CachingTokenVerifier(keys, clock, max_cached=3, refresh_interval=0)
    texts = [token(sid=f"s{i}") for i in range(5)]
    for text in texts:
        await verifier.verify(text)
    assert verifier.cached == 3
    await verifier.verify(texts[-1])  # the newest are kept
    assert verifier.misses == 5
    await verifier.verify(texts[0])  # the oldest went
    assert verifier.misses == 6

    # eHealth no longer publishes k1: once the keys are fetched again, no kept token passes unverified.
    keys.keys = []
    await verifier.refresh_keys(force=True)
    assert verifier.cached == 0
    assert await reason_of(verifier, texts[-1]) == "UNKNOWN_KEY"

    keys.keys = [auth_pb2.SigningKey(key_id="k1", algorithm="EdDSA", public_key_pem=pem(KEY))]
    await verifier.verify(texts[0])
    assert verifier.cached == 1
    clock.advance(dt.timedelta(hours=2))  # expired entries go with the periodic clean-up
    verifier.forget_expired()
    assert verifier.cached == 0


# --- each RPC's throttle and audit, as the trust table declares them (hub/policy.py) ----------------------


class Rows:
    """An audit writer that keeps the rows it is given."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], *, awaited: bool = False) -> None:
        self.rows.append(row)

    async def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


class Lists:
    """The patient-list worker: answers, or fails as an insurer down would."""

    def __init__(self) -> None:
        self.failure: MeshError | None = None

    async def post(self, context: Any, year: int, insurers: list[str]) -> dmg_pb2.TechnicalAck:
        if self.failure is not None:
            raise self.failure
        return dmg_pb2.TechnicalAck(reference="t")


def policy_core(burst: int = 10) -> HubCore:
    audit = AuditLog(create_async_engine("sqlite+aiosqlite://"), FixedClock(NOW))
    audit.writer = Rows()  # type: ignore[assignment]
    fields: dict[str, Any] = dict.fromkeys(
        ("sessions", "verifier", "index", "ehealth", "relations", "notifier", "abuse")
    )
    return HubCore(
        clock=FixedClock(NOW),
        throttle=Throttle(ThrottleConfig(rate=0, burst=burst), monotonic=lambda: 0.0),
        oas=dict.fromkeys(("100", "200", "300", "400")),  # type: ignore[arg-type]
        audit=audit,
        lists=Lists(),  # type: ignore[arg-type]
        **fields,
    )


def declaring(method: str, throttle: Throttling | None, audit: Auditing | None) -> TrustTable:
    """The trust table with ``method`` declaring ``throttle`` and ``audit`` instead."""
    policy = dataclasses.replace(TABLE.policies[method], throttle=throttle, audit=audit)
    return dataclasses.replace(TABLE, policies={**TABLE.policies, method: policy})


def patient_list(*insurers: str) -> mbx.PostPatientListRequest:
    return mbx.PostPatientListRequest(
        requester_reference="list-1", reference_date=to_proto(NOW.date()), insurer_codes=insurers
    )


async def post(servicer: MailboxServicer, request: mbx.PostPatientListRequest) -> Any:
    _session.set(caller(GP))  # as the trust interceptor leaves it
    handler: Any = servicer.PostPatientList
    return await handler(request, None)


def tokens_left(core: HubCore) -> float:
    return core.throttle._buckets[GP][0] if GP in core.throttle._buckets else core.throttle.config.burst


@pytest.mark.parametrize(
    ("throttle", "taken"), [(Throttling.INSURER, 3), (Throttling.CALL, 1), (Throttling.NONE, 0)]
)
async def test_a_method_takes_the_tokens_its_table_declares(throttle: Throttling, taken: int) -> None:
    core = policy_core()
    table = declaring(PATIENT_LIST, throttle, Auditing.CALL)
    await post(MailboxServicer(core, table), patient_list("100", "200", "300"))
    assert tokens_left(core) == 10 - taken


async def test_a_patient_list_pays_per_insurer_records_them_and_gets_them_back_when_not_its_fault() -> None:
    core = policy_core()
    servicer = MailboxServicer(core)  # the real table: one token per insurer asked
    await post(servicer, patient_list("100", "200", "300"))
    await post(servicer, patient_list())  # none asked: every insurer served (four here)
    assert tokens_left(core) == 10 - 3 - 4
    rows: Any = core.audit.writer
    assert [(r["rpc"], r["insurer_code"], r["requester_reference"]) for r in rows.rows] == [
        ("PostPatientList", "100,200,300", "list-1"),
        ("PostPatientList", "100,200,300,400", "list-1"),
    ]
    core.lists.failure = unavailable("OA_UNAVAILABLE", "down")  # type: ignore[attr-defined]
    with pytest.raises(MeshError) as err:
        await post(servicer, patient_list("100", "200"))
    assert err.value.metadata["requester_reference"] == "list-1"
    assert tokens_left(core) == 3  # given back
    core.lists.failure = permission_denied("NOPE", "refused")  # type: ignore[attr-defined]
    with pytest.raises(MeshError):
        await post(servicer, patient_list("100", "200"))
    assert tokens_left(core) == 1  # the caller's fault: kept
    with pytest.raises(MeshError) as err:
        await post(servicer, patient_list("100", "999"))  # a bad request costs nothing
    assert (err.value.status.name, tokens_left(core)) == ("INVALID_ARGUMENT", 1)
    with pytest.raises(MeshError) as err:
        await post(servicer, patient_list("100", "200"))
    assert (err.value.reason, tokens_left(core)) == ("THROTTLED", 1)


@pytest.mark.parametrize(
    ("audit", "rows_if_ok", "rows_if_failed"),
    [(Auditing.CALL, 1, 1), (Auditing.FAILURES, 0, 1), (Auditing.NONE, 0, 0)],
)
async def test_a_method_writes_the_audit_rows_its_table_declares(
    audit: Auditing, rows_if_ok: int, rows_if_failed: int
) -> None:
    core = policy_core()
    servicer = MailboxServicer(core, declaring(PATIENT_LIST, Throttling.INSURER, audit))
    rows: Any = core.audit.writer
    await post(servicer, patient_list("100"))
    assert len(rows.rows) == rows_if_ok
    with pytest.raises(MeshError):
        await post(servicer, patient_list("999"))
    assert len(rows.rows) == rows_if_ok + rows_if_failed
    # the call was handled: the trust interceptor's record of it adds no row either
    assert core.audit.observe(CallRecord(PATIENT_LIST, Peer.from_name("client"), caller(GP), "OK")) is None


def test_a_hub_method_without_a_throttle_and_audit_is_not_served() -> None:
    with pytest.raises(ValueError, match="declares no throttle and audit"):
        MailboxServicer(policy_core(), declaring(PATIENT_LIST, None, None))
    table = dataclasses.replace(
        TABLE, policies={m: p for m, p in TABLE.policies.items() if m != PATIENT_LIST}
    )
    with pytest.raises(ValueError, match="not in the trust table"):
        MailboxServicer(policy_core(), table)


class Excluding:
    """The abuse control, excluding every provider."""

    def admit(self, provider: str, now: dt.datetime) -> None:
        raise permission_denied("SYSTEMATIC_CONSULTATION_EXCLUDED", "excluded")


async def test_the_request_is_parsed_then_guarded_before_the_throttle_is_taken() -> None:
    """An insurability call: a bad request is INVALID_ARGUMENT even from an excluded provider, and an
    excluded provider's call costs no token (its table declares one per call)."""
    core = policy_core()
    core.abuse = Excluding()  # type: ignore[assignment]
    handler: Any = InsurabilityServicer(core).GetMemberData
    _session.set(caller(GP))
    patient = common_pb2.PatientSelector(niss=make_niss(dt.date(1980, 1, 2), 5))
    with pytest.raises(MeshError) as err:
        await handler(ins.GetMemberDataRequest(requester_reference="m-1"), None)
    assert err.value.status.name == "INVALID_ARGUMENT"
    with pytest.raises(MeshError) as err:
        await handler(ins.GetMemberDataRequest(requester_reference="m-2", patient=patient), None)
    assert (err.value.reason, err.value.metadata["requester_reference"]) == (
        "SYSTEMATIC_CONSULTATION_EXCLUDED",
        "m-2",
    )
    assert tokens_left(core) == 10
    rows: Any = core.audit.writer
    assert [(r["rpc"], r["outcome"]) for r in rows.rows] == [
        ("GetMemberData", "INVALID_ARGUMENT"),
        ("GetMemberData", "PERMISSION_DENIED"),
    ]


class NoDeadline:
    """A servicer context without a deadline."""

    def time_remaining(self) -> float | None:
        return None


class Refusing:
    """An insurer node refusing every call (the caller's fault: the tokens are kept)."""

    def __init__(self, code: str) -> None:
        self.insurer_code = code

    async def call(self, attempt: Any, remaining: float | None) -> Any:
        raise permission_denied("NOPE", "refused")


async def test_an_invoice_batch_pays_one_token_per_insurer_its_lines_are_routed_to() -> None:
    core = policy_core()
    core.oas = {code: Refusing(code) for code in ("100", "200")}  # type: ignore[misc]
    core.index = RoutingIndex()
    on = NOW.date()
    patients = [make_niss(dt.date(1970, 1, 1), n) for n in (1, 2, 3, 4)]
    for niss, code in zip(patients, ("200", "100", "200"), strict=False):  # the fourth: no insurer
        core.index.replace(int(niss), code, [make_span(code, on - dt.timedelta(days=30), None)])
    servicer = InvoicingServicer(core)
    servicer._stubs = {"100": object(), "200": object()}  # type: ignore[dict-item]
    lines = [
        inv.InvoiceLine(
            line_number=n + 1,
            patient_niss=niss,
            provider_inami=GP,
            contact_date=to_proto(on),
            nomenclature_code="101076",
            amount=common_pb2.Money(currency_code="EUR", amount="25.00"),
        )
        for n, niss in enumerate(patients)
    ]
    _session.set(caller(GP))
    handler: Any = servicer.PostInvoiceBatch
    with pytest.raises(MeshError) as err:
        await handler(inv.PostInvoiceBatchRequest(requester_reference="b-1", lines=lines), NoDeadline())
    assert (err.value.reason, tokens_left(core)) == ("NOPE", 10 - 2)
    rows: Any = core.audit.writer
    assert [(r["rpc"], r["insurer_code"]) for r in rows.rows] == [("PostInvoiceBatch", "100,200")]


def test_a_call_no_wrapper_handled_has_its_row_as_its_rpc_declares_and_a_refusal_always() -> None:
    """The sandbox's services the hub serves (no policy wrapper): the interceptor's record is the only row,
    and the table's audit decides it, as for the hub's own RPCs; a call the trust model refused has one."""
    clock = "/mycarenet.sandbox.v1.ProcessClockService/GetOffset"
    assert TABLE.policies[clock].audit is Auditing.NONE

    def rows(table: TrustTable, outcome: str, *, admitted: bool) -> list[str]:
        audit = AuditLog(create_async_engine("sqlite+aiosqlite://"), FixedClock(NOW), table=table)
        audit.writer = Rows()  # type: ignore[assignment]
        audit.observe(CallRecord(clock, Peer.from_name("admin"), None, outcome, admitted=admitted))
        return [row["outcome"] for row in audit.writer.rows]  # type: ignore[attr-defined]

    assert rows(TABLE, "OK", admitted=True) == []
    assert rows(TABLE, "INVALID_ARGUMENT", admitted=True) == []
    assert rows(TABLE, "PERMISSION_DENIED", admitted=False) == ["PERMISSION_DENIED"]
    failures = declaring(clock, Throttling.NONE, Auditing.FAILURES)
    assert rows(failures, "OK", admitted=True) == []
    assert rows(failures, "INVALID_ARGUMENT", admitted=True) == ["INVALID_ARGUMENT"]
    assert rows(declaring(clock, Throttling.NONE, Auditing.CALL), "OK", admitted=True) == ["OK"]
