"""The report for people: one self-contained HTML page (inline SVG and CSS, no script, nothing fetched)
drawn from the JSON report: latency over time with fault markers, availability per second, percentile
curves, availability bars per OA, and the tables (targets, per RPC, per OA, steps with their ratios to the
floor, CPU per request per process, idle CPU, errors, faults, baselines and the floor)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
FAULT_COLOURS = {
    "kill": "#d62728",
    "restart": "#ff7f0e",
    "pause": "#9467bd",
    "latency": "#17becf",
    "errors": "#8c564b",
}
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 1240, 300, 70, 20, 24, 40


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if 0 < abs(value) < 0.1:
            return f"{value:.2g}"  # small ratios (rate ×echo) keep two significant digits
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f} %"


class Frame:
    """Maps data to pixels for one chart (linear x; linear or log10 y)."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, *, log_y: bool = False, height: int = H):
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.log_y = log_y
        if log_y:
            y0, y1 = max(y0, 1e-3), max(y1, y0 * 10 if y0 > 0 else 1.0)
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1
        self.height = height

    def x(self, v: float) -> float:
        return PAD_L + (v - self.x0) / (self.x1 - self.x0) * (W - PAD_L - PAD_R)

    def y(self, v: float) -> float:
        if self.log_y:
            v = max(v, self.y0)
            frac = (math.log10(v) - math.log10(self.y0)) / (math.log10(self.y1) - math.log10(self.y0))
        else:
            frac = (v - self.y0) / (self.y1 - self.y0)
        return self.height - PAD_B - frac * (self.height - PAD_T - PAD_B)

    def y_ticks(self) -> list[float]:
        if self.log_y:
            lo, hi = math.floor(math.log10(self.y0)), math.ceil(math.log10(self.y1))
            return [float(10**e) for e in range(lo, hi + 1) if self.y0 <= 10.0**e <= self.y1 * 1.001]
        step = _nice((self.y1 - self.y0) / 5)
        first = math.ceil(self.y0 / step) * step
        return [float(first + i * step) for i in range(int((self.y1 - first) / step) + 1)]


def _nice(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * exp:
            return m * exp
    return 10 * exp


def _axes(
    frame: Frame, x_ticks: Sequence[tuple[float, str]], x_label: str, y_label: str, y_fmt: str
) -> list[str]:
    out = [
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{frame.height - PAD_T - PAD_B}"'
        ' fill="#fff" stroke="#999"/>'
    ]
    for v in frame.y_ticks():
        y = frame.y(v)
        label = y_fmt.format(v)
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_esc(label)}</text>')
    for v, label in x_ticks:
        x = frame.x(v)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{frame.height - PAD_B}" stroke="#f3f3f3"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{frame.height - PAD_B + 16}" text-anchor="middle">{_esc(label)}</text>'
        )
    mid = (PAD_L + W - PAD_R) / 2
    out.append(f'<text x="{mid}" y="{frame.height - 6}" text-anchor="middle">{_esc(x_label)}</text>')
    out.append(
        f'<text x="14" y="{(PAD_T + frame.height - PAD_B) / 2}" text-anchor="middle"'
        f' transform="rotate(-90 14 {(PAD_T + frame.height - PAD_B) / 2})">{_esc(y_label)}</text>'
    )
    return out


def _polyline(
    frame: Frame, points: Sequence[tuple[float, float | None]], colour: str, width: float = 1.6
) -> str:
    """A line broken where a point is missing (None)."""
    parts: list[list[str]] = []
    run: list[str] = []
    for x, y in points:
        if y is None:
            if run:
                parts.append(run)
            run = []
        else:
            run.append(f"{frame.x(x):.1f},{frame.y(y):.1f}")
    if run:
        parts.append(run)
    return "".join(
        f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{" ".join(p)}"/>'
        for p in parts
    )


def _legend(items: Sequence[tuple[str, str]], y: float = 14) -> str:
    out, x = [], PAD_L
    for name, colour in items:
        out.append(f'<rect x="{x}" y="{y - 9}" width="12" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="{y}">{_esc(name)}</text>')
        x += 24 + 7 * len(name)
    return "".join(out)


def _fault_markers(frame: Frame, faults: Sequence[dict[str, Any]]) -> list[str]:
    """A band from the fault to its clearing, a line at its start, and a label (class fault-marker)."""
    out = []
    for i, f in enumerate(faults):
        start = f.get("applied_at")
        if start is None:
            start = f["at"]
        end = f.get("cleared_at") or start
        colour = FAULT_COLOURS.get(f["kind"], "#d62728")
        x0, x1 = frame.x(start), frame.x(max(end, start))
        label = f"{f['kind']} {f['target']}"
        out.append(
            f'<g class="fault-marker" data-kind="{_esc(f["kind"])}" data-target="{_esc(f["target"])}"'
            f' data-at="{start}"><title>{_esc(f.get("spec", label))}</title>'
            f'<rect x="{x0:.1f}" y="{PAD_T}" width="{max(1.0, x1 - x0):.1f}"'
            f' height="{frame.height - PAD_T - PAD_B}"'
            f' fill="{colour}" opacity="0.12"/>'
            f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{PAD_T}" y2="{frame.height - PAD_B}" stroke="{colour}"'
            ' stroke-dasharray="4,3"/>'
            f'<text x="{x0 + 3:.1f}" y="{PAD_T + 12 + 11 * (i % 3)}" fill="{colour}">{_esc(label)}</text></g>'
        )
    return out


def _svg(body: Sequence[str], height: int = H, cls: str = "") -> str:
    return (
        f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}"'
        f' height="{height}" font-family="sans-serif" font-size="11">{"".join(body)}</svg>'
    )


def _time_ticks(seconds: float) -> list[tuple[float, str]]:
    step = _nice(max(seconds, 1) / 12)
    return [(t, f"{t:g}s") for t in [i * step for i in range(int(seconds / step) + 1)]]


def latency_chart(report: dict[str, Any]) -> str:
    timeline = report["timeline"]
    seconds = max(report.get("duration_s", len(timeline)), 1)
    values = [p[k] for p in timeline for k in ("p50_ms", "p99_ms", "max_ms") if p[k] > 0]
    frame = Frame(0, seconds, min(values, default=0.1) * 0.8, max(values, default=1.0) * 1.2, log_y=True)
    body = _axes(frame, _time_ticks(seconds), "run time (s)", "latency (ms, log)", "{:g}")
    body += _fault_markers(frame, report.get("faults", []))
    series = [("p50", "#1f77b4", "p50_ms"), ("p99", "#ff7f0e", "p99_ms"), ("max", "#d62728", "max_ms")]
    for _name, colour, key in series:
        pts = [(p["t"] + 0.5, p[key] if p[key] > 0 else None) for p in timeline]
        body.append(_polyline(frame, pts, colour))
    body.append(_legend([(n, c) for n, c, _ in series]))
    return _svg(body, cls="latency-over-time")


def availability_chart(report: dict[str, Any]) -> str:
    timeline = report["timeline"]
    seconds = max(report.get("duration_s", len(timeline)), 1)
    frame = Frame(0, seconds, 0, 1.0, height=220)
    body = _axes(frame, _time_ticks(seconds), "run time (s)", "availability", "{:.0%}")
    body += _fault_markers(frame, report.get("faults", []))
    body.append(_polyline(frame, [(p["t"] + 0.5, p["availability"]) for p in timeline], "#2ca02c", 2.0))
    oas = sorted({oa for p in timeline for oa in p["by_oa"] if oa != "-"})
    items = [("overall", "#2ca02c")]
    for i, oa in enumerate(oas):
        colour = COLOURS[i % len(COLOURS)]
        pts = [(p["t"] + 0.5, (p["by_oa"].get(oa) or {}).get("availability")) for p in timeline]
        body.append(f'<g opacity="0.5">{_polyline(frame, pts, colour, 1.0)}</g>')
        items.append((f"OA {oa}", colour))
    body.append(_legend(items))
    return _svg(body, height=220, cls="availability-over-time")


def _pct_x(p: float) -> float:
    return math.log10(1.0 / (1.0 - min(p, 99.999) / 100.0))


def percentile_chart(report: dict[str, Any]) -> str:
    curves = {k: v for k, v in report.get("percentile_curves", {}).items() if v}
    values = [ms for c in curves.values() for _, ms in c if ms > 0]
    frame = Frame(
        0, _pct_x(99.999), min(values, default=0.1) * 0.8, max(values, default=1.0) * 1.2, log_y=True
    )
    ticks = [
        (_pct_x(p), label)
        for p, label in ((0, "0"), (50, "50%"), (90, "90%"), (99, "99%"), (99.9, "99.9%"), (99.99, "99.99%"))
    ]
    body = _axes(frame, ticks, "percentile", "latency (ms, log)", "{:g}")
    items = []
    for i, (name, curve) in enumerate(curves.items()):
        colour = "#000" if name == "overall" else COLOURS[i % len(COLOURS)]
        body.append(
            _polyline(frame, [(_pct_x(p), ms) for p, ms in curve], colour, 2.2 if name == "overall" else 1.6)
        )
        items.append((name, colour))
    body.append(_legend(items))
    return _svg(body, cls="percentile-curves")


def availability_bars(report: dict[str, Any]) -> str:
    avail = report.get("availability", {})
    rows: list[tuple[str, float | None]] = [("overall", avail.get("overall"))]
    rows += [
        (f"OA {oa}" if oa != "-" else "not bound to an OA", v) for oa, v in avail.get("by_oa", {}).items()
    ]
    rows += [(f"all but OA {oa}", v) for oa, v in avail.get("not_bound_to", {}).items()]
    known = [v for _, v in rows if v is not None]
    lo = min(0.9, math.floor(min(known, default=1.0) * 20) / 20)
    height = PAD_T + 22 * len(rows) + 30
    x0, x1 = 180, W - 90
    body = [f'<text x="{x0}" y="14">availability per OA (axis from {lo:.0%} to 100 %)</text>']
    for i, (name, value) in enumerate(rows):
        y = PAD_T + 22 * i
        body.append(f'<text x="{x0 - 8}" y="{y + 14}" text-anchor="end">{_esc(name)}</text>')
        body.append(f'<rect x="{x0}" y="{y + 3}" width="{x1 - x0}" height="15" fill="#f2f2f2"/>')
        if value is not None:
            width = max(0.0, (value - lo) / (1 - lo)) * (x1 - x0) if lo < 1 else x1 - x0
            colour = "#2ca02c" if value >= 0.999 else ("#ff7f0e" if value >= 0.99 else "#d62728")
            body.append(
                f'<rect class="availability-bar" x="{x0}" y="{y + 3}" width="{width:.1f}" height="15"'
                f' fill="{colour}"/>'
            )
        body.append(f'<text x="{x1 + 6}" y="{y + 14}">{_esc(_pct(value))}</text>')
    return _svg(body, height=height, cls="availability-bars")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


SUMMARY_HEADERS = [
    "",
    "requests",
    "ok",
    "refused",
    "throttled",
    "failed",
    "hung",
    "answered/s",
    "availability",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "p50 ×echo",
    "p99 ×echo",
    "rate ×echo",
    "p50 ×floor",
    "p99 ×floor",
    "rate ×floor",
]


STEP_HEADERS = [
    "step",
    "level",
    "RPC",
    "seconds",
    "answered/s",
    "availability",
    "p50 ms",
    "p99 ms",
    "p50 ×echo",
    "p99 ×echo",
    "p50 ×floor",
    "p99 ×floor",
    "rate ×floor",
    "p50 ×floor_check",
    "rate ×floor_check",
]
FLOOR_HEADERS = ["chain", "in flight", "p50 ms", "p99 ms", "calls/s", "CPU-ms per call", "per process"]
TARGET_HEADERS = ["target", "value", "goal", "met"]
FAULT_HEADERS = [
    "fault",
    "kind",
    "target",
    "applied (s)",
    "cleared (s)",
    "pid",
    "new pid",
    "SERVING after (s)",
    "recovery",
    "note",
]
BASELINE_HEADERS = ["hop", "p50 ms", "p90 ms", "p99 ms", "max ms", "callers", "echo/s", "p50 ms loaded"]


def summary_row(name: str, s: dict[str, Any]) -> list[Any]:
    """One row of the per-RPC / per-OA tables (HTML page and console)."""
    lat, ratio, floor = s["latency_ms"], s.get("ratio_to_echo") or {}, s.get("ratio_to_floor") or {}
    return [
        name,
        s["requests"],
        s["ok"],
        s["refused"],
        s["throttled"],
        s["failed"],
        s["hung"],
        s["throughput_rps"],
        _pct(s["availability"]),
        lat["p50"],
        lat["p90"],
        lat["p99"],
        lat["p99.9"],
        lat["max"],
        ratio.get("p50"),
        ratio.get("p99"),
        ratio.get("throughput"),
        floor.get("p50"),
        floor.get("p99"),
        floor.get("throughput"),
    ]


FLOORS = ("floor", "floor_check")


def _cpu_breakdown(window: dict[str, Any] | None) -> str:
    procs = (window or {}).get("by_process") or {}
    return ", ".join(f"{name} {fmt(p.get('cpu_ms_per_request'), 3)}" for name, p in procs.items())


def floor_rows(baseline: dict[str, Any] | None) -> list[list[Any]]:
    """One row per floor chain and concurrency: latency, rate, CPU per call (whole chain, per process)."""
    rows = []
    for hop in FLOORS:
        found = (baseline or {}).get(hop)
        if not found:
            continue
        for level, m in sorted(found["by_concurrency"].items(), key=lambda kv: int(kv[0])):
            cpu = m.get("cpu") or {}
            rounds = (found.get("interleaved") or {}).get("rounds")
            rows.append(
                [
                    f"{hop} (between the mesh's slices, {rounds} rounds)" if rounds else hop,
                    int(level),
                    m["latency_ms"]["p50"],
                    m["latency_ms"]["p99"],
                    m["throughput_rps"],
                    (cpu.get("sums_ms_per_request") or {}).get("chain"),
                    _cpu_breakdown(cpu),
                ]
            )
    return rows


def _process_order(names: Sequence[str], roles: dict[str, str]) -> list[str]:
    rank = {"hub": 0, "ehealth": 1, "oa": 2, "supervisor": 3, "client": 4}
    return sorted(names, key=lambda n: (rank.get(roles.get(n, ""), 5), n))


def _cpu_windows(report: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(label, in flight, window): each step, the run, the tail after it and the run with its tail."""
    cpu = report.get("cpu") or {}
    windows = [(f"step {r['index']}", r["level"], r) for r in cpu.get("steps") or []]
    for key, label in (("run", "run"), ("tail", "tail"), ("run_with_tail", "run + tail")):
        if cpu.get(key):
            windows.append((label, None, cpu[key]))
    return windows


def cpu_table(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """CPU-ms per answered request of each process, one row per step and one for the run, with the sums
    (OA nodes, the mesh, the chain with the client) and the chain against the floor's at that level."""
    windows = _cpu_windows(report)
    if not windows:
        return [], []
    procs = windows[0][2]["by_process"]
    names = _process_order(list(procs), {n: p.get("role", "") for n, p in procs.items()})
    headers = ["window", "in flight", "answered", *names, "OA nodes", "mesh", "chain", "chain ×floor"]
    rows = []
    for label, level, w in windows:
        sums = w.get("sums_ms_per_request") or {}
        ratio = ((w.get("ratio_to_floor") or {}).get("floor") or {}).get("ratio")
        rows.append(
            [
                label,
                level,
                w["requests"],
                *((w["by_process"].get(n) or {}).get("cpu_ms_per_request") for n in names),
                sums.get("oa_nodes"),
                sums.get("mesh"),
                sums.get("chain"),
                ratio,
            ]
        )
    return headers, rows


def oa_served_table(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Each OA node's CPU-ms per request it served itself (and how many), per step and over the run."""
    windows = [w for w in _cpu_windows(report) if w[0] != "tail"]
    if not windows:
        return [], []
    names = sorted(n for n, p in windows[0][2]["by_process"].items() if p.get("role") == "oa")
    rows = []
    for label, level, w in windows:
        cells = []
        for n in names:
            proc = w["by_process"].get(n) or {}
            per = proc.get("cpu_ms_per_served_request")
            cells.append(f"{fmt(per, 3)} ({proc.get('served', 0)})" if per is not None else "–")
        rows.append([label, level, *cells])
    return ["window", "in flight", *names], rows


def idle_table(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    idle = (report.get("cpu") or {}).get("idle")
    if not idle:
        return [], []
    procs = idle["by_process"]
    names = _process_order(list(procs), {n: p.get("role", "") for n, p in procs.items()})
    return ["window (s)", *names], [[idle["seconds"], *(procs[n]["cpu_ms_per_s"] for n in names)]]


def target_rows(report: dict[str, Any]) -> list[list[Any]]:
    return [
        [t["name"], t["value"], t["goal"], "met" if t["met"] else "MISSED"] for t in report.get("targets", [])
    ]


def render_html(report: dict[str, Any]) -> str:
    """The whole page."""
    summary = report["summary"]
    cfg = report.get("config", {})
    title = f"mycarenet-bench {report.get('name') or ''}".strip()
    rpc_rows = [summary_row("all", summary["overall"])] + [
        summary_row(k, v) for k, v in summary["by_rpc"].items()
    ]
    oa_rows = [summary_row("OA " + k if k != "-" else "not bound", v) for k, v in summary["by_oa"].items()]
    step_rows = []
    for s in report.get("steps", []):
        for rpc, row in [("all", s), *(s.get("by_rpc") or {}).items()]:
            echo, floor = row.get("ratio_to_echo") or {}, row.get("ratio_to_floor") or {}
            check = row.get("ratio_to_floor_check") or {}
            step_rows.append(
                [
                    s["index"],
                    s["level"],
                    rpc,
                    s["seconds"],
                    row.get("throughput_rps"),
                    _pct(row.get("availability")),
                    (row.get("latency_ms") or {}).get("p50"),
                    (row.get("latency_ms") or {}).get("p99"),
                    echo.get("p50"),
                    echo.get("p99"),
                    floor.get("p50"),
                    floor.get("p99"),
                    floor.get("throughput"),
                    check.get("p50"),
                    check.get("throughput"),
                ]
            )
    cpu_headers, cpu_table_rows = cpu_table(report)
    idle_headers, idle_rows = idle_table(report)
    served_headers, served_rows = oa_served_table(report)
    error_rows = [[rpc, key, n] for rpc, errs in report.get("errors", {}).items() for key, n in errs.items()]
    fault_rows = []
    for f in report.get("faults", []):
        rec = f.get("recovery") or {}
        fault_rows.append(
            [
                f["spec"],
                f["kind"],
                f["target"],
                f.get("applied_at"),
                f.get("cleared_at"),
                f.get("pid"),
                f.get("new_pid"),
                f.get("serving_after_s"),
                "; ".join(
                    f"{scope}: {r['recovery_seconds']:g}s, {r['impacted_seconds']} s below,"
                    f" worst {_pct(r['worst'])}"
                    for scope, r in rec.items()
                ),
                f.get("note", ""),
            ]
        )
    base = report.get("baseline") or {}
    base_rows = []
    for hop in ("echo_direct", "echo_proxy"):
        if hop in base:
            lat = base[hop]["latency"]["latency_ms"]
            base_rows.append(
                [
                    hop,
                    lat["p50"],
                    lat["p90"],
                    lat["p99"],
                    lat["max"],
                    base[hop]["throughput"]["concurrency"],
                    base[hop]["throughput"]["throughput_rps"],
                    base[hop]["throughput"]["latency_ms"]["p50"],
                ]
            )
    machine = report.get("machine", {})
    faults_note = f"{len(report.get('faults', []))} fault events" if report.get("faults") else "no faults"
    meta = (
        f"{_esc(report.get('started_at'))} · {cfg.get('mode')} loop · levels {_esc(cfg.get('levels'))} · "
        f"{fmt(report.get('duration_s'), 0)} s measured after {fmt(cfg.get('warmup'), 0)} s warm-up · mix "
        f"{_esc(cfg.get('mix'))} · deadline {fmt(cfg.get('deadline'), 1)} s · {faults_note} · "
        f"{machine.get('cpus')} CPUs, Python {_esc(machine.get('python'))},"
        f" grpcio {_esc(machine.get('grpc'))}"
    )
    hung = report.get("hung", 0)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; color: #222; max-width: 1300px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 16px; margin-top: 26px; }}
.meta {{ color: #555; font-size: 12px; }}
table {{ border-collapse: collapse; font-size: 12px; margin: 6px 0; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} th {{ background: #f4f4f4; }}
.kpi {{ display: inline-block; margin: 6px 18px 6px 0; }} .kpi b {{ font-size: 20px; display: block; }}
.bad {{ color: #d62728; }}
</style></head><body>
<h1>{_esc(title)}</h1>
<div class="meta">{meta}</div>
<div>
<span class="kpi"><b>{fmt(summary["overall"]["throughput_rps"])}</b>answered / s</span>
<span class="kpi"><b>{fmt(summary["overall"]["latency_ms"]["p50"])} ms</b>p50</span>
<span class="kpi"><b>{fmt(summary["overall"]["latency_ms"]["p99"])} ms</b>p99</span>
<span class="kpi"><b>{_pct(summary["overall"]["availability"])}</b>availability</span>
<span class="kpi"><b>{summary["overall"]["throttled"]}</b>throttled</span>
<span class="kpi {"bad" if hung else ""}"><b id="hung">{hung}</b>hung past deadline</span>
</div>
<h2>Latency over time (per second, from the intended send time) with faults</h2>
{latency_chart(report)}
<h2>Availability per second (successes and business answers over attempts)</h2>
{availability_chart(report)}
<h2>Percentile curves</h2>
{percentile_chart(report)}
<h2>Availability per OA</h2>
{availability_bars(report)}
<h2>Targets</h2>
{_table(TARGET_HEADERS, target_rows(report), "targets")}
<h2>Per RPC (ratios to the one-hop echo baseline and to the floor)</h2>
{_table(SUMMARY_HEADERS, rpc_rows, "by-rpc")}
<h2>Per OA</h2>
{_table(SUMMARY_HEADERS, oa_rows, "by-oa")}
<h2>Steps (closed loop: ratios to the floor at the same number in flight)</h2>
{_table(STEP_HEADERS, step_rows, "steps")}
<h2>CPU-ms per answered request, per process (/proc utime + stime, all threads)</h2>
{_table(cpu_headers, cpu_table_rows, "cpu")}
<h2>OA nodes: CPU-ms per request each served itself (requests served)</h2>
{_table(served_headers, served_rows, "oa-served-cpu")}
<h2>Idle CPU-ms per second (after the load, quiet window)</h2>
{_table(idle_headers, idle_rows, "idle-cpu")}
<h2>Faults</h2>
{_table(FAULT_HEADERS, fault_rows, "faults")}
<h2>Errors by status and MyCareNet code</h2>
{_table(["RPC", "status code reason", "count"], error_rows, "errors")}
<h2>Baseline of this machine</h2>
{_table(BASELINE_HEADERS, base_rows, "baseline")}
<h2>The floor: the minimal Python grpc.aio chain of a consult's shape, mutual TLS, same run</h2>
<p class="meta">floor: {_esc(((base.get("floor") or {}).get("chain")) or "–")};
floor_check: {_esc(((base.get("floor_check") or {}).get("chain")) or "–")}.</p>
{_table(FLOOR_HEADERS, floor_rows(base), "floor")}
<p class="meta">JSON report: the same data for machines. Generated by mycarenet-bench.</p>
</body></html>
"""


def write_reports(report: dict[str, Any], json_path: Path) -> Path:
    """Write the JSON report and the HTML page beside it (same name, ``.html``); returns the HTML path."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1))
    html_path = json_path.with_suffix(".html")
    html_path.write_text(render_html(report))
    return html_path
