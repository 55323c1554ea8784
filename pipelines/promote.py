"""Move the ``production`` alias, with checks; also the `promote` entry point.

Aliases replace the stages deprecated in MLflow 3: the gateway follows
``models:/SentimentClassifier@production`` wherever it points.
"""

from __future__ import annotations

import argparse
import sys

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from model.names import ALIAS, LABELS, MODEL_NAME
from model.signature import INPUT_EXAMPLE
MODES = ("never", "if_better", "always")


class PromotionError(RuntimeError):
    """The version cannot serve: it is missing, does not load, or predicts nonsense."""


def current(client: MlflowClient, name: str = MODEL_NAME) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None


def check(name: str, version: str) -> None:
    """The version exists, loads in this process and predicts the input example sensibly."""
    client = MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise PromotionError(f"{name} has no version {version}.") from None
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        predictions = loaded.predict(INPUT_EXAMPLE)
    except Exception as error:  # any failure here means the version cannot serve
        raise PromotionError(f"version {version} does not load or predict: {error}") from None
    missing = {"sentiment", "confidence"} - set(getattr(predictions, "columns", []))
    if missing:
        raise PromotionError(f"version {version} output lacks {', '.join(sorted(missing))}.")
    if list(predictions["sentiment"]) != list(reversed(LABELS)):
        raise PromotionError(
            f"version {version} gets the input example wrong: {list(predictions['sentiment'])}."
        )


def move_alias(name: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, ALIAS, version)


def decide(mode: str, challenger_f1: float, champion_f1: float | None) -> tuple[bool, str]:
    """Champion/challenger on the same test split: ties go to the newer model."""
    if mode == "never":
        return False, "promotion disabled (promote=never)"
    if mode == "always":
        return True, "promotion forced (promote=always)"
    if champion_f1 is None:
        return True, "no production model yet"
    if challenger_f1 >= champion_f1:
        return True, f"test F1 {challenger_f1:.4f} >= production's {champion_f1:.4f}"
    return False, f"test F1 {challenger_f1:.4f} < production's {champion_f1:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Point the production alias at a version.")
    parser.add_argument("--version", required=True, help="registered version number")
    parser.add_argument("--model-name", default=MODEL_NAME)
    args = parser.parse_args(argv)
    try:
        check(args.model_name, args.version)
    except PromotionError as error:
        print(f"Not promoted: {error}", file=sys.stderr)
        return 1
    before = current(MlflowClient(), args.model_name)
    move_alias(args.model_name, args.version)
    was = f" (was version {before.version})" if before else ""
    print(f"{args.model_name}@{ALIAS} -> version {args.version}{was}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
