"""What a run measured: outcomes, HdrHistogram latencies, per-second series, availability and recovery.

Pure bookkeeping (no I/O, no clock reads): the load generator hands in the intended start and the end of
every request; times are seconds on the run's monotonic clock, with ``t0`` the start of measurement.

Outcomes:

- ``ok``: answered with success;
- ``refused``: a business answer (a MyCareNet code, bad input, no relation, ...): the service *was* there;
- ``throttled``: RESOURCE_EXHAUSTED (the hub's per-provider throttle), counted apart from availability;
- ``failed``: UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, CANCELLED, ABORTED, DATA_LOSS;
- ``hung``: no answer at all by the deadline plus a grace period (a bug: must be zero).

Availability = (ok + refused) / (ok + refused + failed + hung).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

OUTCOMES = ("ok", "refused", "throttled", "failed", "hung")
FAILURE_STATUSES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "CANCELLED", "ABORTED", "DATA_LOSS"}
)
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
CURVE_PERCENTILES = (0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100)
MAX_US = 3_600_000_000  # one hour
NO_OA = "-"  # requests not bound to one insurer (patient list, mailbox)


def classify(status: str) -> str:
    """The outcome class of a gRPC status name ("OK", "UNAVAILABLE", ..., or "HUNG")."""
    if status == "OK":
        return "ok"
    if status == "HUNG":
        return "hung"
    if status == "RESOURCE_EXHAUSTED":
        return "throttled"
    if status in FAILURE_STATUSES:
        return "failed"
    return "refused"


def availability(counts: Mapping[str, int]) -> float | None:
    """(ok + refused) / (ok + refused + failed + hung); None when nothing counted."""
    good = counts.get("ok", 0) + counts.get("refused", 0)
    attempts = good + counts.get("failed", 0) + counts.get("hung", 0)
    return good / attempts if attempts else None


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_US, 3)


def summarize_histogram(hist: HdrHistogram) -> dict[str, float]:
    """p50 / p90 / p99 / p99.9 / max / mean in milliseconds (empty histogram: zeros)."""
    if hist.get_total_count() == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p99.9": 0.0, "max": 0.0, "mean": 0.0}
    out = {f"p{p:g}": hist.get_value_at_percentile(p) / 1000.0 for p in PERCENTILES}
    out["max"] = hist.get_max_value() / 1000.0
    out["mean"] = round(hist.get_mean_value() / 1000.0, 3)
    return out


def percentile_curve(hist: HdrHistogram) -> list[list[float]]:
    """[[percentile, ms], ...] for the percentile plot."""
    if hist.get_total_count() == 0:
        return []
    return [[float(p), hist.get_value_at_percentile(p) / 1000.0] for p in CURVE_PERCENTILES]


def exact_percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of a small list (per-second points of the time series)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Bucket:
    """Counts and latencies of one group of requests."""

    counts: Counter[str] = field(default_factory=Counter)
    hist: HdrHistogram = field(default_factory=new_histogram)
    first: float | None = None
    last: float | None = None

    def add(self, outcome: str, intended: float, end: float) -> None:
        self.counts[outcome] += 1
        if outcome in ("ok", "refused"):
            self.hist.record_value(max(1, round((end - intended) * 1e6)))
        self.first = intended if self.first is None else min(self.first, intended)
        self.last = end if self.last is None else max(self.last, end)

    def summary(self, seconds: float) -> dict[str, Any]:
        total = sum(self.counts.values())
        answered = self.counts["ok"] + self.counts["refused"]
        return {
            "requests": total,
            **{o: self.counts[o] for o in OUTCOMES},
            "throughput_rps": round(answered / seconds, 2) if seconds > 0 else 0.0,
            "availability": availability(self.counts),
            "latency_ms": summarize_histogram(self.hist),
        }


@dataclass
class Second:
    """One second of the run (by intended start)."""

    counts: Counter[str] = field(default_factory=Counter)
    by_oa: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    latencies_ms: list[float] = field(default_factory=list)


class Recorder:
    """Collects every measured request; build the report's numbers with :meth:`results`."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.overall = Bucket()
        self.by_rpc: dict[str, Bucket] = defaultdict(Bucket)
        self.by_oa: dict[str, Bucket] = defaultdict(Bucket)
        self.by_rpc_oa: dict[tuple[str, str], Bucket] = defaultdict(Bucket)
        self.by_step: dict[int, Bucket] = defaultdict(Bucket)
        self.by_step_rpc: dict[tuple[int, str], Bucket] = defaultdict(Bucket)
        self.by_step_oa: dict[tuple[int, str], Bucket] = defaultdict(Bucket)
        self.errors: dict[str, Counter[str]] = defaultdict(Counter)
        self.seconds: dict[int, Second] = defaultdict(Second)
        self.failed_hist = new_histogram()

    def record(
        self,
        rpc: str,
        oa: str | None,
        status: str,
        intended: float,
        end: float,
        *,
        code: int | None = None,
        reason: str = "",
        step: int = 0,
    ) -> str:
        """One request; ``status`` is a gRPC status name or "HUNG". Returns its outcome class."""
        outcome = classify(status)
        oa_key = oa or NO_OA
        for bucket in (
            self.overall,
            self.by_rpc[rpc],
            self.by_oa[oa_key],
            self.by_rpc_oa[(rpc, oa_key)],
            self.by_step[step],
            self.by_step_rpc[(step, rpc)],
            self.by_step_oa[(step, oa_key)],
        ):
            bucket.add(outcome, intended, end)
        if outcome != "ok":
            key = (
                status + (f" {code}" if code else "") + (f" {reason}" if reason and reason != status else "")
            )
            self.errors[rpc][key] += 1
        if outcome == "failed":
            self.failed_hist.record_value(max(1, round((end - intended) * 1e6)))
        second = self.seconds[max(0, int(intended - self.t0))]
        second.counts[outcome] += 1
        second.by_oa[oa_key][outcome] += 1
        if outcome in ("ok", "refused"):
            second.latencies_ms.append((end - intended) * 1000.0)
        return outcome

    @property
    def hung(self) -> int:
        return self.overall.counts["hung"]

    def timeline(self, duration: float) -> list[dict[str, Any]]:
        """One point per second: counts, availability (overall and per OA), p50/p99/max latency."""
        out = []
        for s in range(math.ceil(duration)):
            sec = self.seconds.get(s, Second())
            out.append(
                {
                    "t": s,
                    **{o: sec.counts[o] for o in OUTCOMES},
                    "availability": availability(sec.counts),
                    "p50_ms": round(exact_percentile(sec.latencies_ms, 50), 3),
                    "p99_ms": round(exact_percentile(sec.latencies_ms, 99), 3),
                    "max_ms": round(max(sec.latencies_ms, default=0.0), 3),
                    "by_oa": {
                        oa: {
                            "attempts": sum(c[o] for o in OUTCOMES if o != "throttled"),
                            "availability": availability(c),
                        }
                        for oa, c in sorted(sec.by_oa.items())
                    },
                }
            )
        return out

    def series(self, *, only: str | None = None, exclude: str | None = None) -> list[float | None]:
        """Availability of each second (None: no attempt that second), overall, of the requests bound to
        one OA (``only``), or of those not bound to one OA (``exclude``)."""
        out: list[float | None] = []
        for s in range(max(self.seconds, default=-1) + 1):
            sec = self.seconds.get(s)
            if sec is None:
                out.append(None)
            elif only is not None:
                out.append(availability(sec.by_oa.get(only, Counter())))
            elif exclude is not None:
                out.append(availability(merge_counts(c for oa, c in sec.by_oa.items() if oa != exclude)))
            else:
                out.append(availability(sec.counts))
        return out

    def availability_excluding(self, oa: str) -> float | None:
        """Availability of the requests not bound to ``oa`` (other OAs and unbound requests)."""
        counts: Counter[str] = Counter()
        for key, bucket in self.by_oa.items():
            if key != oa:
                counts.update(bucket.counts)
        return availability(counts)


@dataclass(frozen=True)
class Recovery:
    """How a fault showed in the per-second availability."""

    impacted_seconds: int  # seconds below the threshold in the fault's window
    worst: float | None  # lowest availability of a second in the window
    recovered_at: float | None  # run time (s) from which availability stayed at or above the threshold
    recovery_seconds: float  # recovered_at - fault start (0: no impact seen)


def recovery(
    series: Sequence[float | None],
    start: float,
    end: float,
    *,
    threshold: float = 0.99,
    stable: int = 3,
) -> Recovery:
    """The effect of a fault applied at ``start`` (run seconds) on ``series`` (availability per second),
    looked at until ``end`` (the next fault on the same target, or the end of the run).

    Recovered at the first second after the first bad one (below ``threshold``) from which ``stable``
    seconds in a row are good (fewer when the window ends first); seconds without attempts are skipped.
    The resolution is one second (requests are counted in the second they were due).
    """
    first, last = int(start), min(len(series), math.ceil(end))
    window = [(s, series[s]) for s in range(first, last) if series[s] is not None]
    values = [v for _, v in window if v is not None]
    worst = min(values) if values else None
    bad = [s for s, v in window if v is not None and v < threshold]
    if not bad:
        return Recovery(0, worst, None, 0.0)
    for i, (s, _) in enumerate(window):
        if s <= bad[0]:
            continue
        run = window[i : i + stable]
        if all(v is not None and v >= threshold for _, v in run):
            impacted = sum(1 for b in bad if b < s)
            return Recovery(impacted, worst, float(s), round(s - start, 3))
    return Recovery(len(bad), worst, None, round(end - start, 3))


def merge_counts(items: Iterable[Mapping[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for item in items:
        total.update(item)
    return total
