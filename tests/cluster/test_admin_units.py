"""The in-process pieces of the administrator's path: waiting until the insurers follow the cadastre (what
the seeder and `mycarenet admin provider add` do), and the credential keys (written private, fingerprinted
as eHealth does)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mycarenet_sdk import MyCareNetError, ensure_key_file, fingerprint, public_pem, wait_for_cadastre

from ehealth.tokens import fingerprint as ehealth_fingerprint
from ehealth.tokens import load_public_key
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd


class FakeInsurer:
    """GetCadastrePosition answers from a script: positions (applied, following) or a status code to fail
    with; the last answer repeats."""

    def __init__(self, *answers: tuple[int, bool] | grpc.StatusCode) -> None:
        self.answers: Iterator[tuple[int, bool] | grpc.StatusCode] = iter(answers)
        self.last: tuple[int, bool] | grpc.StatusCode = answers[0]
        self.calls = 0

    async def GetCadastrePosition(self, request: Any, **call: Any) -> Any:
        self.calls += 1
        self.last = next(self.answers, self.last)
        if isinstance(self.last, grpc.StatusCode):
            raise grpc.aio.AioRpcError(self.last, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")
        applied, following = self.last
        return rd.GetCadastrePositionResponse(applied_sequence=applied, following=following)


async def test_waits_until_every_insurer_applied_the_change() -> None:
    insurers: dict[str, Any] = {
        "100": FakeInsurer((40, True)),
        "300": FakeInsurer((3, True), (20, True), (41, True)),
        # Restarting: unreachable for a moment, then caught up.
        "500": FakeInsurer(grpc.StatusCode.UNAVAILABLE, (42, True)),
    }
    positions = await wait_for_cadastre(insurers, 40, seconds=10, poll=0.01)
    assert {c: p.applied_sequence for c, p in positions.items()} == {"100": 40, "300": 41, "500": 42}
    assert insurers["300"].calls == 3


async def test_an_insurer_that_does_not_follow_is_a_clear_error() -> None:
    insurers: dict[str, Any] = {
        "100": FakeInsurer((40, True)),
        "200": FakeInsurer((12, False)),
        "900": FakeInsurer(grpc.StatusCode.UNAVAILABLE),
    }
    with pytest.raises(MyCareNetError) as raised:
        await wait_for_cadastre(insurers, 40, seconds=0.2, poll=0.01)
    error = raised.value
    assert error.status is grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.reason == "CADASTRE_NOT_FOLLOWED"
    assert "200, 900" in error.message
    assert "200: at 12 of 40, NOT following eHealth's cadastre" in error.message
    assert "900: unreachable (UNAVAILABLE)" in error.message
    assert "100" not in error.message.split(":", 1)[1]


async def test_a_refusal_is_not_waited_out() -> None:
    insurers: dict[str, Any] = {"100": FakeInsurer(grpc.StatusCode.PERMISSION_DENIED)}
    with pytest.raises(MyCareNetError) as raised:
        await wait_for_cadastre(insurers, 1, seconds=30, poll=0.01)
    assert raised.value.status is grpc.StatusCode.PERMISSION_DENIED
    assert insurers["100"].calls == 1


def test_a_credential_key_is_written_private_and_fingerprinted_as_ehealth_does(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "19000122003.pem"
    key, created = ensure_key_file(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = ensure_key_file(path)
    assert not created_again
    assert public_pem(again) == public_pem(key)
    pem = public_pem(key)
    assert fingerprint(pem) == fingerprint(key) == ehealth_fingerprint(load_public_key(pem))
    assert fingerprint(Ed25519PrivateKey.generate()) != fingerprint(key)
