"""The monitor job (`mlflow run . -e monitor`) against a real tracking server, on a prediction
log and feedback store laid out as the gateways write them."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from model.names import LABELS, MODEL_NAME
from monitoring.log_store.store import LogStore, open_store
from monitoring.log_store.tables import Feedback, Prediction, digest, iso
from pipelines import monitoring_job
from pipelines.data import SPLIT, fingerprint, load_reviews
from tests.models import held_out_reviews, register_version
from tests.servers import BIN, ROOT, env, free_port, tracking_server
from tests.stores import log_database

MAX_ROWS = 1000  # the sample the version claims it was trained on: a fast challenger
# Text of another kind: short product reviews and French sentences, none of them IMDB's.
THINGS = ["charger", "kettle", "backpack", "blender", "phone case", "lamp", "keyboard", "mug"]
SAYINGS = ["arrived broken", "works as described", "battery died in a week", "five stars",
           "cheap plastic", "fast shipping", "would buy again", "returned it"]  # fmt: skip
FRENCH = ["Le service était lent mais le repas était bon", "Je ne recommande pas ce produit",
          "Livraison rapide et emballage soigné", "Très déçu de la qualité",
          "Un vendeur sérieux, merci beaucoup", "La taille ne correspond pas"]  # fmt: skip


def other_texts(rows: int) -> list[str]:
    rng = np.random.default_rng(5)
    texts = []
    for i in range(rows):
        if i % 3 == 0:
            texts.append(str(rng.choice(FRENCH)))
        else:
            texts.append(f"The {rng.choice(THINGS)} {rng.choice(SAYINGS)}.")
    return texts


def log_predictions(store: LogStore, replica: str, start: datetime, answers, texts):
    """What a gateway replica logs, one request per row."""
    rows = [
        Prediction(
            time=iso(start + timedelta(milliseconds=i)),
            request_id=f"{replica}-{i}",
            item=0,
            route="/predict",
            replica=replica,
            model_version=answer.version,
            sentiment=answer.sentiment,
            confidence=float(answer.confidence),
            text_length=len(text),
            known_term_ratio=float(answer.known_term_ratio),
            text_digest=digest(text),
        )
        for i, (answer, text) in enumerate(zip(answers.itertuples(), texts, strict=True))
    ]
    store.write(rows)
    return [row.request_id for row in rows]


def give_feedback(store: LogStore, at: datetime, request_ids, answers, labels, texts) -> None:
    for rid, a, label, text in zip(request_ids, answers.itertuples(), labels, texts, strict=True):
        store.add_label(
            Feedback(rid, 0, label, text, iso(at), a.version, a.sentiment, float(a.confidence),
                     "gw:1")
        )  # fmt: skip


def run_monitor(tracking_uri: str, *params: str, **environ: str) -> subprocess.CompletedProcess:
    args = [str(BIN / "mlflow"), "run", ".", "-e", "monitor", "--env-manager", "local",
            "--experiment-name", monitoring_job.EXPERIMENT]  # fmt: skip
    for param in params:
        args += ["-P", param]
    return subprocess.run(
        args, cwd=ROOT, env=env(MLFLOW_TRACKING_URI=tracking_uri, **environ), capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip


def the_run(client: MlflowClient, result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = client.get_experiment_by_name(monitoring_job.EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[:1]
    return run


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """A registry of this module's own: the challenger may take the production alias, which
    the session's shared gateway would follow."""
    with tracking_server(tmp_path_factory.mktemp("tracking")) as uri:
        yield uri


@pytest.fixture(scope="module")
def setup(tracking_uri, tmp_path_factory):
    """The production version, with a reference, registered as one trained on a 1,000-review
    sample; its answers to 600 reviews it has never seen and to 400 texts of another kind."""
    sample = load_reviews(max_rows=MAX_ROWS, seed=42)
    tags = {"data_digest": fingerprint(sample), "split_seed": "42",
            "max_rows": str(MAX_ROWS), "split": SPLIT}  # fmt: skip
    version = register_version(tracking_uri, alias=True, with_reference=True, tags=tags)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    reviews = held_out_reviews().iloc[2000:2600]
    answers = model.predict(pd.DataFrame({"text": reviews["text"].tolist()}))
    answers["version"] = f"v{version}"
    others = other_texts(400)
    other_answers = model.predict(pd.DataFrame({"text": others}))
    other_answers["version"] = f"v{version}"
    return {
        "client": MlflowClient(tracking_uri),
        "version": version,
        "state": tmp_path_factory.mktemp("state"),
        "reviews": reviews,
        "answers": answers,
        "others": others,
        "other_answers": other_answers,
        "nowhere": f"http://127.0.0.1:{free_port()}",
    }


@pytest.fixture(scope="module")
def log_db():
    with log_database() as database:
        yield database


def log_traffic(store: LogStore, start: datetime, setup) -> list[str]:
    """600 answers to reviews, 300 of them labelled (half with the review's text)."""
    reviews, answers = setup["reviews"], setup["answers"]
    ids = log_predictions(store, "gw:1", start, answers, reviews["text"])
    labels = [LABELS[label] for label in reviews["label"]]
    texts = [t if i % 2 else None for i, t in enumerate(reviews["text"])]
    give_feedback(store, start, ids[:300], answers.iloc[:300], labels[:300], texts[:300])
    store.close()
    return labels


def test_in_domain_traffic_is_ok_and_the_version_is_tagged(tracking_uri, setup, tmp_path):
    client, version, state = setup["client"], setup["version"], setup["state"]
    start = datetime.now(UTC) - timedelta(minutes=10)
    answers, reviews = setup["answers"], setup["reviews"]
    labels = log_traffic(open_store(None, state / "monitoring", "gw:1"), start, setup)

    began = time.monotonic()
    result = run_monitor(
        tracking_uri, f"state_dir={state}", f"gateway_url={setup['nowhere']}",
        f"since={(start - timedelta(seconds=1)).isoformat()}",
    )  # fmt: skip
    seconds = time.monotonic() - began
    run = the_run(client, result)
    metrics, tags = run.data.metrics, run.data.tags
    print(f"monitor job, in-domain: {seconds:.0f} s; {json.dumps(metrics, sort_keys=True)}")
    assert tags[monitoring_job.VERDICT] == "ok", result.stdout[-2000:]
    assert metrics["rows"] == 600 and metrics["feedback_labels"] == 300
    assert metrics["drift_score"] < 0.1 and metrics["drift_detected"] == 0
    measured = float(np.mean(answers["sentiment"].iloc[:300] == pd.Series(labels[:300]).values))
    assert metrics["measured_accuracy"] == pytest.approx(measured)
    assert abs(metrics["estimated_accuracy"] - metrics["reference_test_accuracy"]) < 0.05
    assert {"evidently_psi_text_length", "evidently_drifted_share"} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"drift_report.html", "monitoring.json"} <= artifacts
    page = Path(client.download_artifacts(run.info.run_id, "drift_report.html", str(tmp_path)))
    html = page.read_text()
    assert "Drifted Columns" in html and "known_term_ratio" in html
    assert not any(text[:30] in html for text in reviews["text"])  # statistics only
    version_tags = client.get_model_version(MODEL_NAME, version).tags
    assert version_tags[monitoring_job.VERDICT] == "ok"
    assert version_tags[monitoring_job.RUN_ID] == run.info.run_id
    checked = datetime.fromisoformat(version_tags[monitoring_job.CHECKED_AT])
    assert abs(checked - datetime.now(UTC)) < timedelta(minutes=30)


def test_the_verdict_is_the_same_from_postgresql(tracking_uri, setup, log_db, tmp_path):
    """The same traffic, logged to PostgreSQL by the gateways' user and read by the monitoring
    job's: the same verdict and figures as from the files."""
    client = setup["client"]
    writer, reader = log_db.writer, log_db.reader
    start = datetime.now(UTC) - timedelta(minutes=10)
    log_traffic(open_store(writer, tmp_path / "unused", "gw:1"), start, setup)
    log_traffic(open_store(None, tmp_path / "monitoring", "gw:1"), start, setup)
    since = f"since={(start - timedelta(seconds=1)).isoformat()}"
    nowhere = f"gateway_url={setup['nowhere']}"
    runs = {}
    for backend, environ in (("postgresql", {"PREDICTION_LOG_URI": reader}), ("files", {})):
        result = run_monitor(tracking_uri, f"state_dir={tmp_path}", nowhere, since, **environ)
        runs[backend] = the_run(client, result)
        assert ("PostgreSQL at" in result.stdout) == (backend == "postgresql"), result.stdout
        assert reader.split(":")[2].split("@")[0] not in result.stdout + result.stderr
    figures = {
        backend: (run.data.tags[monitoring_job.VERDICT],
                  {k: round(v, 9) for k, v in run.data.metrics.items()})
        for backend, run in runs.items()
    }  # fmt: skip
    assert figures["postgresql"] == figures["files"]
    assert figures["postgresql"][0] == "ok" and figures["postgresql"][1]["rows"] == 600


def test_the_next_period_of_other_text_is_flagged_and_a_challenger_trained(tracking_uri, setup):
    client, version, state = setup["client"], setup["version"], setup["state"]
    folder = state / "monitoring"
    start = datetime.now(UTC)  # after the last run: the default period holds only these
    answers, others = setup["other_answers"], setup["others"]
    store = open_store(None, folder, "gw:2")
    ids = log_predictions(store, "gw:2", start, answers, others)
    # 40 labels with their texts: retraining learns from this period's labels only, not from
    # the 150 texts labelled in the period before.
    flipped = [LABELS[1 - LABELS.index(s)] for s in answers["sentiment"].iloc[:40]]
    give_feedback(store, start, ids[:40], answers.iloc[:40], flipped, list(others[:40]))
    store.close()

    result = run_monitor(
        tracking_uri, f"state_dir={state}", f"gateway_url={setup['nowhere']}",
        "retrain=if_needed",
    )  # fmt: skip
    experiment = client.get_experiment_by_name(monitoring_job.EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])
    run = runs[0]
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, tags = run.data.metrics, run.data.tags
    print(f"monitor job, other text: {json.dumps(metrics, sort_keys=True)}")
    assert metrics["rows"] == 400 and metrics["drift_detected"] == 1
    assert metrics["drift_score"] > 0.2 and metrics["drift_known_term_ratio"] > 0.2
    assert tags[monitoring_job.VERDICT] in ("drift", "degraded")
    assert tags[monitoring_job.VERDICT] == monitoring_job.verdict(
        400, True, metrics["reference_test_accuracy"], metrics["estimated_accuracy"], None, 0
    )
    assert (
        client.get_model_version(MODEL_NAME, version).tags[monitoring_job.VERDICT]
        == tags[monitoring_job.VERDICT]
    )
    # The challenger: trained with the period's labelled texts, registered with its own
    # reference, and compared with the version on the same validation rows. It can only ever
    # become the challenger: production stays until shadow, canary and the gate decide.
    challenger = tags["monitoring.challenger"]
    trained = client.get_run(client.get_model_version(MODEL_NAME, challenger).run_id)
    assert trained.data.tags[monitoring_job.RUN_ID] == run.info.run_id
    assert 0 < int(trained.data.tags["feedback_rows"]) <= 40
    assert trained.data.tags["promotion.alias"] == "challenger"
    assert client.get_model_version_by_alias(MODEL_NAME, "production").version == version
    if trained.data.tags["promotion.decision"] == "promoted":
        assert client.get_model_version_by_alias(MODEL_NAME, "challenger").version == challenger
    assert trained.data.tags["promotion.champion"] == version
    assert "on the same validation rows" in trained.data.tags["promotion.reason"]
    files = {a.path for a in client.list_artifacts(trained.info.run_id, "model/artifacts")}
    assert {"model/artifacts/reference.json", "model/artifacts/reference_rows.csv"} <= files


# The command itself, on a SQLite store: a process per run.


def test_a_period_without_predictions_is_a_no_data_run_and_the_next_starts_after_it(tmp_path):
    folder = tmp_path  # a state folder with nothing in it
    store = f"sqlite:///{folder / 'mlflow.db'}"
    since = datetime.now(UTC).isoformat()
    result = subprocess.run(
        [str(BIN / "python"), "-m", "pipelines.monitoring_job", "--state-dir", str(folder),
         "--since", since, "--gateway-url", "http://127.0.0.1:9"],
        env=env(MLFLOW_TRACKING_URI=store), cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nothing to check" in result.stdout
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(monitoring_job.EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags[monitoring_job.VERDICT] == "no_data" and run.data.metrics["rows"] == 0
    assert run.data.params["period_start"] == since
    end = datetime.fromisoformat(run.data.params["period_end"])
    assert monitoring_job.last_period_end(client, experiment.experiment_id) == end


def test_runs_in_the_experiment_mlflow_run_chose_chain_their_periods(tmp_path):
    """`mlflow run . -e monitor` without --experiment-name puts the run in Default: the next
    run there starts where it ended, rather than from the beginning."""
    folder = tmp_path
    store = f"sqlite:///{folder / 'chained.db'}"
    client = MlflowClient(store)
    starts, ends = [], []
    for _ in range(2):
        run = client.create_run("0")  # what `mlflow run` makes before the command starts
        result = subprocess.run(
            [str(BIN / "python"), "-m", "pipelines.monitoring_job",
             "--state-dir", str(folder / "empty"), "--gateway-url", "http://127.0.0.1:9"],
            env=env(MLFLOW_TRACKING_URI=store, MLFLOW_RUN_ID=run.info.run_id), cwd=ROOT,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        client.set_terminated(run.info.run_id)
        params = client.get_run(run.info.run_id).data.params
        starts.append(params["period_start"])
        ends.append(params["period_end"])
    assert starts == ["", ends[0]]
    assert monitoring_job.last_period_end(client, "0") == datetime.fromisoformat(ends[1])
