"""Memory of the hub's routing index (NISS + date → insurer) for a national population.

Loads N million synthetic NISS (one open affiliation each, and a share of people who changed mutuality
with two periods), then measures the bytes held (tracemalloc) and the lookup speed.

    .venv/bin/python benchmarks/routing_memory.py --millions 11.5 --movers 0.03
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import time
import tracemalloc
from collections.abc import Iterator

from hub.routing import RoutingIndex, Span, make_span
from mycarenet_core.identifiers import INSURER_CODES


def synthetic_niss(count: int, seed: int = 7) -> list[int]:
    """``count`` distinct valid-looking NISS as ints, sorted (birth dates 1925..2024, sequence 1..998)."""
    rng = random.Random(seed)
    out: set[int] = set()
    start = dt.date(1925, 1, 1).toordinal()
    while len(out) < count:
        born = dt.date.fromordinal(start + rng.randrange(36_500))
        body = int(f"{born.year % 100:02d}{born.month:02d}{born.day:02d}{rng.randrange(1, 999):03d}")
        check = 97 - ((body + (2_000_000_000 if born.year >= 2000 else 0)) % 97)
        out.add(body * 100 + check)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--millions", type=float, default=2.0, help="how many million NISS to load")
    parser.add_argument("--movers", type=float, default=0.03, help="share of people with two periods")
    parser.add_argument("--updates", type=int, default=100_000, help="feed changes applied after the load")
    args = parser.parse_args()
    count = int(args.millions * 1_000_000)
    rng = random.Random(11)
    people = synthetic_niss(count)

    def spans_of_people() -> Iterator[tuple[Span, ...]]:
        for _ in people:
            code = INSURER_CODES[rng.randrange(len(INSURER_CODES))]
            if rng.random() < args.movers:
                other = INSURER_CODES[rng.randrange(len(INSURER_CODES))]
                yield (
                    make_span(code, dt.date(2005, 1, 1), dt.date(2019, 12, 31)),
                    make_span(other, dt.date(2020, 1, 1), None),
                )
            else:
                yield (make_span(code, dt.date(2000, 1, 1), None),)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    index = RoutingIndex()
    index.load_sorted(zip(people, spans_of_people(), strict=True))
    load_s = time.perf_counter() - started
    gc.collect()
    after_load = tracemalloc.get_traced_memory()[0] - before
    started = time.perf_counter()
    for niss in rng.sample(people, min(args.updates, count)):
        index.replace(niss, "300", [make_span("300", dt.date(2024, 1, 1), None)])
    index.compact()
    update_s = time.perf_counter() - started
    gc.collect()
    after_updates = tracemalloc.get_traced_memory()[0] - before
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    probes = rng.sample(people, 200_000)
    on = dt.date(2024, 6, 1)
    started = time.perf_counter()
    hits = sum(1 for niss in probes if index.route(niss, on) is not None)
    lookup_us = (time.perf_counter() - started) / len(probes) * 1e6
    millions = count / 1e6
    print(f"entries: {count:,} NISS ({args.movers:.0%} with two periods)")
    print(f"load: {load_s:.1f} s; {args.updates:,} feed changes + compaction: {update_s:.1f} s")
    print(f"memory after load: {after_load / 1e6:.1f} MB = {after_load / millions / 1e6:.1f} MB per million")
    per_million = after_updates / millions / 1e6
    print(f"memory after updates: {after_updates / 1e6:.1f} MB = {per_million:.1f} MB per million")
    print(f"peak during compaction: {peak / 1e6:.1f} MB")
    print(f"lookup: {lookup_us:.2f} µs per route() ({hits:,}/{len(probes):,} routed)")
    print(f"projected for 11.5 M NISS: {after_updates / millions * 11.5 / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
