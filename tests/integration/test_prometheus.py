"""Debian's real Prometheus, run with the repository's scrape config and rules, scrapes a real
gateway (API keys on) serving a real model, and its query API gives back what the gateway
exports: the request counters and the sentiment_* gauges of the monitoring design."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import joblib
import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.schemas import MAX_TEXT_CHARS
from model.names import ALIAS
from model.sentiment_model import SentimentModel
from model.signature import INPUT_EXAMPLE, SIGNATURE
from monitoring import drift
from pipelines.data import load_reviews
from tests.gateways import Gateway, gateway
from tests.models import REQUIREMENTS, ROOT, fitted_pipeline_path
from tests.servers import free_port, spawn, stop, wait_until_up
from tests.unit.test_dashboards import DESIGN, dashboard_queries, metric_names, rules

PROMETHEUS_BIN = Path(shutil.which("prometheus") or "/usr/bin/prometheus")
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# A model of its own: the session's gateways follow SentimentClassifier@production untouched.
MODEL = "SentimentDashboards"
KEY = "k3y-for-the-scrapes"
# Rows sent through each route (one /invocations call of one row is made besides).
PREDICT, BATCH = 24, 16

if not PROMETHEUS_BIN.is_file():
    pytest.skip("prometheus is not installed (.ci/run installs it)", allow_module_level=True)


def reviews(rows: int, seed: int) -> list[str]:
    """Packaged reviews the gateway accepts (at most 5,000 characters)."""
    texts = load_reviews(max_rows=rows * 2, seed=seed)["text"]
    return texts[texts.str.len() <= MAX_TEXT_CHARS].head(rows).tolist()


def reference(pipeline_path: Path) -> Path:
    """reference.json for the test model, from its own answers to reviews it was not fitted
    on, as training builds it from the validation split."""
    frame = load_reviews(max_rows=400, seed=1234)
    answers = SentimentModel(joblib.load(pipeline_path)).predict(None, frame[["text"]])
    correct = (answers["sentiment"] == frame["label"].to_numpy()).to_numpy(dtype=float)
    content = drift.summarise(
        text_length=frame["text"].str.len().to_numpy(),
        known_term_ratio=answers["known_term_ratio"].to_numpy(),
        confidence=answers["confidence"].to_numpy(),
        positive=(answers["sentiment"] == "positive").to_numpy(dtype=float),
        correct=correct,
        accuracy={"validation": float(correct.mean()), "test": float(correct.mean())},
    )
    path = Path(tempfile.mkdtemp(prefix="sentiment-reference-")) / "reference.json"
    path.write_text(json.dumps(content))
    return path


def register_with_reference(tracking_uri: str) -> str:
    """The real SentimentModel with its monitoring reference inside, as training logs it;
    registered under MODEL and given the production alias."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("Default")
    pipeline = fitted_pipeline_path(0)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(ROOT / "model" / "sentiment_model.py"),
            artifacts={"pipeline": str(pipeline), "reference": str(reference(pipeline))},
            code_paths=[str(ROOT / "model")],
            signature=SIGNATURE,
            input_example=INPUT_EXAMPLE,
            pip_requirements=REQUIREMENTS,
        )
    version = mlflow.register_model(info.model_uri, MODEL).version
    MlflowClient(tracking_uri).set_registered_model_alias(MODEL, ALIAS, version)
    return str(version)


def scrape_config(state: Path, target: str) -> Path:
    """The repository's config, with the gateway job's targets (and the key file's place)
    rewritten for this machine; its metrics path, interval, auth and rules are kept."""
    config = yaml.safe_load(CONFIG.read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "gateway"]
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": [target]}]
    key = state / "metrics_api_key"
    key.write_text(KEY)
    job["authorization"]["credentials_file"] = str(key)
    shutil.copytree(CONFIG.parent / "rules", state / "rules")
    path = state / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """The gateway's and the model's series, apart from what scraping itself changes."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name.startswith(("gateway_", "sentiment_")):
                if sample.labels.get("endpoint") in ("/metrics", "/health"):
                    continue
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


class Prometheus:
    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict]:
        answer = self.http.get("/api/v1/query", params={"query": expr}).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def series(self) -> dict[tuple[str, frozenset], float]:
        found = {}
        for row in self.query('{job="gateway", __name__=~"gateway_.+|sentiment_.+"}'):
            labels = {k: v for k, v in row["metric"].items() if k not in ("job", "instance")}
            name = labels.pop("__name__")
            found[(name, frozenset(labels.items()))] = float(row["value"][1])
        return found


def until(what, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = what()
        if result:
            return result
        time.sleep(0.5)
    raise TimeoutError(f"{message} after {timeout:.0f}s")


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, tracking_uri) -> Gateway:
    """A gateway with API keys serving MODEL@production, after some traffic and one label."""
    version = register_with_reference(tracking_uri)
    state = tmp_path_factory.mktemp("monitored")
    settings = {
        "GATEWAY_MODEL_NAME": MODEL,
        "GATEWAY_API_KEYS": KEY,
        "GATEWAY_MONITOR_DIR": str(state / "monitoring"),
        "GATEWAY_REPLICA": "gateway-prometheus",
    }
    with gateway(state, tracking_uri, **settings) as gw:
        gw.http.headers["Authorization"] = f"Bearer {KEY}"
        gw.wait_for(lambda: gw.serving(f"v{version}"), timeout=120)
        yield gw


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, monitored) -> Prometheus:
    state = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    args = [
        str(PROMETHEUS_BIN),
        f"--config.file={scrape_config(state, monitored.url.removeprefix('http://'))}",
        f"--storage.tsdb.path={state / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    proc = spawn(args, state / "prometheus.log")
    try:
        wait_until_up(f"http://127.0.0.1:{port}/-/ready", timeout=60, proc=proc)
        yield Prometheus(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)


def test_prometheus_scrapes_the_gateway_and_returns_its_series(monitored, prometheus):
    gw = monitored
    assert httpx.get(f"{gw.url}/metrics").status_code == 401, "the scrape needs the key"
    texts = reviews(PREDICT + BATCH, seed=99)
    for text in texts[:PREDICT]:
        answer = gw.predict(text)
        assert answer.status_code == 200, answer.text
    assert gw.http.post("/predict/batch", json={"texts": texts[PREDICT:]}).status_code == 200
    row = gw.http.post("/invocations", json={"dataframe_records": [{"text": texts[0]}]})
    assert row.status_code == 200
    rows = PREDICT + BATCH + 1

    # Every answer is in the window once the log's writer has handed it over.
    def window() -> float:
        found = samples(gw.http.get("/metrics").text)
        return sum(v for (name, _), v in found.items() if name == "sentiment_window_size")

    until(lambda: window() == rows, 30, "the predictions did not reach the window")
    request_id = gw.predict(texts[0]).headers["X-Request-ID"]
    rows += 1
    label = {"request_id": request_id, "label": "positive"}
    until(
        lambda: gw.http.post("/feedback", json=label).status_code in (201, 409),
        30,
        "the prediction log never knew the request",
    )
    until(lambda: window() == rows, 30, "the last prediction did not reach the window")

    expected = samples(gw.http.get("/metrics").text)
    started = time.monotonic()

    def scraped_all():
        got = prometheus.series()
        return got if all(got.get(key) == value for key, value in expected.items()) else None

    got = until(scraped_all, 90, "Prometheus never held the gateway's figures")
    seconds = time.monotonic() - started
    print(f"Prometheus held every figure {seconds:.1f} s after the traffic")

    (up,) = prometheus.query('up{job="gateway"}')
    assert up["value"][1] == "1" and up["metric"]["instance"] == gw.url.removeprefix("http://")
    names = {name for name, _ in got}
    predicted = {
        labels: value for (name, labels), value in got.items() if name == "gateway_requests_total"
    }
    assert predicted[frozenset({"endpoint": "/predict", "method": "POST", "status": "200"}.items())]
    assert {
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_model_version",
        "gateway_rollouts_total",
    } <= names
    assert DESIGN - names == set(), "gauges of the monitoring design missing from Prometheus"
    (size,) = [v for (n, _), v in got.items() if n == "sentiment_window_size"]
    assert size == rows
    assert [v for (n, _), v in got.items() if n == "sentiment_feedback_total"] == [1.0]
    for name in ("drift_score", "estimated_accuracy", "known_term_ratio"):
        (value,) = [v for (n, _), v in got.items() if n == f"sentiment_{name}"]
        assert value >= 0, "a figure from the version's reference"

    # Every series the dashboard reads is there.
    read = {name for q in dashboard_queries() for name in metric_names(q)} - {"instance"}
    read -= {rule["record"] for rule in rules() if "record" in rule}
    available = set(prometheus.http.get("/api/v1/label/__name__/values").json()["data"])
    assert read - available == set()


def test_the_rules_load_and_evaluate_without_errors(prometheus):
    def evaluated():
        groups = prometheus.http.get("/api/v1/rules").json()["data"]["groups"]
        loaded = [rule for group in groups for rule in group["rules"]]
        done = loaded and all(r["lastEvaluation"] > "0001-01-01T00:00:00Z" for r in loaded)
        return loaded if done else None

    loaded = until(evaluated, 60, "the rules were not evaluated")
    assert sorted(r["name"] for r in loaded) == sorted(
        r.get("record", r.get("alert")) for r in rules()
    )
    assert [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"] == []
