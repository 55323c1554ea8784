"""Entry point `main`: train one preset, then publish it (see `pipelines.training`)."""

from __future__ import annotations

import sys

import mlflow

from model.names import MODEL_NAME
from pipelines.features import PRESETS
from pipelines.promote import SHORT_MARGIN
from pipelines.training import entry_point, fit, parser, phase, prepare, publish


def run(
    data_path: str | None,
    preset: str,
    promote_mode: str,
    max_rows: int = 0,
    seed: int = 42,
    model_name: str = MODEL_NAME,
    short_margin: float = SHORT_MARGIN,
) -> str:
    """Train one preset inside the active MLflow run; returns the registered version."""
    data = prepare(data_path, max_rows, seed)
    params = PRESETS[preset]
    mlflow.log_params({"preset": preset, **params})
    with phase("fit", f"fitting the '{preset}' preset"):
        fitted = fit(params, data, seed)
    mlflow.log_param("short_margin", short_margin)
    return publish(fitted, data, preset, promote_mode, model_name, short_margin=short_margin)


def main(argv: list[str] | None = None) -> int:
    cli = parser("Train, register and maybe promote a model.")
    cli.add_argument("--preset", choices=sorted(PRESETS), default="best")
    args = cli.parse_args(argv)
    return entry_point(
        f"train-{args.preset}",
        lambda: run(
            args.data_path,
            args.preset,
            args.promote,
            args.max_rows,
            args.seed,
            args.model_name,
            args.short_margin,
        ),
        "Training",
        args.model_name,
    )


if __name__ == "__main__":
    sys.exit(main())
