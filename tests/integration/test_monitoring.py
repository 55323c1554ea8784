"""Monitoring against the real stack: the prediction log, the gauges, feedback and privacy.

A model fitted on training reviews only, carrying the reference of its validation rows, is
served by a real gateway under a registered name of its own (so promotions here move no
other test's alias). Held-out IMDB reviews must not look like drift and must get an
estimated accuracy near the test accuracy; short product reviews and sentences in other
languages must; feedback must measure the accuracy it is given.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from gateway.api.schemas import MAX_TEXT_CHARS
from model.names import ALIAS, LABELS
from model.preprocess import clean_text
from model.sentiment_model import SentimentModel
from model.signature import INPUT_EXAMPLE, SIGNATURE
from monitoring import drift, reference
from monitoring.log_store.files import SQLiteFiles
from pipelines.data import load_reviews, split
from tests.gateways import Gateway, gateway
from tests.models import REQUIREMENTS, ROOT

MODEL = "SentimentMonitoringTest"
WINDOW = 300
KEY = "monitoring-test-key"
BATCH = 150
# "Within a few points": the window's sampling error on 300 rows is about 2 points.
CLOSE = 0.05


@dataclass
class Stack:
    gw: Gateway
    state: Path
    tracking_uri: str
    model_uri: str
    reference: dict
    test: pd.DataFrame  # held-out reviews the gateway accepts (at most 5,000 characters)
    version: str  # the first version served: "v1"
    sent: list[str]  # every text sent, for the privacy check


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tracking_uri) -> Stack:
    parts = split(load_reviews())
    model_uri, summary = log_model_with_reference(tracking_uri, parts.train, parts.val, parts.test)
    version = register(tracking_uri, model_uri)
    state = tmp_path_factory.mktemp("monitoring")
    settings = {
        "GATEWAY_MODEL_NAME": MODEL,
        "GATEWAY_MONITOR_WINDOW": str(WINDOW),
        "GATEWAY_API_KEYS": KEY,
    }
    with gateway(state, tracking_uri, **settings) as gw:
        gw.http.headers["X-API-Key"] = KEY
        gw.wait_for(lambda: gw.serving(f"v{version}"), timeout=120)
        test = parts.test[parts.test["text"].str.len() <= MAX_TEXT_CHARS].reset_index(drop=True)
        yield Stack(gw, state, tracking_uri, model_uri, summary, test, f"v{version}", [])


def log_model_with_reference(tracking_uri, train, val, test) -> tuple[str, dict]:
    """The real SentimentModel, fitted on 2,000 training reviews, with the reference training
    logs: its answers on the validation split, and its accuracy on the test split."""
    sample = train.groupby("label", group_keys=False).sample(1000, random_state=7)
    pipeline = Pipeline([("tfidf", TfidfVectorizer(min_df=2)), ("clf", LogisticRegression())])
    pipeline.fit([clean_text(t) for t in sample["text"]], sample["label"])
    tested = SentimentModel(pipeline).predict(None, test[["text"]])
    test_accuracy = float(np.mean(tested["sentiment"] == np.array(LABELS)[test["label"]]))
    folder = Path(tempfile.mkdtemp(prefix="monitoring-model-"))
    joblib.dump(pipeline, folder / "pipeline.joblib")
    artifacts = reference.write(folder, pipeline, val["text"], val["label"], test_accuracy)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("Default")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(ROOT / "model" / "sentiment_model.py"),
            artifacts={"pipeline": str(folder / "pipeline.joblib"), **artifacts},
            code_paths=[str(ROOT / "model")],
            signature=SIGNATURE,
            input_example=INPUT_EXAMPLE,
            pip_requirements=REQUIREMENTS,
        )
    return info.model_uri, json.loads(Path(artifacts[reference.REFERENCE]).read_text())


def register(tracking_uri: str, model_uri: str) -> str:
    """Register the model under this module's name and point the alias at it."""
    mlflow.set_tracking_uri(tracking_uri)
    version = str(mlflow.register_model(model_uri, MODEL).version)
    MlflowClient(tracking_uri).set_registered_model_alias(MODEL, ALIAS, version)
    return version


def gauges(gw: Gateway) -> dict[tuple[str, str], float]:
    """The sentiment_* samples of /metrics: (name, model_version) -> value."""
    found = {}
    for family in text_string_to_metric_families(gw.http.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("sentiment_"):
                found[sample.name, sample.labels.get("model_version", "")] = sample.value
    return found


def send(stack: Stack, texts: list[str], prefix: str) -> list[tuple[str, int, str]]:
    """POST the texts to /predict/batch in batches with request ids of our own; returns
    (request id, item, sentiment) per text."""
    answered = []
    for number, start in enumerate(range(0, len(texts), BATCH)):
        chunk = texts[start : start + BATCH]
        request_id = f"{prefix}-{number}"
        response = stack.gw.http.post(
            "/predict/batch", json={"texts": chunk}, headers={"X-Request-ID": request_id}
        )
        assert response.status_code == 200, response.text
        stack.sent.extend(chunk)
        rows = response.json()["predictions"]
        answered += [(request_id, item, row["sentiment"]) for item, row in enumerate(rows)]
    return answered


def label_all(stack: Stack, answered, labels: list[str]) -> float:
    """POST /feedback for every answer; returns the share the model got right."""
    right = 0
    for (request_id, item, sentiment), label in zip(answered, labels, strict=True):
        response = stack.gw.http.post(
            "/feedback", json={"request_id": request_id, "item": item, "label": label}
        )
        assert response.status_code == 201, response.text
        assert response.json()["correct"] == (label == sentiment)
        right += label == sentiment
    return right / len(answered)


def labels_of(frame: pd.DataFrame) -> list[str]:
    return [LABELS[label] for label in frame["label"]]


def other_kind_of_text() -> list[str]:
    """300 short texts unlike movie reviews: product reviews, and sentences in Spanish and
    German."""
    products = ["blender", "phone case", "charger", "kettle", "backpack", "keyboard", "lamp", "mop"]
    verdicts = [
        "stopped working after two days",
        "arrived scratched and the box was crushed",
        "charges quickly and fits my desk perfectly",
        "is sturdy and easy to clean",
        "broke the first time I plugged it in",
    ]
    closers = ["Would buy again.", "Returned it.", "Shipping took weeks.", "Five stars."]
    english = [f"The {p} {v}. {c}" for p, v, c in itertools.product(products, verdicts, closers)]
    spanish = [
        f"El {p} {v}. {c}"
        for p, v, c in itertools.product(
            ["envío", "producto", "pedido", "paquete", "vendedor"],
            ["llegó tarde y roto", "funciona muy bien", "no sirve para nada", "es barato"],
            ["Lo recomiendo.", "No lo compraría otra vez.", "Cinco estrellas.", "Muy caro."],
        )
    ]
    german = [
        f"Die {p} {v}. {c}"
        for p, v, c in itertools.product(
            ["Lieferung", "Verpackung", "Qualität", "Rechnung", "Bestellung"],
            ["kam viel zu spät", "ist ausgezeichnet", "war beschädigt", "stimmt nicht"],
            ["Gerne wieder.", "Nie wieder.", "Alles bestens.", "Zu teuer."],
        )
    ]
    texts = english + spanish + german
    assert len(texts) >= WINDOW
    return texts[:WINDOW]


@pytest.fixture(scope="module")
def in_domain(stack: Stack) -> dict:
    """450 held-out reviews answered by v1, the first 150 of them labelled truly (the window
    holds the last 300)."""
    reviews = stack.test.iloc[:450]
    answered = send(stack, list(reviews["text"]), "in-domain")
    # Labelling waits for the log's writer, so the window holds every answer by now.
    measured = label_all(stack, answered[:BATCH], labels_of(reviews.iloc[:BATCH]))
    window = zip(answered[BATCH:], labels_of(reviews.iloc[BATCH:]), strict=True)
    window_right = float(np.mean([sentiment == label for (_, _, sentiment), label in window]))
    return {"gauges": gauges(stack.gw), "measured": measured, "window_right": window_right}


def test_held_out_reviews_are_not_drift_and_the_estimate_is_near_the_test_accuracy(
    stack, in_domain
):
    seen, version = in_domain["gauges"], stack.version
    test_accuracy = stack.reference["accuracy"]["test"]
    estimated = seen["sentiment_estimated_accuracy", version]
    print(
        f"\nin-domain: drift score {seen['sentiment_drift_score', version]:.3f}, estimated "
        f"accuracy {estimated:.3f}, test accuracy {test_accuracy:.3f}, accuracy of the window's "
        f"{WINDOW} answers {in_domain['window_right']:.3f}"
    )
    assert seen["sentiment_window_size", version] == WINDOW
    assert seen["sentiment_drift_detected", version] == 0
    assert seen["sentiment_drift_score", version] < drift.THRESHOLD
    assert abs(estimated - test_accuracy) < CLOSE
    assert abs(estimated - in_domain["window_right"]) < 2 * CLOSE
    assert 0.3 < seen["sentiment_positive_ratio", version] < 0.7
    assert seen["sentiment_known_term_ratio", version] > 0.8


def test_true_labels_measure_the_accuracy(stack, in_domain):
    seen, version = in_domain["gauges"], stack.version
    print(
        f"\nfeedback with true labels: accuracy {seen['sentiment_feedback_accuracy', version]:.3f}"
        f" over {seen['sentiment_feedback_total', version]:.0f}"
    )
    assert seen["sentiment_feedback_total", version] == BATCH
    assert seen["sentiment_feedback_accuracy", version] == pytest.approx(in_domain["measured"])
    assert abs(in_domain["measured"] - stack.reference["accuracy"]["test"]) < 2 * CLOSE


@pytest.fixture(scope="module")
def second_version(stack: Stack, in_domain) -> dict:
    """The same model registered again and promoted: 150 other held-out reviews labelled
    with the wrong label, then 300 texts of another kind."""
    version = f"v{register(stack.tracking_uri, stack.model_uri)}"
    stack.gw.wait_for(lambda: stack.gw.serving(version), timeout=120)
    reviews = stack.test.iloc[450:600]
    answered = send(stack, list(reviews["text"]), "flipped")
    flipped = [LABELS[1 - LABELS.index(label)] for label in labels_of(reviews)]
    measured = label_all(stack, answered, flipped)
    before = gauges(stack.gw)
    other = send(stack, other_kind_of_text(), "other-kind")
    # One label (of the last text) waits for the writer: the window is all other text now.
    request_id, item, sentiment = other[-1]
    stack.gw.http.post(
        "/feedback", json={"request_id": request_id, "item": item, "label": sentiment}
    )
    info = stack.gw.http.get("/info").json()["monitoring"]
    return {"version": version, "measured": measured, "before": before, "after": gauges(stack.gw),
            "info": info}  # fmt: skip


def test_wrong_labels_measure_the_complement(stack, second_version):
    seen, version = second_version["before"], second_version["version"]
    accuracy = seen["sentiment_feedback_accuracy", version]
    print(f"\nfeedback with flipped labels: accuracy {accuracy:.3f}")
    assert accuracy == pytest.approx(second_version["measured"])
    assert abs(accuracy - (1 - stack.reference["accuracy"]["test"])) < 2 * CLOSE
    # Each version keeps its own figures.
    assert seen["sentiment_feedback_accuracy", stack.version] > 0.5 > accuracy


def test_text_of_another_kind_is_drift(stack, second_version):
    seen, version = second_version["after"], second_version["version"]
    info = second_version["info"]
    print(
        f"\nother kind of text: drift score {seen['sentiment_drift_score', version]:.2f} "
        f"(by feature {json.dumps({k: round(v, 2) for k, v in info['drift_by_feature'].items()})}"
        f"), estimated accuracy {seen['sentiment_estimated_accuracy', version]:.3f}, known-term "
        f"ratio {seen['sentiment_known_term_ratio', version]:.2f}"
    )
    assert seen["sentiment_drift_detected", version] == 1
    assert seen["sentiment_drift_score", version] > drift.THRESHOLD
    assert info["model_version"] == version and info["drift_detected"] is True
    assert info["reference"] is True and info["window_size"] == WINDOW
    assert info["drift_by_feature"]["known_term_ratio"] > drift.THRESHOLD
    assert seen["sentiment_known_term_ratio", version] < 0.8
    # The first version's window is untouched by the second's traffic.
    assert seen["sentiment_drift_detected", stack.version] == 0


def test_feedback_errors(stack, in_domain):
    http = stack.gw.http
    unknown = http.post("/feedback", json={"request_id": "never-sent", "label": "positive"})
    assert unknown.status_code == 404
    assert "not in the prediction log" in unknown.json()["detail"]
    beyond = http.post(
        "/feedback", json={"request_id": "in-domain-0", "item": BATCH, "label": "positive"}
    )
    assert beyond.status_code == 404
    again = http.post("/feedback", json={"request_id": "in-domain-0", "label": "negative"})
    assert again.status_code == 409 and "label already" in again.json()["detail"]
    bad = http.post("/feedback", json={"request_id": "in-domain-1", "label": "neutral"})
    assert bad.status_code == 422
    assert "'positive'" in bad.json()["detail"] and "'negative'" in bad.json()["detail"]
    missing = http.post("/feedback", json={"label": "positive"})
    assert missing.status_code == 422 and "request_id" in missing.json()["detail"]
    keyless = http.post(
        "/feedback",
        json={"request_id": "in-domain-1", "label": "positive"},
        headers={"X-API-Key": ""},
    )
    assert keyless.status_code == 401


def test_invocations_rows_are_logged_and_can_be_labelled(stack, in_domain):
    texts = ["A fine film with a moving story.", "Dull, far too long and badly acted."]
    response = stack.gw.http.post(
        "/invocations",
        json={"dataframe_records": [{"text": t} for t in texts]},
        headers={"X-Request-ID": "invocation-1"},
    )
    assert response.status_code == 200
    stack.sent.extend(texts)
    labelled = stack.gw.http.post(
        "/feedback", json={"request_id": "invocation-1", "item": 1, "label": "negative"}
    )
    assert labelled.status_code == 201, labelled.text
    logged = SQLiteFiles(stack.state / "monitoring", None, max_bytes=1, max_age=1).find(
        "invocation-1", 1
    )
    assert logged.route == "/invocations" and logged.text_length == len(texts[1])
    assert logged.model_version == response.headers["X-Model-Version"]
    assert 0 < logged.known_term_ratio <= 1 and logged.text is None


def test_no_review_text_in_any_file_the_gateway_writes(stack, second_version):
    """With the default settings: the prediction log, the feedback store, the scoring
    servers' log and the gateway's own log hold none of the texts sent."""
    written = [
        path
        for folder in (stack.state / "monitoring", stack.state / "scoring")
        for path in folder.rglob("*")
        if path.is_file()
    ] + list(stack.state.glob("gateway-*.log"))
    assert any(p.suffix == ".sqlite" for p in written) and len(stack.sent) >= 900
    contents = [path.read_bytes() for path in written]
    for text in stack.sent:
        pieces = {text[:40].encode(), json.dumps(text)[1:41].encode()}
        for path, content in zip(written, contents, strict=True):
            assert not any(piece in content for piece in pieces), (path, text[:40])
