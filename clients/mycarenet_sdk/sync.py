"""Thin blocking wrappers over :class:`~mycarenet_sdk.client.Client` and
:class:`~mycarenet_sdk.admin.AdminClient` for scripts and notebooks."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2, dmg_service_pb2, mailbox_service_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    cadastre_pb2,
    mandate_pb2,
    therapeutic_relation_pb2,
)
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2
from mycarenet_sdk.admin import AdminClient, CadastrePosition, ClockState, ProviderAdded, connect_admin
from mycarenet_sdk.client import Client, InvoiceLine, Session, connect


class SyncClient:
    """Same methods as :class:`Client`, blocking. Runs its own event loop; not for use inside one."""

    def __init__(self, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._client: Client = self._runner.run(self._make(kwargs))

    @staticmethod
    async def _make(kwargs: dict[str, Any]) -> Client:
        return connect(**kwargs)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    @property
    def session(self) -> Session | None:
        return self._client.session

    def login(self, subject_id: str, private_key: Any, **kwargs: Any) -> Session:
        return self._runner.run(self._client.login(subject_id, private_key, **kwargs))

    def logout(self) -> None:
        self._runner.run(self._client.logout())

    def consult(self, niss: str | None = None, **kwargs: Any) -> dmg_service_pb2.ConsultDmgResponse:
        return self._runner.run(self._client.consult(niss, **kwargs))

    def notify(self, niss: str | None = None, **kwargs: Any) -> dmg_service_pb2.NotifyDmgResponse:
        return self._runner.run(self._client.notify(niss, **kwargs))

    def enrol(self, **kwargs: Any) -> dmg_service_pb2.EnrolDmgResponse:
        return self._runner.run(self._client.enrol(**kwargs))

    def post_invoices(
        self, lines: Sequence[InvoiceLine], **kwargs: Any
    ) -> invoicing_service_pb2.PostInvoiceBatchResponse:
        return self._runner.run(self._client.post_invoices(lines, **kwargs))

    def send_attest(self, niss: str, **kwargs: Any) -> invoicing_service_pb2.SendAttestResponse:
        return self._runner.run(self._client.send_attest(niss, **kwargs))

    def post_patient_list(
        self, *, reference_date: dt.date, **kwargs: Any
    ) -> mailbox_service_pb2.PostPatientListResponse:
        return self._runner.run(self._client.post_patient_list(reference_date=reference_date, **kwargs))

    def all_messages(self, *, kinds: Sequence[int] = ()) -> list[dmg_pb2.MailboxMessage]:
        return self._runner.run(self._client.all_messages(kinds=kinds))

    def confirm(
        self, message_ids: Sequence[str] = (), **kwargs: Any
    ) -> mailbox_service_pb2.ConfirmMessagesResponse:
        return self._runner.run(self._client.confirm(message_ids, **kwargs))

    def cadastre_entry(self) -> cadastre_pb2.GetProviderResponse:
        return self._runner.run(self._client.cadastre_entry())

    def revoke_credential(self, key: Any = None, **kwargs: Any) -> auth_pb2.RevokeCredentialResponse:
        return self._runner.run(self._client.revoke_credential(key, **kwargs))

    def register_relation(
        self, patient_niss: str, **kwargs: Any
    ) -> therapeutic_relation_pb2.TherapeuticRelation:
        return self._runner.run(self._client.register_relation(patient_niss, **kwargs))

    def revoke_relation(
        self, relation_id: str, **kwargs: Any
    ) -> therapeutic_relation_pb2.TherapeuticRelation:
        return self._runner.run(self._client.revoke_relation(relation_id, **kwargs))

    def list_relations(self, **kwargs: Any) -> list[therapeutic_relation_pb2.TherapeuticRelation]:
        return self._runner.run(self._client.list_relations(**kwargs))

    def give_mandate(
        self, mandatee_id: str, services: Sequence[str], **kwargs: Any
    ) -> mandate_pb2.CreateMandateResponse:
        return self._runner.run(self._client.give_mandate(mandatee_id, services, **kwargs))

    def revoke_mandate(self, mandate_id: str, **kwargs: Any) -> mandate_pb2.Mandate:
        return self._runner.run(self._client.revoke_mandate(mandate_id, **kwargs))

    def list_mandates(self, **kwargs: Any) -> list[mandate_pb2.Mandate]:
        return self._runner.run(self._client.list_mandates(**kwargs))


def connect_sync(
    *, hub: str, ehealth: str, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> SyncClient:
    """A blocking client of the mesh."""
    return SyncClient(hub=hub, ehealth=ehealth, ca=ca, cert=cert, key=key)


class SyncAdminClient:
    """Same methods as :class:`AdminClient`, blocking. Runs its own event loop; not for use inside one."""

    def __init__(self, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._admin: AdminClient = self._runner.run(self._make(kwargs))

    @staticmethod
    async def _make(kwargs: dict[str, Any]) -> AdminClient:
        return connect_admin(**kwargs)

    def __enter__(self) -> SyncAdminClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._admin.close())
        self._runner.close()

    def add_provider(self, inami: str, **kwargs: Any) -> ProviderAdded:
        return self._runner.run(self._admin.add_provider(inami, **kwargs))

    def get_provider(self, inami: str) -> cadastre_pb2.GetProviderResponse:
        return self._runner.run(self._admin.get_provider(inami))

    def add_organisation(self, inami: str, **kwargs: Any) -> cadastre_pb2.UpsertOrganisationResponse:
        return self._runner.run(self._admin.add_organisation(inami, **kwargs))

    def wait_for_cadastre(self, sequence: int, **kwargs: Any) -> dict[str, CadastrePosition]:
        return self._runner.run(self._admin.wait_for_cadastre(sequence, **kwargs))

    def cadastre_positions(self) -> dict[str, CadastrePosition]:
        return self._runner.run(self._admin.cadastre_positions())

    def register_credential(self, subject_id: str, **kwargs: Any) -> str:
        return self._runner.run(self._admin.register_credential(subject_id, **kwargs))

    def revoke_credential(self, subject_id: str, fingerprint_hex: str, **kwargs: Any) -> Any:
        return self._runner.run(self._admin.revoke_credential(subject_id, fingerprint_hex, **kwargs))

    def rotate_signing_key(self) -> auth_pb2.SigningKey:
        return self._runner.run(self._admin.rotate_signing_key())

    def register_relation(
        self, provider_inami: str, patient_niss: str, **kwargs: Any
    ) -> therapeutic_relation_pb2.TherapeuticRelation:
        return self._runner.run(self._admin.register_relation(provider_inami, patient_niss, **kwargs))

    def give_mandate(
        self, principal_inami: str, mandatee_id: str, services: Sequence[str], **kwargs: Any
    ) -> mandate_pb2.CreateMandateResponse:
        return self._runner.run(self._admin.give_mandate(principal_inami, mandatee_id, services, **kwargs))

    def add_patient(self, niss: str, **kwargs: Any) -> membership_service_pb2.UpsertMembersResponse:
        return self._runner.run(self._admin.add_patient(niss, **kwargs))

    def get_member(self, niss: str, *, insurer: str) -> membership_service_pb2.Member:
        return self._runner.run(self._admin.get_member(niss, insurer=insurer))

    def clock(self) -> ClockState:
        return self._runner.run(self._admin.clock())

    def set_clock(self, day: dt.date) -> ClockState:
        return self._runner.run(self._admin.set_clock(day))

    def advance_clock(self, days: int) -> ClockState:
        return self._runner.run(self._admin.advance_clock(days))

    def process_fault(self, process: str, action: str, seconds: float = 0.0) -> chaos_pb2.Fault:
        return self._runner.run(self._admin.process_fault(process, action, seconds))

    def link_fault(self, source: str, target: str, seconds: float, **kwargs: Any) -> chaos_pb2.Fault:
        return self._runner.run(self._admin.link_fault(source, target, seconds, **kwargs))

    def list_faults(self) -> list[chaos_pb2.Fault]:
        return self._runner.run(self._admin.list_faults())

    def clear_faults(self, fault_id: str | None = None) -> list[str]:
        return self._runner.run(self._admin.clear_faults(fault_id))


def connect_admin_sync(
    *,
    ehealth: str,
    insurers: Mapping[str, str] | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    sandbox: str | None = None,
) -> SyncAdminClient:
    """A blocking administrator's client (``sandbox``: a local cluster's sandbox server, for the test
    clock and chaos)."""
    return SyncAdminClient(ehealth=ehealth, insurers=insurers, ca=ca, cert=cert, key=key, sandbox=sandbox)
