"""The connections a scenario is played with, from a cluster description (``<data>/cluster.json``): the
administrator's client (and its test clock), provider-software clients (the ``client`` certificate) and each
insurer's invoicing intake and tariff table (the ``backoffice`` certificate)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mycarenet_sdk.admin import admin_from_cluster
from mycarenet_sdk.client import Client, connect

from mycarenet_core.channels import client_credentials, open_channel
from mycarenet_core.gen.mycarenet.oa.v1 import (
    intake_service_pb2_grpc,
    reference_data_service_pb2,
    reference_data_service_pb2_grpc,
)
from mycarenet_scenario.runner import MeshAccess


def _address(desc: Mapping[str, Any], role: str) -> str:
    return next(str(p["address"]) for p in desc["processes"] if p["role"] == role)


@asynccontextmanager
async def cluster_access(desc: Mapping[str, Any], *, wait_seconds: float = 30.0) -> AsyncIterator[MeshAccess]:
    """A :class:`MeshAccess` to the cluster ``desc`` describes; every channel closed on exit."""
    tls = desc.get("tls") or {}

    def files(kind: str) -> tuple[Path, Path, Path] | None:
        return (Path(tls["ca"]), Path(tls[f"{kind}_cert"]), Path(tls[f"{kind}_key"])) if tls else None

    def new_client() -> Client:
        ca, cert, key = files("client") or (None, None, None)
        return connect(
            hub=_address(desc, "hub"), ehealth=_address(desc, "ehealth"), ca=ca, cert=cert, key=key
        )

    backoffice = files("backoffice")
    credentials = client_credentials(*backoffice) if backoffice else None
    channels = {
        str(p["oa_code"]): open_channel(str(p["address"]), credentials=credentials, identity="backoffice")
        for p in desc["processes"]
        if p["role"] == "oa"
    }
    admin = admin_from_cluster(desc)

    async def tariff_years() -> set[int]:
        if not channels:
            return set()
        stub: Any = reference_data_service_pb2_grpc.ReferenceDataServiceStub(next(iter(channels.values())))
        reply = await stub.ListTariffs(reference_data_service_pb2.ListTariffsRequest(), timeout=wait_seconds)
        return {int(t.year) for t in reply.tariffs}

    try:
        yield MeshAccess(
            admin=admin,
            clock=admin,
            new_client=new_client,
            intake={c: intake_service_pb2_grpc.InvoicingIntakeServiceStub(ch) for c, ch in channels.items()},
            wait_seconds=wait_seconds,
            tariff_years=tariff_years,
        )
    finally:
        await admin.close()
        for channel in channels.values():
            await channel.close(None)


__all__ = ["cluster_access"]
