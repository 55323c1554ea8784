"""Training benchmark: each preset trained, logged and registered as `mlflow run` would.

Runs against a throwaway SQLite store so nothing touches the real registry, and
prints one table: preset, test accuracy, F1 and ECE, the short slices the run reports (test
segments, the Rotten Tomatoes report half), load-to-registered seconds, model MB.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from pipelines import behaviour
from pipelines.features import PRESETS
from pipelines.train import run
from pipelines.training import EXPERIMENT

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS: tuple[str, ...] = (
    "preset",
    "test_accuracy",
    "test_f1",
    "test_ece",
    "segments_accuracy",
    "rt_report_accuracy",
    "rt_report_ece",
    "training_seconds",
    "model_size_mb",
)
COLUMNS += tuple(f"behaviour_{name}" for name in behaviour.CAPABILITIES)  # pass rates


def measure(presets: list[str], max_rows: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_experiment(EXPERIMENT)
        client = MlflowClient()
        for preset in presets:
            with mlflow.start_run(run_name=f"bench-{preset}") as active:
                run(None, preset, "never", max_rows=max_rows)
            metrics = client.get_run(active.info.run_id).data.metrics
            rows.append({"preset": preset, **{k: metrics[k] for k in COLUMNS[1:]}})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| preset | test accuracy | test F1 | test ECE | test segments | Rotten Tomatoes "
        "(report half) | its ECE | training s (load → registered) | model MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['test_accuracy']:.4f} | {r['test_f1']:.4f} | "
            f"{r['test_ece']:.3f} | {r['segments_accuracy']:.4f} | "
            f"{r['rt_report_accuracy']:.4f} | {r['rt_report_ece']:.3f} | "
            f"{r['training_seconds']:.1f} | {r['model_size_mb']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("--presets", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS))
    cli.add_argument("--max-rows", type=int, default=0)
    args = cli.parse_args()
    rows = measure(args.presets, args.max_rows)
    table = markdown(rows) + "\n\nBehavioural pass rates:\n\n" + behaviour.table(rows)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "command": "make bench-training",
    }
    (RESULTS / "training.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (RESULTS / "training.md").write_text(
        f"Measured {meta['measured_at']} with `{meta['command']}`.\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
