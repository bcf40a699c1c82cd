"""The async client."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry import trace

from mycarenet_core.channels import client_credentials, open_channel
from mycarenet_core.errors import MeshError, parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import (
    dmg_pb2,
    dmg_service_pb2,
    dmg_service_pb2_grpc,
    mailbox_service_pb2,
    mailbox_service_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, auth_pb2_grpc
from mycarenet_core.telemetry import Telemetry, message_links

T = TypeVar("T")

SUBJECT_KINDS = {
    "provider": auth_pb2.SUBJECT_KIND_PROVIDER,
    "organisation": auth_pb2.SUBJECT_KIND_ORGANISATION,
    "person": auth_pb2.SUBJECT_KIND_PERSON,
    "company": auth_pb2.SUBJECT_KIND_COMPANY,
}


class MyCareNetError(MeshError):
    """A call failed: ``status`` (grpc.StatusCode), ``reason``, ``codes`` (MyCareNet), ``violations``."""

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> MyCareNetError:
        parsed = parse_rpc_error(error)
        return cls(
            parsed.status,
            parsed.reason,
            parsed.message,
            parsed.code,
            parsed.violations,
            parsed.metadata,
            parsed.retry_after_seconds,
        )


@dataclass(frozen=True)
class Session:
    """An eHealth session: the token and what it says."""

    token: str
    session_id: str
    expire_time: dt.datetime
    subject_id: str
    principal_inami: str | None = None


def new_reference() -> str:
    """A fresh requester reference."""
    return f"sdk-{uuid.uuid4().hex[:20]}"


def _date(value: dt.date | None) -> common_pb2.Date | None:
    return None if value is None else common_pb2.Date(year=value.year, month=value.month, day=value.day)


def _patient(
    niss: str | None, member: tuple[str, str] | None, sex: int = common_pb2.SEX_UNSPECIFIED
) -> common_pb2.PatientSelector:
    if (niss is None) == (member is None):
        raise ValueError("give either niss or member=(mutuality_code, registration_number)")
    if niss is not None:
        return common_pb2.PatientSelector(niss=niss, sex=sex)  # type: ignore[arg-type]
    assert member is not None
    return common_pb2.PatientSelector(
        member=common_pb2.MemberNumber(mutuality_code=member[0], registration_number=member[1]),
        sex=sex,  # type: ignore[arg-type]
    )


def load_private_key(key: Ed25519PrivateKey | bytes | str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an object, PEM bytes/text, or a PEM file path."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, Path) or (isinstance(key, str) and not key.lstrip().startswith("-----")):
        key = Path(key).read_bytes()
    data = key.encode() if isinstance(key, str) else key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError("the key is not an Ed25519 private key")
    return loaded


class Client:
    """An async client of the hub (DMG + mailbox) and of eHealth (login)."""

    def __init__(
        self,
        *,
        hub: str,
        ehealth: str,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        interceptors: Sequence[Any] = (),
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._hub_channel = open_channel(hub, credentials=credentials, interceptors=interceptors)
        self._ehealth_channel = open_channel(ehealth, credentials=credentials, interceptors=interceptors)
        self._tracer = tracer
        self._dmg = dmg_service_pb2_grpc.DmgServiceStub(self._hub_channel)
        self._mailbox = mailbox_service_pb2_grpc.MailboxServiceStub(self._hub_channel)
        self._auth = auth_pb2_grpc.AuthServiceStub(self._ehealth_channel)
        self.timeout = timeout
        self.session: Session | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._hub_channel.close(None)
        await self._ehealth_channel.close(None)

    async def _call(self, fn: Callable[..., Awaitable[T]], request: Any, *, auth: bool = True) -> T:
        metadata: list[tuple[str, str]] = []
        if auth:
            if self.session is None:
                raise MyCareNetError(grpc.StatusCode.UNAUTHENTICATED, "NOT_LOGGED_IN", "call login() first")
            metadata.append(("authorization", f"Bearer {self.session.token}"))
        try:
            return await fn(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise MyCareNetError.from_rpc_error(error) from None

    # --- eHealth -------------------------------------------------------------------------------------

    async def login(
        self,
        subject_id: str,
        private_key: Ed25519PrivateKey | bytes | str | Path,
        *,
        kind: str = "provider",
        principal_inami: str | None = None,
        lifetime: dt.timedelta | None = None,
    ) -> Session:
        """Authenticate by signing an eHealth challenge; keeps the session for the next calls."""
        key = load_private_key(private_key)
        challenge = await self._call(
            self._auth.CreateChallenge,
            auth_pb2.CreateChallengeRequest(
                subject=auth_pb2.Subject(kind=SUBJECT_KINDS[kind], id=subject_id)
            ),
            auth=False,
        )
        reply = await self._call(
            self._auth.CreateSession,
            auth_pb2.CreateSessionRequest(
                challenge_id=challenge.challenge_id,
                signature=key.sign(challenge.nonce),
                principal_inami=principal_inami or "",
                lifetime_seconds=int(lifetime.total_seconds()) if lifetime else 0,
            ),
            auth=False,
        )
        self.session = Session(
            token=reply.token,
            session_id=reply.session_id,
            expire_time=reply.expire_time.ToDatetime(tzinfo=dt.UTC),
            subject_id=subject_id,
            principal_inami=principal_inami,
        )
        return self.session

    async def logout(self) -> None:
        """End the session at eHealth."""
        if self.session is not None:
            await self._call(self._auth.Logout, auth_pb2.LogoutRequest(token=self.session.token), auth=False)
            self.session = None

    # --- DMG -----------------------------------------------------------------------------------------

    async def consult(
        self,
        niss: str | None = None,
        *,
        member: tuple[str, str] | None = None,
        date: dt.date | None = None,
        reference: str | None = None,
    ) -> dmg_service_pb2.ConsultDmgResponse:
        """Consult a patient's DMG right at ``date`` (default: the hub's today)."""
        request = dmg_service_pb2.ConsultDmgRequest(
            requester_reference=reference or new_reference(),
            patient=_patient(niss, member),
            request_date=_date(date),
        )
        return await self._call(self._dmg.ConsultDmg, request)

    async def notify(
        self,
        niss: str | None = None,
        *,
        member: tuple[str, str] | None = None,
        contact_date: dt.date,
        nomenclature_code: str,
        contact_time: str = "",
        supervisor_inami: str = "",
        reference: str | None = None,
    ) -> dmg_service_pb2.NotifyDmgResponse:
        """Notify the opening or takeover of a DMG. Retrying with the same ``reference`` is safe."""
        request = dmg_service_pb2.NotifyDmgRequest(
            requester_reference=reference or new_reference(),
            patient=_patient(niss, member),
            contact_date=_date(contact_date),
            contact_time=contact_time,
            nomenclature_code=nomenclature_code,
            supervisor_inami=supervisor_inami,
        )
        return await self._call(self._dmg.NotifyDmg, request)

    async def enrol(
        self,
        *,
        iban: str,
        bic: str,
        holder_name: str,
        insurer_codes: Sequence[str] = (),
        reference: str | None = None,
    ) -> dmg_service_pb2.EnrolDmgResponse:
        """Enrol for the electronic DMG at the given insurers (all when empty)."""
        request = dmg_service_pb2.EnrolDmgRequest(
            requester_reference=reference or new_reference(),
            bank_account=common_pb2.BankAccount(iban=iban, bic=bic, holder_name=holder_name),
            insurer_codes=list(insurer_codes),
        )
        return await self._call(self._dmg.EnrolDmg, request)

    # --- asynchronous channel ------------------------------------------------------------------------

    async def post_patient_list(
        self, *, reference_date: dt.date, insurer_codes: Sequence[str] = (), reference: str | None = None
    ) -> mailbox_service_pb2.PostPatientListResponse:
        """Ask for the list of patients whose DMG you hold in the year of ``reference_date``."""
        request = mailbox_service_pb2.PostPatientListRequest(
            requester_reference=reference or new_reference(),
            reference_date=_date(reference_date),
            insurer_codes=list(insurer_codes),
        )
        return await self._call(self._mailbox.PostPatientList, request)

    async def get_messages(
        self, *, kinds: Sequence[int] = (), page_size: int = 0, page_token: str = ""
    ) -> mailbox_service_pb2.GetMessagesResponse:
        """One page of pending messages, oldest first."""
        request = mailbox_service_pb2.GetMessagesRequest(
            kinds=list(kinds),  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
        )
        if self._tracer is None:
            return await self._call(self._mailbox.GetMessages, request)
        # The pick-up links to the request that caused each message (its W3C trace context).
        with self._tracer.start_as_current_span("mailbox.receive", kind=trace.SpanKind.CONSUMER) as span:
            reply = await self._call(self._mailbox.GetMessages, request)
            for link in message_links(reply.messages):
                span.add_link(link.context, link.attributes)
            span.set_attribute("messaging.batch.message_count", len(reply.messages))
            return reply

    async def all_messages(self, *, kinds: Sequence[int] = ()) -> list[dmg_pb2.MailboxMessage]:
        """Every pending message (all pages)."""
        out: list[dmg_pb2.MailboxMessage] = []
        token = ""
        while True:
            page = await self.get_messages(kinds=kinds, page_token=token)
            out.extend(page.messages)
            token = page.next_page_token
            if not token:
                return out

    async def watch_messages(self, *, kinds: Sequence[int] = ()) -> AsyncIterator[dmg_pb2.MailboxMessage]:
        """Pending messages, then each new one as it arrives (until the stream ends or you stop)."""
        if self.session is None:
            raise MyCareNetError(grpc.StatusCode.UNAUTHENTICATED, "NOT_LOGGED_IN", "call login() first")
        call = self._mailbox.WatchMessages(
            mailbox_service_pb2.WatchMessagesRequest(kinds=list(kinds)),  # type: ignore[arg-type]
            metadata=[("authorization", f"Bearer {self.session.token}")],
        )
        try:
            async for event in call:
                if self._tracer is not None:
                    self._tracer.start_span(
                        "mailbox.receive",
                        kind=trace.SpanKind.CONSUMER,
                        links=message_links([event.message]),
                        attributes={"messaging.message.id": event.message.message_id},
                    ).end()
                yield event.message
        except grpc.RpcError as error:
            raise MyCareNetError.from_rpc_error(error) from None
        finally:
            call.cancel()

    async def confirm(
        self, message_ids: Sequence[str] = (), *, content_hashes: Sequence[str] = ()
    ) -> mailbox_service_pb2.ConfirmMessagesResponse:
        """Confirm messages you have stored; they are never returned again."""
        request = mailbox_service_pb2.ConfirmMessagesRequest(
            message_ids=list(message_ids), content_hashes=list(content_hashes)
        )
        return await self._call(self._mailbox.ConfirmMessages, request)


def connect(
    *,
    hub: str,
    ehealth: str,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    timeout: float = 10.0,
    telemetry: Telemetry | None = None,
) -> Client:
    """A client of the mesh; mutual TLS when ``ca``, ``cert`` and ``key`` are given. Use ``async with``.

    With ``telemetry`` (:func:`mycarenet_core.telemetry.setup`), every call is a client span whose W3C
    context the hub continues (one trace down to the OA's database), and mailbox pick-ups are
    ``mailbox.receive`` spans linked to the requests that caused the messages.
    """
    credentials = None
    if ca and cert and key:
        credentials = client_credentials(ca, cert, key)
    return Client(
        hub=hub,
        ehealth=ehealth,
        credentials=credentials,
        timeout=timeout,
        interceptors=telemetry.client_interceptors if telemetry else (),
        tracer=telemetry.tracer if telemetry else None,
    )
