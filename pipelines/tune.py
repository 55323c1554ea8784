"""Entry point `tune`: a small grid as nested runs, chosen on validation F1, then published.

Candidates are scored on the validation split only; the test split is scored once, for
the chosen one (see `pipelines.training`).
"""

from __future__ import annotations

import sys
from itertools import product
from typing import Any

import mlflow

from pipelines.features import PRESETS
from pipelines.promote import SHORT_MARGIN
from pipelines.training import entry_point, fit, parser, phase, prepare, publish

GRID: dict[str, list[Any]] = {
    "ngram_range": [(1, 2), (1, 3)],
    "C": [32.0, 64.0, 128.0],
    "nb_alpha": [0.05, 0.25],
}


def candidates() -> list[dict]:
    keys = list(GRID)
    return [
        PRESETS["best"] | dict(zip(keys, values, strict=True)) for values in product(*GRID.values())
    ]


def tune(
    data_path: str,
    promote_mode: str,
    max_rows: int,
    seed: int,
    model_name: str,
    short_margin: float = SHORT_MARGIN,
) -> str:
    data = prepare(data_path, max_rows, seed)
    best = None
    for number, params in enumerate(candidates(), start=1):
        label = ", ".join(f"{k}={params[k]}" for k in GRID)
        with mlflow.start_run(run_name=f"candidate-{number}", nested=True):
            mlflow.log_params({"seed": seed, **params})
            with phase(f"fit {number}", label):
                fitted = fit(params, data, seed)
            mlflow.log_metrics(fitted.metrics)
            print(f"  validation F1 {fitted.metrics['val_f1']:.4f}")
        if best is None or fitted.metrics["val_f1"] > best[1].metrics["val_f1"]:
            best = (params, fitted)
    if best is None:
        raise ValueError("the grid has no candidates")
    params, fitted = best
    print(f"Best on validation: {', '.join(f'{k}={params[k]}' for k in GRID)}")
    mlflow.log_params({"preset": "tuned", **params})
    mlflow.log_param("short_margin", short_margin)
    return publish(fitted, data, "tuned", promote_mode, model_name, short_margin=short_margin)


def main(argv: list[str] | None = None) -> int:
    args = parser("Grid-search a model, register the best and maybe promote it.").parse_args(argv)
    return entry_point(
        "tune",
        lambda: tune(
            args.data_path,
            args.promote,
            args.max_rows,
            args.seed,
            args.model_name,
            args.short_margin,
        ),
        "Tuning",
        args.model_name,
    )


if __name__ == "__main__":
    sys.exit(main())
