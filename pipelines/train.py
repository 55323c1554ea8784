"""Entry point `main`: load, split, clean, fit, evaluate, log, register, promote.

Each phase prints what it does and how long it took. A failure before
registration leaves the registry untouched.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
from mlflow.environment_variables import MLFLOW_RUN_ID
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from model.preprocess import clean_text
from model.signature import INPUT_EXAMPLE, SIGNATURE
from pipelines import evaluate, promote
from pipelines.data import DataError, Splits, load_reviews, packaged_csv, split
from pipelines.features import PRESETS, build_pipeline, slim

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "Sentiment-Analysis"
MODEL_CODE = ROOT / "model" / "sentiment_model.py"
# The logged model's pip_requirements: the names in requirements/model.txt, at the installed
# versions (tests/unit/test_project_files.py checks both).
SERVING_PACKAGES = ("mlflow", "scikit-learn", "scipy", "numpy", "pandas", "cloudpickle", "joblib")


@contextmanager
def phase(name: str, what: str):
    print(f"[{name}] {what}...", flush=True)
    start = time.perf_counter()
    yield
    print(f"[{name}] done in {time.perf_counter() - start:.1f}s", flush=True)


@dataclass
class Fitted:
    pipeline: Pipeline
    metrics: dict[str, float]
    test_p_positive: np.ndarray


def fit(params: dict[str, Any], splits: Splits, cleaned: dict[str, list[str]], seed: int) -> Fitted:
    """Fit on the training split; score on validation and test."""
    pipeline = build_pipeline(params, seed)
    start = time.perf_counter()
    pipeline.fit(cleaned["train"], splits.train["label"].to_numpy())
    metrics = {"fit_seconds": time.perf_counter() - start}
    probabilities = {}
    for name in ("val", "test"):
        probabilities[name] = pipeline.predict_proba(cleaned[name])[:, 1]
        labels = getattr(splits, name)["label"]
        metrics |= {f"{name}_{k}": v for k, v in evaluate.score(labels, probabilities[name]).items()}
    return Fitted(slim(pipeline), metrics, probabilities["test"])


def log_model(pipeline: Pipeline) -> tuple[mlflow.models.model.ModelInfo, float]:
    """Log the pyfunc (model code + fitted pipeline); returns its info and size in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.joblib"
        joblib.dump(pipeline, path, compress=3)
        size_mb = path.stat().st_size / 1e6
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"pipeline": str(path)},
            code_paths=[str(ROOT / "model")],
            signature=SIGNATURE,
            input_example=INPUT_EXAMPLE,
            pip_requirements=[f"{name}=={installed(name)}" for name in SERVING_PACKAGES],
        )
    return info, size_mb


def register(info, name: str, tags: dict[str, str], description: str) -> str:
    registered = mlflow.register_model(info.model_uri, name, tags=tags)
    MlflowClient().update_model_version(name, registered.version, description=description)
    return registered.version


def champion_f1(name: str, splits: Splits) -> tuple[str | None, float | None]:
    """The production version and its test F1 on this run's test split."""
    champion = promote.current(MlflowClient(), name)
    if champion is None:
        return None, None
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
        predictions = model.predict(splits.test[["text"]])
        p_positive = evaluate.pyfunc_p_positive(predictions)
    except Exception as error:  # a production model that cannot score loses by default
        print(f"  production version {champion.version} could not be scored: {error}")
        return champion.version, 0.0
    return champion.version, evaluate.score(splits.test["label"], p_positive)["f1"]


def promote_if_chosen(mode: str, name: str, version: str, f1: float, splits: Splits) -> bool:
    """Champion/challenger on this run's test split.

    The registry has no compare-and-set, so the alias is re-read just before it is moved;
    if another run moved it meanwhile, the comparison is made again against that version.
    """
    if mode != "never":
        promote.check(name, version)
    for _ in range(3):
        champion, champion_score = champion_f1(name, splits) if mode == "if_better" else (None, None)
        chosen, reason = promote.decide(mode, f1, champion_score)
        mlflow.set_tags({"promotion.decision": "promoted" if chosen else "kept", "promotion.reason": reason})
        if champion_score is not None:
            mlflow.log_metric("champion_test_f1", champion_score)
            print(f"  production is version {champion} (test F1 {champion_score:.4f})")
        if not chosen:
            print(f"Not promoted: {reason}.")
            return False
        latest = promote.current(MlflowClient(), name)
        if mode == "if_better" and (latest.version if latest else None) != champion:
            continue
        promote.move_alias(name, version)
        print(f"This is the best model! Promoting to production... ({reason})")
        return True
    print("Not promoted: the production alias kept moving during the comparison.")
    return False


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


@dataclass
class Prepared:
    splits: Splits
    cleaned: dict[str, list[str]]
    digest: str
    started: float


def prepare(data_path: str | None, max_rows: int = 0, seed: int = 42) -> Prepared:
    """Load, split, record the data set in the active run, and clean every split once."""
    started = time.perf_counter()
    with phase("load", f"reading reviews from {data_path or 'the packaged IMDB data'}"):
        frame = load_reviews(data_path, max_rows=max_rows, seed=seed)
        splits = split(frame, seed)
        with warnings.catch_warnings():  # the integer label column is never missing
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame,
                source=Path(data_path or packaged_csv()).resolve().as_uri(),
                name=Path(data_path).name if data_path else "imdb-reviews",
                targets="label",
            )
        mlflow.log_input(dataset, context="training")
        print(f"  {len(frame)} reviews ({int(frame['label'].sum())} positive); "
              f"train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)}")
    with phase("clean", "cleaning text with model.preprocess.clean_text"):
        cleaned = {n: [clean_text(t) for t in getattr(splits, n)["text"]] for n in ("train", "val", "test")}
    return Prepared(splits, cleaned, dataset.digest, started)


def publish(fitted: Fitted, data: Prepared, preset: str, promote_mode: str, model_name: str) -> str:
    """Report, log, register and maybe promote a fitted model; returns its version."""
    m, splits = fitted.metrics, data.splits
    print(f"  Validation Metrics - Accuracy: {m['val_accuracy']:.4f}, F1: {m['val_f1']:.4f}")
    print(f"  Test Metrics - Accuracy: {m['test_accuracy']:.4f}, F1: {m['test_f1']:.4f}")
    with phase("evaluate", "drawing the confusion matrix, ROC and PR curves"):
        evaluate.log_report("test", splits.test["text"].tolist(), splits.test["label"], fitted.test_p_positive)
    with phase("log", "logging the pyfunc model"):
        info, size_mb = log_model(fitted.pipeline)
    with phase("register", f"registering a new version of {model_name}"):
        tags = {
            **{k: f"{v:.4f}" for k, v in m.items() if k.startswith("test_")},
            "data_digest": data.digest,
            "git_commit": git_commit(),
            "preset": preset,
        }
        description = (
            f"Preset '{preset}' trained on {len(splits.train)} reviews (data {data.digest}); "
            f"test accuracy {m['test_accuracy']:.4f}, F1 {m['test_f1']:.4f}."
        )
        version = register(info, model_name, tags, description)
        print(f"  {model_name} version {version}")
    seconds = time.perf_counter() - data.started
    mlflow.log_metrics({**m, "model_size_mb": size_mb, "training_seconds": seconds})
    print(f"  model {size_mb:.1f} MB; load to registered model in {seconds:.1f}s")
    with phase("promote", f"champion/challenger (promote={promote_mode})"):
        promote_if_chosen(promote_mode, model_name, version, m["test_f1"], splits)
    return version


def run(
    data_path: str | None,
    preset: str,
    promote_mode: str,
    max_rows: int = 0,
    seed: int = 42,
    model_name: str = promote.MODEL_NAME,
) -> str:
    """Train one preset inside the active MLflow run; returns the registered version."""
    data = prepare(data_path, max_rows, seed)
    params = PRESETS[preset]
    mlflow.log_params({"preset": preset, "seed": seed, "max_rows": max_rows, **params})
    with phase("fit", f"fitting the '{preset}' preset"):
        fitted = fit(params, data.splits, data.cleaned, seed)
    return publish(fitted, data, preset, promote_mode, model_name)


def whole(value: str) -> int:
    """MLproject passes numbers as floats ("2000.0")."""
    return int(float(value))


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description="Train, register and maybe promote a model.")
    cli.add_argument("--data-path", default="", help="Kaggle CSV or aclImdb folder; empty = packaged")
    cli.add_argument("--preset", choices=sorted(PRESETS), default="best")
    cli.add_argument("--promote", choices=promote.MODES, default="if_better")
    cli.add_argument("--max-rows", type=whole, default=0, help="stratified sample size; 0 = all")
    cli.add_argument("--seed", type=whole, default=42)
    cli.add_argument("--model-name", default=promote.MODEL_NAME)
    return cli


def entry_point(run_name: str, work: Callable[[], str], done: str, model_name: str) -> int:
    """Run ``work`` in an MLflow run; a bad data set or an unservable model exits non-zero."""
    if not MLFLOW_RUN_ID.get():  # `mlflow run` has already chosen the experiment and run
        mlflow.set_experiment(EXPERIMENT)
    try:
        with mlflow.start_run(run_name=run_name):
            version = work()
    except DataError as error:
        print(f"Data error: {error} Nothing was registered.", file=sys.stderr)
        return 2
    except promote.PromotionError as error:
        print(f"Not promoted: {error}", file=sys.stderr)
        return 1
    print(f"{done} completed successfully! {model_name} version {version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return entry_point(
        f"train-{args.preset}",
        lambda: run(args.data_path, args.preset, args.promote, args.max_rows, args.seed, args.model_name),
        "Training",
        args.model_name,
    )


if __name__ == "__main__":
    sys.exit(main())
