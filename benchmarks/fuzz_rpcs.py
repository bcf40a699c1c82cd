"""Generated input against every RPC of the mesh, at volume (issue 17): per RPC, how many answers of each
gRPC status, and every INTERNAL or UNKNOWN answer (a finding).

Starts the in-process TLS mesh of the test suite (eHealth, the hub, insurers 100 and 200, the sandbox's
server; SQLite in a temporary folder), then sends ``--per-rpc`` generated requests to each RPC of the trust
table (9 in 10 from a caller the table admits, 1 in 10 from one it refuses; one in ten requests is random
bytes; strings up to the 4 MB message limit), ``--concurrency`` at a time. ``--check-writes`` sends them one
at a time instead and compares every database's watched tables before and after each refused request (the
CI test does that at a small size). Exit status 1 when there is a finding.

    .venv/bin/python benchmarks/fuzz_rpcs.py --per-rpc 2000 --seed 17 --out benchmarks/fuzz-rpcs.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mycarenet_core.gen.mycarenet.ehealth.v1 import mandate_pb2  # noqa: E402
from tests.trust.fuzz_mesh import (  # noqa: E402
    MESSAGE_LIMIT,
    Generator,
    format_counts,
    fuzz,
    valid_strings,
)
from tests.trust.tls_mesh import tls_mesh  # noqa: E402

MANDATED = [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT, mandate_pb2.MANDATED_SERVICE_MAILBOX]


async def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-rpcs-") as tmp:
        folder = Path(tmp)
        async with tls_mesh(folder, MANDATED) as mesh:
            generator = Generator(random.Random(args.seed), valid_strings(mesh), max_size=args.max_size)
            tally = await fuzz(
                mesh,
                folder,
                generator,
                args.per_rpc,
                check_writes=args.check_writes,
                concurrency=args.concurrency,
                select=args.select,
                progress=lambda line: print(line, flush=True),
            )
    elapsed = time.monotonic() - started
    total = sum(sum(per.values()) for per in tally.counts.values())
    print()
    print("\n".join(format_counts(tally)))
    print(
        f"\n{total} requests to {len(tally.counts)} RPCs in {elapsed:.0f} s; {len(tally.findings)} findings"
    )
    for finding in tally.findings[:50]:
        print("FINDING", finding)
    if args.out is not None:
        report = {
            "command": " ".join(sys.argv),
            "seed": args.seed,
            "per_rpc": args.per_rpc,
            "select": args.select,
            "requests": total,
            "seconds": round(elapsed, 1),
            "counts": tally.counts,
            "findings": tally.findings,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if tally.findings else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-rpc", type=int, default=2000, help="requests per RPC (default 2000)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight per RPC")
    parser.add_argument("--max-size", type=int, default=MESSAGE_LIMIT, help="longest generated string")
    parser.add_argument("--check-writes", action="store_true", help="one at a time, databases compared")
    parser.add_argument("--select", default="", help="only the methods this regular expression matches")
    parser.add_argument("--out", type=Path, help="write the counts and findings as JSON")
    sys.exit(asyncio.run(main(parser.parse_args())))
