"""Bad input never turns into INTERNAL, UNKNOWN or an unbounded answer (issue 17):

* an error's trailers stay small whatever the request held (a megabyte reference, thousands of violations);
* bytes that are not a protobuf message of the method's type are INVALID_ARGUMENT, after the trust check;
* 50 concurrent PostPatientList with one requester reference all get the first one's tAck, on SQLite and
  PostgreSQL (the losers of the race meet the unique index);
* the eHealth inputs that used to fail inside: a huge token lifetime (capped), keys that are not Ed25519.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, x25519
from sqlmodel import select

from ehealth import inputs
from hub.mailbox import MailboxNotifier
from hub.models import HubBase, ListRequest
from hub.patient_list import ListPolicy, PatientListWorker
from mycarenet_core.clock import FixedClock
from mycarenet_core.codes import McnCode
from mycarenet_core.db import create_engine, create_schema, session_factory, transaction
from mycarenet_core.errors import FieldViolation, MeshError, invalid_argument, parse_rpc_error
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.gen.mycarenet.sandbox.v1 import clock_pb2, clock_pb2_grpc
from mycarenet_core.identifiers import make_niss
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.validation import encode_page_token
from tests.trust.fuzz_mesh import documented_limits

NOW = dt.datetime(2025, 3, 4, 9, 0, tzinfo=dt.UTC)
PERSON = make_niss(dt.date(1980, 5, 5), 21)


# --- errors stay small ----------------------------------------------------------------------------------


def test_an_error_never_echoes_unbounded_input() -> None:
    huge = "x" * 1_000_000
    many = [FieldViolation(f"messages[{i}].message_id", McnCode.BAD_FORMAT, "too long") for i in range(5000)]
    error = invalid_argument([FieldViolation(huge, McnCode.BAD_FORMAT, huge), *many]).with_metadata(
        requester_reference=huge
    )
    status = error.to_status_proto()
    assert len(status.SerializeToString()) < 4096
    assert len(status.message) <= 512
    assert status.message.startswith("5001 field violations")
    grpc_status = error.to_grpc_status()
    assert sum(len(v) for _k, v in grpc_status.trailing_metadata) < 4096


def test_a_short_error_is_unchanged() -> None:
    error = invalid_argument([FieldViolation("requester_reference", 111, "at most 200 characters")])
    error = error.with_metadata(requester_reference="ref-1")
    status = error.to_status_proto()
    assert status.message == "requester_reference: at most 200 characters (111)"
    assert "ref-1" in str(status.details[0])


# --- documented maxima ------------------------------------------------------------------------------------


def test_every_string_and_repeated_field_documents_its_maximum() -> None:
    limits, missing = documented_limits()
    assert len(limits) > 150
    assert not missing, (
        "fields without a documented maximum (at most N characters/items/bytes):\n" + "\n".join(missing)
    )


# --- undecodable requests --------------------------------------------------------------------------------


class Clock(clock_pb2_grpc.ProcessClockServiceServicer):
    async def SetOffset(
        self, request: clock_pb2.SetOffsetRequest, context: object
    ) -> clock_pb2.SetOffsetResponse:
        return clock_pb2.SetOffsetResponse()

    async def GetOffset(
        self, request: clock_pb2.GetOffsetRequest, context: object
    ) -> clock_pb2.GetOffsetResponse:
        return clock_pb2.GetOffsetResponse()


async def test_bytes_that_are_not_the_request_message_are_invalid_argument() -> None:
    server = MeshServer(
        "t",
        [
            Service(
                clock_pb2_grpc.add_ProcessClockServiceServicer_to_server,
                Clock(),
                "mycarenet.sandbox.v1.ProcessClockService",
            )
        ],
    )
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/mycarenet.sandbox.v1.ProcessClockService/GetOffset",
                request_serializer=lambda raw: raw,
                response_deserializer=lambda raw: raw,
            )
            for raw in (b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x08"):
                try:
                    await call(raw, timeout=5)
                except grpc.aio.AioRpcError as failed:
                    error = parse_rpc_error(failed)
                    assert error.status is grpc.StatusCode.INVALID_ARGUMENT, raw
                    assert error.violations[0].field == "request"
                    assert error.code == McnCode.BAD_FORMAT
                else:
                    raise AssertionError(f"{raw!r} was accepted")
            answer = await call(b"", timeout=5)  # an empty message is a valid one
            assert answer == b""
    finally:
        await server.stop(0)


# --- concurrent posts of one patient list ------------------------------------------------------------------


async def test_fifty_concurrent_posts_of_one_reference_get_one_tack(database_url: str) -> None:
    engine = create_engine(database_url)
    await create_schema(engine, HubBase.metadata)
    sessions = session_factory(engine)
    worker = PatientListWorker(sessions, {}, MailboxNotifier(), ListPolicy(retry_window=0.1), FixedClock(NOW))
    context = context_pb2.RequestContext(requester_inami="10000101004", requester_reference="same-ref")
    try:
        answers = await asyncio.gather(
            *(worker.post(context, 2025, ["100"]) for _ in range(50)), return_exceptions=True
        )
        failures = [a for a in answers if isinstance(a, BaseException)]
        assert not failures, failures[:3]
        assert len({a.reference for a in answers if not isinstance(a, BaseException)}) == 1
        async with transaction(sessions) as session:
            rows = (await session.execute(select(ListRequest))).scalars().all()
        assert len(rows) == 1
    finally:
        await worker.stop()
        await engine.dispose()


# --- eHealth inputs -----------------------------------------------------------------------------------------


def test_a_huge_lifetime_is_capped_not_an_overflow() -> None:
    for lifetime in (2**63 - 1, 10**12, 43_201):
        parsed = inputs.session_request(
            auth_pb2.CreateSessionRequest(challenge_id="c", signature=b"s", lifetime_seconds=lifetime)
        )
        assert parsed.lifetime_seconds == 12 * 3600


PrivateKey = ed448.Ed448PrivateKey | x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey


def pem(key: PrivateKey) -> str:
    encoded: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded.decode()


def test_keys_that_are_not_ed25519_are_field_violations() -> None:
    keys: list[PrivateKey] = [
        ed448.Ed448PrivateKey.generate(),
        x25519.X25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
    ]
    for key in keys:
        request = auth_pb2.RegisterCredentialRequest(
            subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PERSON, id=PERSON),
            public_key_pem=pem(key),
        )
        with pytest.raises(MeshError) as raised:
            inputs.credential_request(request)
        assert raised.value.status is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in raised.value.violations] == ["public_key_pem"]
        assert raised.value.code == McnCode.VALUE_NOT_ALLOWED


def test_a_revocations_page_token_of_another_shape_is_a_field_violation() -> None:
    for key in (["x"], [-1], [True]):
        request = auth_pb2.ListRevocationsRequest(page_token=encode_page_token(key))
        with pytest.raises(MeshError) as raised:
            inputs.revocations_request(request)
        assert [(v.field, v.code) for v in raised.value.violations] == [("page_token", McnCode.BAD_FORMAT)]
    good = auth_pb2.ListRevocationsRequest(page_token=encode_page_token([5]), after_sequence=2)
    assert inputs.revocations_request(good) == (5, 500)
