"""The steps of a training run, shared by the `main` and `tune` entry points.

prepare (load, split, record the data, clean) -> fit (on train, scored on validation only)
-> publish (refit on train+val when the preset says so, score the test split once, log,
register, promote). Choices are made on the validation split; the test split is scored once,
for the published model, as the final estimate. The run's ``val_*`` metrics, the version's
``val_f1`` tag and the champion/challenger comparison are always the train-only fit's, so a
refit model is still compared like with like. Each phase prints what it does and how long it
took. A failure before registration leaves the registry untouched.
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
from dataclasses import dataclass, replace
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.environment_variables import MLFLOW_RUN_ID
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from model.names import ALIAS, MODEL_NAME, TRAINING_EXPERIMENT
from model.preprocess import clean_text
from model.sentiment_model import SentimentModel
from model.signature import INPUT_EXAMPLE, SIGNATURE
from model.vectorize import compact
from monitoring import reference as monitoring_reference
from pipelines import evaluate, model_card, promote, slices
from pipelines.data import (
    CHOOSE,
    SPLIT,
    Splits,
    fingerprint,
    load_reviews,
    packaged_csv,
    rotten_tomatoes,
    split,
    without_near_duplicates,
)
from pipelines.errors import DataError, PromotionError
from pipelines.evaluate import answered_positive
from pipelines.features import fit_pipeline, slim

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = TRAINING_EXPERIMENT
MODEL_CODE = ROOT / "model" / "sentiment_model.py"
# The logged model's pip_requirements: the names in requirements/model.in, at the installed
# versions (tests/unit/test_project_files.py checks both).
SPLITS = ("train", "val", "test")
SERVING_PACKAGES = ("mlflow", "scikit-learn", "scipy", "numpy", "pandas", "cloudpickle", "joblib")


@contextmanager
def phase(name: str, what: str):
    print(f"[{name}] {what}...", flush=True)
    start = time.perf_counter()
    yield
    print(f"[{name}] done in {time.perf_counter() - start:.1f}s", flush=True)


@dataclass
class Prepared:
    splits: Splits
    cleaned: dict[str, list[str]]
    trained_on: promote.TrainedOn
    started: float
    data_path: str | None = None


def prepare(data_path: str | None, max_rows: int = 0, seed: int = 42) -> Prepared:
    """Load, clean every review once (keeping one of reviews that clean alike), split, and
    record the data set in the active run."""
    started = time.perf_counter()
    with phase("load", f"reading reviews from {data_path or 'the packaged IMDB data'}"):
        frame = load_reviews(data_path, max_rows=max_rows, seed=seed)
    with phase("clean", "cleaning text with model.preprocess.clean_text"):
        frame, kept = without_near_duplicates(frame, [clean_text(t) for t in frame["text"]])
    with phase("split", f"{SPLIT}, seed {seed}"):
        splits = split(frame.assign(cleaned=kept), seed)
        cleaned = {name: getattr(splits, name).pop("cleaned").tolist() for name in SPLITS}
        trained_on = promote.TrainedOn(fingerprint(frame), seed, max_rows)
        with warnings.catch_warnings():  # the integer label column is never missing
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(
                frame,
                source=Path(data_path or packaged_csv()).resolve().as_uri(),
                name=Path(data_path).name if data_path else "imdb-reviews",
                targets="label",
                digest=trained_on.data_digest,
            )
        mlflow.log_input(dataset, context="training")
        mlflow.log_params(
            {
                "seed": seed,
                "max_rows": max_rows,
                "data_digest": trained_on.data_digest,
                "split": SPLIT,
            }
        )
        print(
            f"  {len(frame)} reviews ({int(frame['label'].sum())} positive), data "
            f"{trained_on.data_digest}; train {len(splits.train)}, val {len(splits.val)}, "
            f"test {len(splits.test)}"
        )
    return Prepared(splits, cleaned, trained_on, started, data_path or None)


def clean(splits: Splits) -> dict[str, list[str]]:
    """Every split's texts, cleaned once, as the served model will clean them."""
    return {name: [clean_text(t) for t in getattr(splits, name)["text"]] for name in SPLITS}


TRAIN, TRAIN_VAL = "train", "train+val"  # the `fit_on` tag: the rows the published model saw


@dataclass
class Fitted:
    pipeline: Pipeline  # the model to publish
    metrics: dict[str, float]  # fit_seconds and val_*: nothing here has seen the test split
    params: dict[str, Any]
    seed: int
    fit_on: str = TRAIN
    validated: Pipeline | None = None  # the train-only fit behind val_*, when refitted

    @property
    def unseen_validation(self) -> Pipeline:
        """The fit that never saw the validation rows: its answers on them are honest."""
        return self.validated if self.validated is not None else self.pipeline


def train_on(
    params: dict[str, Any], texts: list[str], labels, seed: int, **calibrate: Any
) -> Pipeline:
    """``fit_pipeline``; ``calibrate``: its ``validation`` or ``calibration``."""
    try:
        pipeline = fit_pipeline(params, texts, labels, seed, **calibrate)
    except ValueError as error:
        if "no terms remain" not in str(error) and "empty vocabulary" not in str(error):
            raise
        raise DataError(
            f"No term appears in at least {params['min_df']} of the {len(texts)} "
            "training reviews: the data set is too small to learn from."
        ) from None
    return slim(pipeline)


def fit(params: dict[str, Any], data: Prepared, seed: int) -> Fitted:
    """Fit on the training split; score on validation only."""
    start = time.perf_counter()
    validation = (data.cleaned["val"], data.splits.val["label"].to_numpy())
    train_labels = data.splits.train["label"].to_numpy()
    pipeline = train_on(params, data.cleaned["train"], train_labels, seed, validation=validation)
    metrics = {"fit_seconds": time.perf_counter() - start}
    p_positive = pipeline.predict_proba(data.cleaned["val"])[:, 1]
    scores = evaluate.score(data.splits.val["label"], p_positive)
    metrics |= {f"val_{name}": value for name, value in scores.items()}
    return Fitted(pipeline, metrics, params, seed)


def refit(fitted: Fitted, data: Prepared) -> Fitted:
    """The same recipe fitted again on train+val (the texts cleaned once), when the preset asks:
    chosen on validation, then fitted on every non-test row. The validation figures stay the
    train-only fit's; nothing here sees the test split."""
    if not fitted.params.get("refit") or fitted.fit_on != TRAIN:
        print(f"  publishing the fit on the training split ({len(data.splits.train)} reviews)")
        return fitted
    rows = len(data.splits.train) + len(data.splits.val)
    with phase("refit", f"fitting the same recipe on train+val ({rows} reviews)"):
        start = time.perf_counter()
        labels = np.concatenate(
            [data.splits.train["label"].to_numpy(), data.splits.val["label"].to_numpy()]
        )
        texts = data.cleaned["train"] + data.cleaned["val"]
        # A length-aware classifier keeps the calibration fitted on validation: the refit has
        # seen those rows, so nothing is left to fit it on.
        calibration = getattr(fitted.pipeline[-1], "calibration", None)
        pipeline = train_on(fitted.params, texts, labels, fitted.seed, calibration=calibration)
        seconds = time.perf_counter() - start
    return replace(
        fitted,
        pipeline=pipeline,
        metrics={**fitted.metrics, "refit_seconds": seconds},
        fit_on=TRAIN_VAL,
        validated=fitted.pipeline,
    )


def estimate(fitted: Fitted, data: Prepared) -> tuple[dict[str, float], model_card.Evidence]:
    """Score the chosen model on the test split, once, and log the evaluation pictures; the
    same answers, slices and probe sets are the model card's evidence."""
    test = data.splits.test
    p_positive = fitted.pipeline.predict_proba(data.cleaned["test"])[:, 1]
    evaluate.log_report("test", test["text"].tolist(), test["label"], p_positive)
    rows = {name: len(getattr(data.splits, name)) for name in SPLITS}
    # One served model for the card and the slices: preparing it builds its term lookups.
    model = SentimentModel(fitted.pipeline)
    evidence = model_card.measure(model, test["text"].tolist(), test["label"], p_positive, rows)
    measured = slices.measure(
        lambda texts: answered_positive(model.predict(None, pd.DataFrame({"text": texts}))),
        test["text"].tolist(),
        test["label"],
        p_positive,
    )
    slices.log(measured)
    evidence.metrics |= measured.metrics
    scores = evaluate.score(test["label"], p_positive)
    return {f"test_{name}": value for name, value in scores.items()}, evidence


def log_model(
    pipeline: Pipeline, reference: Callable[[Path], dict[str, str]] | None = None
) -> tuple[mlflow.models.model.ModelInfo, float]:
    """Log the pyfunc (model code + fitted pipeline, + the monitoring reference that
    ``reference`` writes into a folder); returns its info and size in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.joblib"
        # The vocabulary as one string: the scoring server loads it in a fraction of the time.
        joblib.dump(compact(pipeline), path, compress=3)
        size_mb = path.stat().st_size / 1e6
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"pipeline": str(path), **(reference(Path(tmp)) if reference else {})},
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


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def publish(
    fitted: Fitted,
    data: Prepared,
    preset: str,
    promote_mode: str,
    model_name: str,
    alias: str = ALIAS,
    short_margin: float = promote.SHORT_MARGIN,
) -> str:
    """Refit if the preset says so, estimate on test, log, register and maybe move ``alias``
    (``production``, or ``challenger`` for a model retrained on feedback); returns the version."""
    m = fitted.metrics
    print(f"  Validation Metrics - Accuracy: {m['val_accuracy']:.4f}, F1: {m['val_f1']:.4f}")
    fitted = refit(fitted, data)
    m = fitted.metrics
    with phase("evaluate", "scoring the test split (the final estimate) and drawing its curves"):
        test, evidence = estimate(fitted, data)
        print(f"  Test Metrics - Accuracy: {test['test_accuracy']:.4f}, F1: {test['test_f1']:.4f}")
    with phase("log", "logging the pyfunc model and its monitoring reference (validation)"):
        val = data.splits.val
        # The reference is the train-only fit's answers on the validation rows: a refit model
        # has trained on them, and its confidences and known-term ratios there would be those
        # of seen text; on rows it never saw they are what the served model shows on new
        # traffic. Its validation accuracy is then the run's val_accuracy.
        info, size_mb = log_model(
            fitted.pipeline,
            lambda folder: monitoring_reference.write(
                folder,
                fitted.unseen_validation,
                val["text"],
                val["label"],
                test["test_accuracy"],
            ),
        )
    with phase("register", f"registering a new version of {model_name}"):
        on = data.trained_on
        tags = {
            **{k: f"{v:.4f}" for k, v in test.items()},
            "val_f1": f"{m['val_f1']:.4f}",
            **{
                name: f"{evidence.metrics[name]:.4f}"
                for name in ("rt_choose_accuracy", "rt_report_accuracy", "test_ece")
            },
            **on.tags(),
            "git_commit": git_commit(),
            "preset": preset,
            "fit_on": fitted.fit_on,
        }
        sample = f"a sample of {on.max_rows}" if on.max_rows else "all rows"
        fitted_rows = len(data.splits.train) + (len(val) if fitted.fit_on == TRAIN_VAL else 0)
        description = (
            f"Preset '{preset}' fitted on {fitted.fit_on} ({fitted_rows} reviews) "
            f"(data {on.data_digest}, {sample}, split seed {on.split_seed}); "
            f"validation F1 {m['val_f1']:.4f}; "
            f"test accuracy {test['test_accuracy']:.4f}, F1 {test['test_f1']:.4f}."
        )
        version = register(info, model_name, tags, description)
        print(f"  {model_name} version {version}")
    seconds = time.perf_counter() - data.started
    mlflow.log_param("fit_on", fitted.fit_on)
    mlflow.log_metrics({**m, **test, "model_size_mb": size_mb, "training_seconds": seconds})
    mlflow.log_metrics(evidence.metrics)
    print(f"  model {size_mb:.1f} MB; load to registered model in {seconds:.1f}s")
    rerun = model_card.rerun(preset, promote_mode, data.data_path, on)
    with (
        phase("promote", f"champion/challenger on validation (promote={promote_mode})"),
        model_card.written(model_name, version, evidence, rerun),
    ):
        short = promote.ShortRule(
            evidence.metrics[f"{slices.SHORT}_accuracy"],
            rotten_tomatoes(CHOOSE),
            short_margin,
        )
        promote.champion_challenger(
            promote_mode, model_name, version, m["val_f1"], on, data.splits.val, alias, short
        )
    return version


def whole(value: str) -> int:
    """MLproject passes numbers as floats ("2000.0")."""
    return int(float(value))


def parser(description: str) -> argparse.ArgumentParser:
    """The options `main` and `tune` share (the MLproject parameters)."""
    cli = argparse.ArgumentParser(description=description)
    cli.add_argument(
        "--data-path", default="", help="Kaggle CSV or aclImdb folder; empty = packaged"
    )
    cli.add_argument("--promote", choices=promote.MODES, default="if_better")
    cli.add_argument("--max-rows", type=whole, default=0, help="stratified sample size; 0 = all")
    cli.add_argument("--seed", type=whole, default=42)
    cli.add_argument("--model-name", default=MODEL_NAME)
    cli.add_argument(
        "--short-margin",
        type=float,
        default=promote.SHORT_MARGIN,
        help="how much lower than production's the short-text accuracy may be (0.01: 1 point)",
    )
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
    except PromotionError as error:
        print(f"Not promoted: {error}", file=sys.stderr)
        return 1
    print(f"{done} completed successfully! {model_name} version {version}")
    return 0
