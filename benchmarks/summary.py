"""One table from every benchmark's results: what `make bench` prints at the end.

Each benchmark writes benchmarks/results/<name>.json; this reads them, so the summary shows
exactly what was measured, with the date of each measurement, and writes summary.md.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _model(rows: list[tuple[str, str, str, str]]) -> None:
    data = _load("model")
    if not data:
        return
    when = data["meta"]["measured_at"][:16]
    cost = data["cost"]
    rows.append(
        (
            "model: predict µs per review (1,000 reviews)",
            f"{cost['model_us']:.0f} µs",
            f"plain scikit-learn (1,3) TF-IDF + LR {cost['plain_us']:.0f} µs: {cost['ratio']:.2f}×",
            when,
        )
    )
    load = data.get("load")
    if load:
        rows.append(
            (
                "model: load_context",
                f"{load['model_load_s'] * 1000:.0f} ms",
                f"with the vocabulary pickled as a dict: {load['before_s'] * 1000:.0f} ms"
                if load.get("before_s")
                else "",
                when,
            )
        )
    cold = data.get("cold_start")
    if cold:
        rows.append(
            (
                "scoring server: cold start to first answer",
                f"{cold['seconds']:.1f} s",
                cold.get("note", ""),
                when,
            )
        )


def _serving(rows: list[tuple[str, str, str, str]]) -> None:
    data = _load("serving")
    if not data:
        return
    when = data["meta"]["measured_at"][:16]
    single, ratios = data["single"], data["ratios"]
    gateway, direct = single["gateway"], single["direct"]
    hop = single.get("pass-through hop")
    floor = (
        f", a bare pass-through hop {hop['c1']['p50_ms']:.2f} ms "
        f"(+{hop['c1']['p50_ms'] - direct['c1']['p50_ms']:.2f})"
        if hop
        else ""
    )
    rows += [
        (
            "gateway: c=1 p50 over direct /invocations",
            f"+{ratios['gateway_minus_direct_c1_p50_ms']:.2f} ms",
            f"direct {direct['c1']['p50_ms']:.2f} ms, gateway {gateway['c1']['p50_ms']:.2f} ms"
            f"{floor}",
            when,
        ),
        (
            "gateway: c=32 throughput",
            f"{gateway['c32']['rps']:.0f} req/s",
            f"{ratios['gateway_over_direct_c32_rps']:.2f}× direct "
            f"({direct['c32']['rps']:.0f} req/s); p99 {gateway['c32']['p99_ms']:.1f} ms",
            when,
        ),
    ]
    batch = data["batch"]
    size = data["meta"]["batch_size"]
    rows.append(
        (
            f"gateway: batches of {size:,} reviews",
            f"{batch['gateway']['rps'] * size:.0f} reviews/s",
            f"{ratios['gateway_over_direct_batch']:.2f}× direct "
            f"({batch['direct']['rps'] * size:.0f} reviews/s)",
            when,
        )
    )


def _batch(rows: list[tuple[str, str, str, str]]) -> None:
    data = _load("batch")
    if not data:
        return
    spark, one = data["targets"]["local[*]"], data["targets"]["pyfunc"]
    # The rates past each job's fixed cost are what a larger corpus gets; the overall rates
    # of this corpus are given beside them (Spark's fixed cost is the larger).
    rows.append(
        (
            f"Spark batch scoring, {data['rows']:,} reviews",
            f"{spark['scoring_rows_per_s']:.0f} reviews/s past a {spark['fixed_s']:.0f} s "
            f"fixed cost ({spark['rows_per_s_total']:.0f} overall)",
            f"local[*] {data['vs_baseline']:.2f}× one process "
            f"({one['scoring_rows_per_s']:.0f} reviews/s past {one['fixed_s']:.0f} s; "
            f"{one['rows_per_s_total']:.0f} overall)"
            + (
                f"; {data['vs_alone']:.2f}× `predict` alone ({data['alone_rows_per_s']:.0f}/s)"
                if "vs_alone" in data
                else ""
            ),
            data["date"][:16],
        )
    )


def _training(rows: list[tuple[str, str, str, str]]) -> None:
    data = _load("training")
    if not data:
        return
    when = data["measured_at"][:16]
    for row in data["rows"]:
        behaviour = {
            k.removeprefix("behaviour_"): v
            for k, v in row.items()
            if k.startswith("behaviour_") and not k.endswith("_cases")
        }
        rates = ", ".join(f"{k} {v:.1%}" for k, v in behaviour.items())
        rows.append(
            (
                f"preset `{row['preset']}`: test accuracy",
                f"{row['test_accuracy']:.4f}",
                f"training {row['training_seconds']:.0f} s, model {row['model_size_mb']:.2g} MB"
                + (f"; behaviour: {rates}" if rates else ""),
                when,
            )
        )


def markdown() -> str:
    rows: list[tuple[str, str, str, str]] = []
    for section in (_model, _serving, _batch, _training):
        section(rows)
    lines = ["| figure | measured | against | when (UTC) |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    table = markdown()
    print("\n" + table)
    (RESULTS / "summary.md").write_text(
        "Every benchmark's headline figure (`make bench`; details in the other files here).\n\n"
        + table
        + "\n"
    )


if __name__ == "__main__":
    main()
