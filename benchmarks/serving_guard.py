"""The serving benchmark's guard: which figures moved since the committed results.

Timings on these 2-core machines move from run to run, so one number against one number
says nothing. Each figure here carries its runs (the benchmark's interleaved rounds), and a
figure is judged by the band of its runs against the band of the committed ones:
REGRESSED when the two bands do not overlap and the new one lies on the bad side, better
when they do not overlap on the good side, ok otherwise.

A band runs from the lowest to the highest run, leaving out the one most extreme run at
each end once there are six or more: on a shared machine one round can land on another
job's burst, and one such round would otherwise widen the band until nothing is flagged.
With eight runs each and nothing changed, a band lies wholly above the other about once
in 200 tries (five runs each, all kept: once in 252).

The figures that are ratios or differences of targets measured in the same round (the
gateway against the bare hop, against direct) are what the guard is for; absolute ones also
move with the hour of the machine, which the direct scoring server's own figures show.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

HOP = "pass-through hop"
MIN_RUNS = 2  # one run makes a band of one point: every change would be outside it
TRIM_FROM = 6  # from this many runs on, a band leaves out the most extreme run at each end

# key: (label, unit, which way is better)
WATCHED: dict[str, tuple[str, str, str]] = {
    "gateway_own_c1_p50_ms": ("gateway's own share at c=1 (p50 over the bare hop)", "ms", "lower"),
    "gateway_minus_direct_c1_p50_ms": ("gateway over direct at c=1 (p50)", "ms", "lower"),
    "gateway_over_direct_c32_rps": ("gateway c=32 req/s over direct", "×", "higher"),
    "gateway_c32_p99_ms": ("gateway c=32 p99", "ms", "lower"),
    "gateway_c32_rps": ("gateway c=32 req/s", "req/s", "higher"),
    "gateway_over_direct_batch": ("gateway batch reviews/s over direct", "×", "higher"),
    "direct_c1_p50_ms": ("direct c=1 p50 (the scoring server, the machine)", "ms", "lower"),
    "direct_c32_rps": ("direct c=32 req/s (the scoring server, the machine)", "req/s", "higher"),
}

# key: (what is aimed at, met?) — targets to show, not assertions.
TARGETS = {
    "gateway_own_c1_p50_ms": ("≤ 0.5 ms", lambda v: v <= 0.5),
    "gateway_over_direct_c32_rps": ("≥ 10×", lambda v: v >= 10),
    "gateway_c32_p99_ms": ("< 25 ms", lambda v: v < 25),
}


# --------------------------------------------------------------------------- figures


def figures(single: dict[str, dict], batch: dict[str, dict]) -> dict[str, dict]:
    """The watched figures of one report: the pooled value and one value per round.

    Round i of every target ran back to back (benchmarks/serving.py `measure`), so a
    difference or ratio of two targets is taken round by round. A report without rounds
    (written before they were kept) gives figures without runs: no baseline, no crash.
    """
    direct, gateway = single.get("direct", {}), single.get("gateway", {})
    c1, c32 = (gateway.get(k, {}) for k in ("c1", "c32"))
    direct_c1, direct_c32 = (direct.get(k, {}) for k in ("c1", "c32"))
    values = {
        "gateway_minus_direct_c1_p50_ms": _paired(c1, direct_c1, "p50_ms", _minus),
        "gateway_over_direct_c32_rps": _paired(c32, direct_c32, "rps", _over),
        "gateway_c32_p99_ms": _own(c32, "p99_ms"),
        "gateway_c32_rps": _own(c32, "rps"),
        "direct_c1_p50_ms": _own(direct_c1, "p50_ms"),
        "direct_c32_rps": _own(direct_c32, "rps"),
    }
    if HOP in single:
        values["gateway_own_c1_p50_ms"] = _paired(c1, single[HOP].get("c1", {}), "p50_ms", _minus)
    if "gateway" in batch and "direct" in batch:
        values["gateway_over_direct_batch"] = _paired(
            batch["gateway"], batch["direct"], "rps", _over
        )
    result = {}
    for key, (label, unit, better) in WATCHED.items():
        value, runs = values.get(key, (None, []))
        if value is not None:
            result[key] = {
                "label": label,
                "unit": unit,
                "better": better,
                "value": _round(value),
                "runs": [_round(r) for r in runs],
            }
    return result


def _minus(a: float, b: float) -> float:
    return a - b


def _over(a: float, b: float) -> float:
    return a / b


Runs = tuple[float | None, list[float]]


def _own(part: dict, field: str) -> Runs:
    """One target's pooled figure and its value in each round."""
    rounds = part.get("rounds", [])
    return part.get(field), [r[field] for r in rounds] if all(field in r for r in rounds) else []


def _paired(a: dict, b: dict, field: str, op: Callable[[float, float], float]) -> Runs:
    """Two targets' figures combined, pooled with pooled and round i with round i."""
    (va, ra), (vb, rb) = _own(a, field), _own(b, field)
    value = op(va, vb) if va is not None and vb is not None else None
    runs = [op(x, y) for x, y in zip(ra, rb, strict=True)] if len(ra) == len(rb) else []
    return value, runs


def _round(value: float) -> float:
    return round(value, 3)


def committed(path: Path) -> tuple[dict[str, dict], dict]:
    """The figures of the results file at ``path``, and its meta (when, on what load).

    A file written before figures were kept has them derived from its rounds; no file, or
    one that cannot be read, is no baseline at all.
    """
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, {}
    meta = report.get("meta", {})
    if "figures" in report:
        return report["figures"], meta
    return figures(report.get("single", {}), report.get("batch", {})), meta


# --------------------------------------------------------------------------- judging


def verdict(before: list[float], now: list[float], better: str) -> str:
    """ok, better or REGRESSED: whether the bands of the runs are apart, and on which side."""
    if len(before) < MIN_RUNS:
        return "no baseline"
    if len(now) < MIN_RUNS:
        return "too few runs"
    (low, high), (new_low, new_high) = band(before), band(now)
    above, below = new_low > high, new_high < low
    worse, gained = (above, below) if better == "lower" else (below, above)
    return "REGRESSED" if worse else "better" if gained else "ok"


def band(runs: list[float]) -> tuple[float, float]:
    """Lowest to highest run, past the one most extreme at each end when there are enough."""
    ordered = sorted(runs)
    trim = 1 if len(ordered) >= TRIM_FROM else 0
    return ordered[trim], ordered[-1 - trim]


def compare(before: dict[str, dict], now: dict[str, dict]) -> list[dict]:
    """One row per figure measured now, judged against the committed figure of that name."""
    rows = []
    for key, figure in now.items():
        old = before.get(key) or {}
        rows.append(
            {
                "figure": key,
                "label": figure["label"],
                "unit": figure["unit"],
                "committed": old.get("value"),
                "committed_runs": old.get("runs") or [],
                "now": figure["value"],
                "runs": figure["runs"],
                "verdict": verdict(old.get("runs") or [], figure["runs"], figure["better"]),
            }
        )
    return rows


def targets(now: dict[str, dict]) -> list[dict]:
    rows = []
    for key, (aim, met) in TARGETS.items():
        if key in now:
            figure = now[key]
            rows.append(
                {
                    "figure": key,
                    "label": figure["label"],
                    "target": aim,
                    "measured": figure["value"],
                    "unit": figure["unit"],
                    "met": bool(met(figure["value"])),
                }
            )
    return rows


# --------------------------------------------------------------------------- tables


def guard_table(rows: list[dict], baseline: dict) -> list[str]:
    """``baseline``: the compared file, when and on what it was measured (the load matters)."""
    when, machine = baseline.get("measured_at"), baseline.get("machine")
    against = f"{baseline.get('file')} of {when}" if when else "no earlier results"
    if when and machine:
        against += f" ({machine})"
    lines = [
        f"Compared with {against}. Bands: each side's runs, lowest to highest (from 6 runs on, "
        "without the most extreme at each end); REGRESSED or better when they do not overlap.",
        "",
        "| figure | committed (band) | now (runs) | change | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        unit, old, runs = row["unit"], row["committed"], row["committed_runs"]
        committed_cell = "–" if old is None else _show(old, unit)
        if runs:
            low, high = band(runs)
            committed_cell += f" ({_num(low, unit)} to {_num(high, unit)})"
        now = f"{_show(row['now'], unit)} ({', '.join(_num(r, unit) for r in row['runs'])})"
        verdict_cell = f"**{row['verdict']}**" if row["verdict"] == "REGRESSED" else row["verdict"]
        lines.append(
            f"| {row['label']} | {committed_cell} | {now} | {_change(old, row['now'], unit)} "
            f"| {verdict_cell} |"
        )
    return lines


def targets_table(rows: list[dict]) -> list[str]:
    lines = ["| target (aimed at, not asserted) | aim | measured | |", "|---|---|---|---|"]
    for row in rows:
        met = "met" if row["met"] else "**not met**"
        lines.append(
            f"| {row['label']} | {row['target']} | {_show(row['measured'], row['unit'])} | {met} |"
        )
    return lines


def _num(value: float, unit: str) -> str:
    return f"{value:.0f}" if unit.endswith("/s") else f"{value:.2f}"


def _show(value: float, unit: str) -> str:
    return f"{_num(value, unit)}×" if unit == "×" else f"{_num(value, unit)} {unit}"


def _change(old: float | None, new: float, unit: str) -> str:
    if old is None:
        return "–"
    if unit == "ms":
        return f"{new - old:+.2f} ms"
    return f"{100 * (new / old - 1):+.0f}%" if old else "–"
