"""A thin blocking wrapper over :class:`~mycarenet_sdk.client.Client` for scripts and notebooks."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2, dmg_service_pb2, mailbox_service_pb2
from mycarenet_sdk.client import Client, Session, connect


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


def connect_sync(
    *, hub: str, ehealth: str, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> SyncClient:
    """A blocking client of the mesh."""
    return SyncClient(hub=hub, ehealth=ehealth, ca=ca, cert=cert, key=key)
