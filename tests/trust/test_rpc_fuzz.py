"""The property/fuzz test of issue 17: every public and internal RPC (enumerated from the service
descriptors, each with its trust policy) gets generated input on the TLS mesh — strings up to the message
limit, unknown enum values, non-ASCII digits, extreme numbers, long repeated fields, random bytes — from a
caller the trust table admits and from one it refuses. No answer is INTERNAL or UNKNOWN, a refusal writes
nothing to any database of the mesh, and a refused caller gets the table's refusal.

CI size: a few requests per RPC with a fixed seed (and a new seed per run of MCN_FUZZ_SEED); the
benchmark ``benchmarks/fuzz_rpcs.py`` sends 2,000 and more per RPC.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from mycarenet_core.gen.mycarenet.ehealth.v1 import mandate_pb2
from tests.trust.fuzz_mesh import Generator, format_counts, fuzz, rpcs, valid_strings
from tests.trust.tls_mesh import tls_mesh

MANDATED = [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT, mandate_pb2.MANDATED_SERVICE_MAILBOX]
PER_RPC = int(os.environ.get("MCN_FUZZ_PER_RPC", "12"))
SEED = int(os.environ.get("MCN_FUZZ_SEED", "17"))


async def test_every_rpc_answers_generated_input_without_internal_errors_or_writes(tmp_path: Path) -> None:
    async with tls_mesh(tmp_path, MANDATED) as mesh:
        generator = Generator(random.Random(SEED), valid_strings(mesh), max_size=1024 * 1024)
        tally = await fuzz(mesh, tmp_path, generator, PER_RPC)
    assert set(tally.counts) == {rpc.method for rpc in rpcs()}
    table = "\n".join(format_counts(tally))
    assert not tally.findings, (
        f"seed {SEED}: {len(tally.findings)} findings:\n" + "\n".join(tally.findings[:40]) + "\n" + table
    )
