"""Entry point `monitor`: how the served version did over a period, as an MLflow run.

It reads what the gateways wrote to the log store (monitoring/log_store): the prediction log
and the labels sent to /feedback, for the period since the last monitoring run (or
``--since``), from the PostgreSQL database of PREDICTION_LOG_URI or else the files under
``<state_dir>/monitoring`` (``make up``'s layout). The
served version is the one the gateway's /info names when it answers, else the version of the
period's last logged prediction. Its reference (logged inside the model by training) gives
the comparison: PSI drift per feature (``monitoring.drift``), Evidently's report (HTML
artifact and metrics), the label-free estimated accuracy (CBPE), and the accuracy measured on
the period's feedback labels.

Verdicts (run tag ``monitoring.verdict``, also set on the model version):

- ``degraded``: the model is likely wrong more often than it was on its test split: with at
  least ``MIN_LABELS`` feedback labels for the version, their accuracy is more than
  ``TOLERANCE`` (5 points) under the reference's test accuracy; or the estimated accuracy is.
- ``drift``: not degraded, but the period's traffic differs from the validation data: the
  largest per-feature PSI is above the threshold (0.2) over at least 200 predictions.
- ``ok``: neither.
- ``no_data``: no prediction was logged in the period; the run records the period and no
  model version is tagged.

With ``--retrain if_needed`` and a verdict of ``drift`` or ``degraded``, a challenger is
trained in the ``Sentiment-Analysis`` experiment on the served version's data (its split
seed and sample, read from its tags) plus the period's feedback labels that came with their
text, added to the training split only; reviews of the validation or test split are left out
of the feedback, so both versions are still scored on the same validation rows and compared
as for any training run (the challenger's figure is its train+feedback fit on validation,
before the preset's refit on train+val). If it is better, it takes the ``challenger`` alias,
never ``production``: the gateway's shadow and canary then try it on live traffic, and the
`promote` entry point's gate decides whether it serves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.environment_variables import MLFLOW_RUN_ID
from mlflow.tracking import MlflowClient

from model.names import CHALLENGER, LABELS, MODEL_NAME, MONITORING_EXPERIMENT
from model.preprocess import clean_text
from monitoring import drift, reference
from monitoring.log_store.store import LogStore, open_store
from pipelines import drift_report, gateway_info, training
from pipelines.errors import GatewayUnreadable, KeyRefused, MonitorError
from pipelines.features import PRESETS

EXPERIMENT = MONITORING_EXPERIMENT
VERDICT, RUN_ID, CHECKED_AT = "monitoring.verdict", "monitoring.run_id", "monitoring.checked_at"
RETRAIN = ("never", "if_needed")
# Points of accuracy a version may lose against its test split before it is called degraded:
# more than the test split's own sampling error at 3,736 reviews (about 1 point).
TOLERANCE = 0.05
# Fewer labels than this measure nothing (the standard error at 50 is about 5 points).
MIN_LABELS = 50
PRESET = "best"
# The log store's database, if the gateways log to PostgreSQL (an environment variable, not a
# parameter: `mlflow run` would log a parameter, and the URI may hold a password).
LOG_URI = "PREDICTION_LOG_URI"


def verdict(
    rows: int, drift_detected: bool, expected: float, estimated: float | None,
    measured: float | None, labels: int,
) -> str:  # fmt: skip
    """The rule of this module's docstring. ``expected``: the reference's test accuracy."""
    if rows == 0:
        return "no_data"
    if labels >= MIN_LABELS and measured is not None and measured < expected - TOLERANCE:
        return "degraded"
    if estimated is not None and estimated < expected - TOLERANCE:
        return "degraded"
    return "drift" if drift_detected else "ok"


def log_store(state_dir: Path) -> LogStore:
    """Where the gateways log: the PostgreSQL database of PREDICTION_LOG_URI (the password may
    come from PGPASSWORD), else the files under ``<state_dir>/monitoring``."""
    return open_store(os.environ.get(LOG_URI) or None, Path(state_dir) / "monitoring")


def read_predictions(store: LogStore, since: datetime | None, until: datetime) -> pd.DataFrame:
    """The period's logged predictions, every replica's, without text."""
    return _with_time(store.read_predictions(since, until))


def read_feedback(store: LogStore, since: datetime | None, until: datetime) -> pd.DataFrame:
    return _with_time(store.read_feedback(since, until))


def _with_time(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["at"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame


def in_period(frame: pd.DataFrame, since: datetime | None, until: datetime) -> pd.DataFrame:
    keep = frame["at"] <= until
    if since is not None:
        keep &= frame["at"] > since
    return frame[keep]


def window(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The period's predictions as ``monitoring.drift`` reads them (missing values as NaN)."""
    return {
        "text_length": pd.to_numeric(rows["text_length"], errors="coerce").to_numpy(float),
        "known_term_ratio": pd.to_numeric(rows["known_term_ratio"], errors="coerce").to_numpy(
            float
        ),
        "confidence": rows["confidence"].to_numpy(float),
        "positive": (rows["sentiment"] == LABELS[1]).to_numpy(float),
    }


def served_version(gateway_url: str, predictions: pd.DataFrame) -> str | None:
    """What the gateway serves, else the version that answered most of the period (a canary's
    challenger answers a small share). A gateway that refuses the key is an error, not a
    reason to guess."""
    try:
        label = str(gateway_info.info(gateway_url, timeout=5).get("model_version", ""))
        if label.removeprefix("v").isdigit():
            return label.removeprefix("v")
    except KeyRefused as error:
        raise MonitorError(str(error)) from None
    except GatewayUnreadable:
        pass
    labelled = predictions[predictions["model_version"].str.removeprefix("v").str.isdigit()]
    if labelled.empty:
        return None
    counts = labelled.groupby("model_version")["at"].agg(["size", "max"])
    return str(counts.sort_values(["size", "max"]).index[-1]).removeprefix("v")


def last_period_end(client: MlflowClient, experiment_id: str) -> datetime | None:
    """Where the last finished monitoring run of this experiment (the one `mlflow run` put
    this run in: Sentiment-Monitoring with `make monitor`) ended its period."""
    runs = client.search_runs(
        [experiment_id],
        "attributes.status = 'FINISHED' and params.period_end != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return datetime.fromisoformat(runs[0].data.params["period_end"]) if runs else None


@dataclass
class Outcome:
    verdict: str
    run_id: str
    version: str | None
    # The period checked, [start, until): retraining learns from its labels only.
    until: datetime
    start: datetime | None = None
    challenger: str | None = None


def monitor(state_dir: Path, gateway_url: str, since: str, retrain: str) -> Outcome:
    """Runs inside the active MLflow run (``mlflow run`` made it, or ``main`` did)."""
    client = MlflowClient()
    until = datetime.now(UTC)
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("monitor() runs inside an MLflow run")
    experiment_id = active.info.experiment_id
    start = datetime.fromisoformat(since) if since else last_period_end(client, experiment_id)
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    run_id = active.info.run_id
    # Not the entry point's own parameter names: `mlflow run` logs those as given.
    mlflow.log_params(
        {"period_start": start.isoformat() if start else "", "period_end": until.isoformat()}
    )
    period = f"{start.isoformat() if start else 'the beginning'} to {until.isoformat()}"
    store = log_store(state_dir)
    print(f"[read] {store!r}, {period}")
    predictions = in_period(read_predictions(store, start, until), start, until)
    feedback = read_feedback(store, start, until)
    store.close()
    version = served_version(gateway_url, predictions)
    rows = predictions[predictions["model_version"] == f"v{version}"]
    if rows.empty:
        print(f"No predictions of the served version were logged from {period}: nothing to check.")
        mlflow.set_tags({VERDICT: "no_data", "monitoring.model_version": version or ""})
        mlflow.log_metric("rows", 0)
        return Outcome("no_data", run_id, version, until)
    model_dir = Path(tempfile.mkdtemp(prefix="monitor-model-"))
    mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/{version}", dst_path=str(model_dir))
    summary, reference_rows = reference.read(model_dir), reference.read_rows(model_dir)
    if summary is None or reference_rows is None:
        raise MonitorError(
            f"Version {version} carries no monitoring reference (it was logged before training "
            "wrote one): train a new version to monitor it."
        )
    current = window(rows)
    found = drift.drift(summary, current)
    estimated = drift.estimated_accuracy(summary, current["confidence"])
    labelled = in_period(feedback, start, until)
    labelled = labelled[labelled["model_version"] == f"v{version}"]
    measured = float((labelled["label"] == labelled["sentiment"]).mean()) if len(labelled) else None
    expected = float(summary["accuracy"]["test"])
    result = verdict(len(rows), found.detected, expected, estimated, measured, len(labelled))
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "drift_report.html"
        evidently = drift_report.write(reference_rows, rows, page)
        mlflow.log_artifact(str(page))
        figures = {
            "verdict": result,
            "version": version,
            "rows": len(rows),
            "drift": {"score": found.score, "by_feature": found.by_feature,
                      "threshold": found.threshold, "detected": found.detected},
            "accuracy": {"reference_test": expected, "estimated": estimated,
                         "measured": measured, "labels": len(labelled)},
        }  # fmt: skip
        (Path(tmp) / "monitoring.json").write_text(json.dumps(figures, indent=1))
        mlflow.log_artifact(str(Path(tmp) / "monitoring.json"))
    metrics = {
        "rows": len(rows),
        "drift_score": found.score,
        "drift_detected": float(found.detected),
        **{f"drift_{name}": value for name, value in found.by_feature.items()},
        "estimated_accuracy": estimated,
        "measured_accuracy": measured,
        "feedback_labels": len(labelled),
        "reference_test_accuracy": expected,
        "reference_validation_accuracy": summary["accuracy"].get("validation"),
        **evidently,
    }
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _number(v)})
    mlflow.set_tags({VERDICT: result, "monitoring.model_version": version})
    checked = until.isoformat(timespec="seconds")
    for key, value in {VERDICT: result, RUN_ID: run_id, CHECKED_AT: checked}.items():
        client.set_model_version_tag(MODEL_NAME, version, key, value)
    print(
        f"[verdict] v{version}: {result} over {len(rows)} predictions; drift score "
        f"{found.score:.3f} (threshold {found.threshold}); accuracy estimated "
        f"{_pct(estimated)}, measured {_pct(measured)} on {len(labelled)} labels, "
        f"test {expected:.1%}"
    )
    outcome = Outcome(result, run_id, version, until, start=start)
    if retrain == "if_needed" and result in ("drift", "degraded"):
        outcome.challenger = "pending"
    return outcome


def feedback_reviews(feedback: pd.DataFrame, held_out: set[str]) -> pd.DataFrame:
    """Labelled feedback that came with its text, as training rows. A review that cleans like
    one of the validation or test split (``held_out``, cleaned texts), or like another label's
    review, is left out: compared raw, another case or a trailing space would slip through."""
    rows = feedback[feedback["text"].notna() & feedback["label"].isin(LABELS)]
    rows = rows.assign(cleaned=[clean_text(str(t)) for t in rows["text"]])
    rows = rows[~rows["cleaned"].isin(held_out)].drop_duplicates("cleaned", keep="last")
    return pd.DataFrame(
        {"text": rows["text"].astype(str).tolist(), "label": rows["label"].map(LABELS.index)}
    ).astype({"label": "int64"})


def retrain_with_feedback(
    state_dir: Path,
    version: str,
    monitor_run: str,
    data_path: str,
    start: datetime | None,
    until: datetime,
) -> str:
    """Train the challenger on the labels of the period [start, until) (see the module
    docstring); returns its version."""
    tags = MlflowClient().get_model_version(MODEL_NAME, version).tags
    max_rows, seed = int(tags.get("max_rows", 0)), int(tags.get("split_seed", 42))
    mlflow.set_experiment(training.EXPERIMENT)
    with mlflow.start_run(run_name="train-best-feedback", tags={RUN_ID: monitor_run}):
        data = training.prepare(data_path or None, max_rows, seed)
        held_out = set(data.cleaned["val"]) | set(data.cleaned["test"])
        store = log_store(state_dir)
        labels = in_period(read_feedback(store, start, until), start, until)
        store.close()
        added = feedback_reviews(labels, held_out)
        digest = hashlib.sha256("\n".join(added["text"]).encode()).hexdigest()[:16]
        print(f"  + {len(added)} feedback reviews in the training split only (digest {digest})")
        data.splits = replace(
            data.splits, train=pd.concat([data.splits.train, added], ignore_index=True)
        )
        data.cleaned["train"] = data.cleaned["train"] + [clean_text(t) for t in added["text"]]
        params = PRESETS[PRESET]
        mlflow.log_params({"preset": PRESET, **params, "feedback_rows": len(added)})
        mlflow.set_tags({"feedback_rows": str(len(added)), "feedback_digest": digest})
        with training.phase("fit", f"fitting the '{PRESET}' preset with the feedback"):
            fitted = training.fit(params, data, seed)
        # Never production directly: shadow, canary and the promotion gate decide that.
        return training.publish(fitted, data, PRESET, "if_better", MODEL_NAME, CHALLENGER)


def _since(value: str) -> str:
    if value:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not an ISO time such as 2026-11-27T18:00:00+00:00"
            ) from None
    return value


def _number(value) -> bool:
    return value is not None and math.isfinite(float(value))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description="Check the served version over a period.")
    cli.add_argument("--state-dir", default="mlruns", help="make up's STATE_DIR")
    cli.add_argument("--gateway-url", default="http://127.0.0.1:8000")
    cli.add_argument("--since", default="", type=_since, help="ISO time; default: the last run")
    cli.add_argument("--retrain", choices=RETRAIN, default="never")
    cli.add_argument("--data-path", default="", help="the training data; empty = packaged")
    args = cli.parse_args(argv)
    if not MLFLOW_RUN_ID.get():
        mlflow.set_experiment(EXPERIMENT)
    try:
        with mlflow.start_run(run_name="monitor"):
            outcome = monitor(Path(args.state_dir), args.gateway_url, args.since, args.retrain)
    except MonitorError as error:
        print(f"Monitoring error: {error}", file=sys.stderr)
        return 2
    if outcome.challenger:
        assert outcome.version is not None, "a verdict on predictions names their version"
        print(f"[retrain] verdict {outcome.verdict}: training a challenger with the feedback")
        os.environ.pop(MLFLOW_RUN_ID.name, None)  # the next run is a training run of its own
        challenger = retrain_with_feedback(
            Path(args.state_dir),
            outcome.version,
            outcome.run_id,
            args.data_path,
            outcome.start,
            outcome.until,
        )
        MlflowClient().set_tag(outcome.run_id, "monitoring.challenger", challenger)
    print(f"Monitoring completed: {outcome.verdict} (run {outcome.run_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
