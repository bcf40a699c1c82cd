"""Bounded inputs and the property/fuzz test of issue 17, over every public and internal RPC (enumerated from
the service descriptors, each with its trust policy: a new RPC is covered as soon as it is declared).

* Every string, bytes and repeated field of protos/ documents its maximum in its comment ("at most N
  characters / items / bytes"), and every request answers a field one past it INVALID_ARGUMENT with a field
  violation on that field (or on the identifier holding it), with its MyCareNet code.
* Generated input on the TLS mesh — strings up to a megabyte, unknown enum values, non-ASCII digits,
  extreme numbers, long repeated fields, random bytes — from a caller the trust table admits and from one
  it refuses: no answer is INTERNAL or UNKNOWN, a refusal writes nothing to any database of the mesh, and a
  refused caller gets the table's refusal.

CI size: eight generated requests per RPC with a fixed seed (MCN_FUZZ_SEED and MCN_FUZZ_PER_RPC change
it); ``benchmarks/fuzz_rpcs.py`` sends 2,000 and more per RPC.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from mycarenet_core import validation
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.ehealth.v1 import mandate_pb2
from tests.trust.fuzz_mesh import (
    Generator,
    admitted_caller,
    documented_limits,
    format_counts,
    fuzz,
    names_field,
    oversized_requests,
    rpcs,
    valid_strings,
)
from tests.trust.tls_mesh import TlsMesh, tls_mesh

MANDATED = [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT, mandate_pb2.MANDATED_SERVICE_MAILBOX]
PER_RPC = int(os.environ.get("MCN_FUZZ_PER_RPC", "8"))
SEED = int(os.environ.get("MCN_FUZZ_SEED", "17"))

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[TlsMesh, Path]]:
    folder = tmp_path_factory.mktemp("fuzz")
    async with tls_mesh(folder, MANDATED) as running:
        yield running, folder


async def test_a_field_past_its_documented_maximum_is_invalid_argument(mesh: tuple[TlsMesh, Path]) -> None:
    running, _folder = mesh
    limits, _missing = documented_limits()
    failures: list[str] = []
    checked = 0
    for rpc in rpcs():
        caller = admitted_caller(rpc.policy)
        metadata = (("authorization", f"Bearer {running.tokens[caller.token]}"),) if caller.token else ()
        channel = running.channel(rpc.process, caller.identity)
        for case in oversized_requests(rpc, limits):
            checked += 1
            where = f"{rpc.method} {case.path} ({case.maximum} + 1)"
            try:
                if rpc.streaming:
                    stream = channel.unary_stream(
                        rpc.method,
                        request_serializer=rpc.request.SerializeToString,
                        response_deserializer=rpc.response.FromString,
                    )
                    call = stream(case.request, metadata=metadata, timeout=2)
                    async for _ in call:
                        break
                    call.cancel()
                else:
                    unary = channel.unary_unary(
                        rpc.method,
                        request_serializer=rpc.request.SerializeToString,
                        response_deserializer=rpc.response.FromString,
                    )
                    await unary(case.request, metadata=metadata, timeout=10)
            except grpc.RpcError as failed:
                error = parse_rpc_error(failed)
                if error.status is not grpc.StatusCode.INVALID_ARGUMENT:
                    failures.append(f"{where}: {error.status.name} {error.reason}")
                elif not any(names_field(v.field, case.path, v.code) for v in error.violations):
                    fields = [f"{v.field} ({v.code})" for v in error.violations]
                    failures.append(f"{where}: INVALID_ARGUMENT on other fields only: {fields}")
                continue
            failures.append(f"{where}: accepted")
    assert checked > 150
    assert validation.unparsed_oversized == 0, "an oversized request reached a handler with no Checker"
    assert not failures, f"{len(failures)} of {checked} oversized fields:\n" + "\n".join(failures)


async def test_every_rpc_answers_generated_input_without_internal_errors_or_writes(
    mesh: tuple[TlsMesh, Path],
) -> None:
    running, folder = mesh
    generator = Generator(random.Random(SEED), valid_strings(running), max_size=1024 * 1024)
    tally = await fuzz(running, folder, generator, PER_RPC)
    assert set(tally.counts) == {rpc.method for rpc in rpcs()}
    assert validation.unparsed_oversized == 0, "an oversized request reached a handler with no Checker"
    table = "\n".join(format_counts(tally))
    assert not tally.findings, (
        f"seed {SEED}: {len(tally.findings)} findings:\n" + "\n".join(tally.findings[:40]) + "\n" + table
    )
