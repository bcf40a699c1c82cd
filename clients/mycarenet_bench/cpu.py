"""CPU time of processes from ``/proc/<pid>/stat``: user + system time of every thread, in clock ticks.

CPU per request is the figure noise does not move: a busy box stretches latencies, not the CPU a process
spends on a call. A :class:`Snapshot` reads a set of named processes at one moment; the difference of two
snapshots over a window, divided by the requests answered in it, is the CPU each process spent per request.
A process that was restarted in the window (another pid, or the same pid with another start time) has no
figure for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcCpu:
    """One reading of one process: its pid, its start time (ticks since boot) and its CPU ticks."""

    pid: int
    started: int
    ticks: int


def read_cpu(pid: int) -> ProcCpu | None:
    """utime + stime of process ``pid`` (all its threads); None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    # Fields after the name, counted from 0: state is 0, utime 11, stime 12, starttime 19.
    return ProcCpu(pid, int(fields[19]), int(fields[11]) + int(fields[12]))


@dataclass(frozen=True)
class Snapshot:
    """The CPU of named processes at one moment (monotonic seconds)."""

    at: float
    procs: Mapping[str, ProcCpu | None]

    @classmethod
    def take(cls, pids: Mapping[str, int | None]) -> Snapshot:
        return cls(time.monotonic(), {name: read_cpu(pid) if pid else None for name, pid in pids.items()})


def cpu_delta(before: Snapshot, after: Snapshot) -> dict[str, float | None]:
    """CPU milliseconds each process spent between two snapshots (None: absent or restarted)."""
    out: dict[str, float | None] = {}
    for name, first in before.procs.items():
        last = after.procs.get(name)
        if first is None or last is None or (first.pid, first.started) != (last.pid, last.started):
            out[name] = None
        else:
            out[name] = (last.ticks - first.ticks) * 1000.0 / TICKS_PER_SECOND
    return out


def per_request(
    before: Snapshot, after: Snapshot, requests: int, *, groups: Mapping[str, Iterable[str]] | None = None
) -> dict[str, Any]:
    """CPU per process over a window: total ms, ms per request, ms per second; and sums of ``groups``
    (e.g. all OA nodes, the whole chain) in ms per request."""
    return per_request_windows([(before, after)], requests, groups=groups)


def per_request_windows(
    windows: Sequence[tuple[Snapshot, Snapshot]],
    requests: int,
    *,
    groups: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """:func:`per_request` over several windows added up (slices of one measurement)."""
    seconds = max(sum(after.at - before.at for before, after in windows), 1e-9)
    deltas: dict[str, float | None] = {}
    for before, after in windows:
        for name, ms in cpu_delta(before, after).items():
            known = deltas.get(name, 0.0)
            deltas[name] = None if ms is None or known is None else known + ms
    first = windows[0][0].procs if windows else {}
    by_process: dict[str, dict[str, Any]] = {}
    for name, ms in deltas.items():
        proc = first.get(name)
        by_process[name] = {
            "pid": proc.pid if proc else None,
            "cpu_ms": None if ms is None else round(ms, 1),
            "cpu_ms_per_request": None if ms is None or requests <= 0 else round(ms / requests, 3),
            "cpu_ms_per_s": None if ms is None else round(ms / seconds, 2),
        }
    sums: dict[str, float | None] = {}
    for group, names in (groups or {}).items():
        values = [deltas.get(n) for n in names]
        if requests <= 0 or not values or any(v is None for v in values):
            sums[group] = None
        else:
            sums[group] = round(sum(v for v in values if v is not None) / requests, 3)
    return {
        "seconds": round(seconds, 3),
        "requests": requests,
        "tick_ms": round(1000.0 / TICKS_PER_SECOND, 3),
        "by_process": by_process,
        "sums_ms_per_request": sums,
    }
