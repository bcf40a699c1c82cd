"""Small request builders and error helpers for the hub's integration tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
import pytest

from mycarenet_core.dates import to_proto
from mycarenet_core.errors import MeshError, parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2 as pub
from tests.hub.mesh import TODAY

T = TypeVar("T")


def consult_request(
    niss: str, on: dt.date = TODAY, reference: str = "c-1", **extra: Any
) -> pub.ConsultDmgRequest:
    return pub.ConsultDmgRequest(
        requester_reference=reference,
        patient=common_pb2.PatientSelector(niss=niss),
        request_date=to_proto(on),
        **extra,
    )


def notify_request(
    niss: str, reference: str, on: dt.date = TODAY, code: str = "101010", **extra: Any
) -> pub.NotifyDmgRequest:
    return pub.NotifyDmgRequest(
        requester_reference=reference,
        patient=common_pb2.PatientSelector(niss=niss),
        contact_date=to_proto(on),
        nomenclature_code=code,
        **extra,
    )


async def rejected(call: Awaitable[Any]) -> MeshError:
    """The parsed error of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return parse_rpc_error(err.value)


async def ok(call: Awaitable[T]) -> T:
    return await call
