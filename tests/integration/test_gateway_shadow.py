"""The shadow challenger against real servers: a challenger fitted on other reviews, so it
disagrees with production on a share of reviews known in advance.

The gateway here follows aliases of its own, so the shared gateway (which follows
`production` and `challenger`) never sees these versions."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pandas
import pytest
from mlflow import MlflowClient

from gateway.api.schemas import MAX_TEXT_CHARS
from gateway.experiments.canary import share
from pipelines.promotion_gate import check_gate
from tests.gateways import Gateway, cmdline, descendants, gateway, scoring_servers
from tests.models import NAME, held_out_reviews, register_version
from tests.servers import run_training

PRODUCTION, CHALLENGER = "shadow-production", "shadow-challenger"
REVIEWS = 200
CANARY = 0.2


def outside_canary(name: str) -> str:
    """A request id production answers (so the shadow compares it)."""
    return next(f"{name}.{n}" for n in range(1000) if share(f"{name}.{n}") >= CANARY)


def labels(tracking_uri: str, version: str, texts: list[str]) -> list[str]:
    """What ``version`` answers, loaded in this process (not through a server)."""
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
    return list(model.predict(pandas.DataFrame({"text": texts}))["sentiment"])


def challenger(gw: Gateway) -> dict | None:
    return gw.http.get("/info").json()["challenger"]


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory, tracking_uri):
    v1 = register_version(tracking_uri)
    v2 = register_version(tracking_uri, sample=1)  # fitted on other reviews
    client = MlflowClient(tracking_uri)
    client.set_registered_model_alias(NAME, PRODUCTION, v1)
    client.set_registered_model_alias(NAME, CHALLENGER, v2)
    settings = {
        "GATEWAY_MODEL_ALIAS": PRODUCTION,
        "GATEWAY_CHALLENGER_ALIAS": CHALLENGER,
        "GATEWAY_CANARY_FRACTION": str(CANARY),
    }
    with gateway(tmp_path_factory.mktemp("shadow"), tracking_uri, **settings) as gw:
        gw.wait_for(lambda: gw.serving(f"v{v1}") and challenger(gw), timeout=180)
        yield gw, v1, v2


def test_agreement_is_the_share_of_reviews_both_versions_label_alike(shadowed, tracking_uri):
    gw, v1, v2 = shadowed
    reviews = held_out_reviews(0)["text"]
    texts = [text for text in reviews if len(text) <= MAX_TEXT_CHARS][:REVIEWS]
    agree = [
        a == b
        for a, b in zip(
            labels(tracking_uri, v1, texts), labels(tracking_uri, v2, texts), strict=True
        )
    ]
    expected = sum(agree) / len(agree)
    assert 0.5 < expected < 1.0, "the two versions must disagree on some reviews"
    before = challenger(gw)["rows_compared"]

    differing_ids = set()
    for i, text in enumerate(texts[:40]):  # one by one, then in batches of 20
        request_id = outside_canary(f"one-{i}")
        answer = gw.http.post("/predict", json={"text": text}, headers={"X-Request-ID": request_id})
        assert answer.status_code == 200
        if not agree[i]:
            differing_ids.add(request_id)
    for start in range(40, REVIEWS, 20):
        batch = texts[start : start + 20]
        request_id = outside_canary(f"batch-{start}")
        answer = gw.http.post(
            "/predict/batch", json={"texts": batch}, headers={"X-Request-ID": request_id}
        )
        assert answer.status_code == 200
        if not all(agree[start : start + 20]):
            differing_ids.add(request_id)

    info = gw.wait_for(
        lambda: (c := challenger(gw)) and c["rows_compared"] - before >= REVIEWS and c, timeout=120
    )
    assert info["model_version"] == f"v{v2}" and info["errors"] == 0 and info["shed"] == 0
    assert before == 0, "nothing else was mirrored to this challenger"
    assert info["agreement"] == pytest.approx(expected, abs=0.03)
    assert info["requests_compared"] == 40 + (REVIEWS - 40) // 20
    assert 0 < info["mean_confidence_difference"] < 1
    assert info["latest_disagreements"] and set(info["latest_disagreements"]) <= differing_ids
    metrics = gw.http.get("/metrics").text
    assert (
        f'sentiment_shadow_requests_total{{version="v{v2}"}} {info["requests_compared"]}.0'
        in metrics
    )
    assert f'sentiment_shadow_agreement_ratio{{version="v{v2}"}}' in metrics
    assert f'sentiment_shadow_latency_seconds_count{{version="v{v2}"}}' in metrics
    print(f"\nshadow agreement {info['agreement']:.4f}, true share {expected:.4f}")


def test_the_canary_answers_its_share_by_key(shadowed):
    gw, v1, v2 = shadowed
    keys = [f"user-{i}" for i in range(2000)]

    def ask(key: str) -> str:
        answer = gw.http.post(
            "/predict", json={"text": "A fine film."}, headers={"X-Canary-Key": key}
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["model_version"]

    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(ask, keys))
    assert set(versions) == {f"v{v1}", f"v{v2}"}
    canary = versions.count(f"v{v2}") / len(versions)
    assert canary == pytest.approx(CANARY, abs=0.03)
    assert [ask(key) for key in keys[:20]] == versions[:20]  # same key, same version
    info = challenger(gw)
    assert info["canary_requests"] >= versions.count(f"v{v2}") and not info["canary_dropped"]
    print(f"\ncanary share {canary:.4f} of {len(versions)} requests (fraction {CANARY})")


def test_the_inference_protocol_serves_both_versions_and_joins_the_canary(shadowed):
    gw, v1, v2 = shadowed
    model = f"/v2/models/{NAME}"
    assert gw.http.get(model).json()["versions"] == [str(v1), str(v2)]
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["A fine film."]}
    for version in (v1, v2):
        answer = gw.http.post(f"{model}/versions/{version}/infer", json={"inputs": [text]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == str(v2 if version == v2 else v1)
    inside = next(f"key-{n}" for n in range(1000) if share(f"key-{n}") < CANARY)
    for key, version in ((inside, v2), (outside_canary("key"), v1)):
        answer = gw.http.post(
            f"{model}/infer", json={"inputs": [text]}, headers={"X-Canary-Key": key}
        )
        assert answer.json()["model_version"] == str(version)


def test_killing_the_challenger_under_load_fails_no_user_request(shadowed):
    gw, v1, _ = shadowed
    old = challenger(gw)["scoring_server"]
    statuses: Counter = Counter()
    stop = threading.Event()

    def load():
        while not stop.is_set():
            statuses[gw.predict("A moving, beautifully acted film.").status_code] += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        gw.wait_for(lambda: sum(statuses.values()) >= 20, timeout=60)
        port = old.rsplit(":", 1)[1]
        killed = [
            pid
            for pid in descendants(gw.proc.pid)
            if "uvicorn" in cmdline(pid) and f"--port {port}" in cmdline(pid)
        ]
        assert killed, f"no challenger server on port {port}"
        os.kill(killed[0], signal.SIGKILL)
        began = time.monotonic()
        back = gw.wait_for(
            lambda: (c := challenger(gw)) and c["scoring_server"] != old and c, timeout=180
        )
        seconds = time.monotonic() - began
        served_before = sum(statuses.values())
        gw.wait_for(lambda: sum(statuses.values()) >= served_before + 20, timeout=60)
    finally:
        stop.set()
        worker.join()
    assert set(statuses) == {200}, statuses
    assert gw.health()["model_version"] == f"v{v1}"
    print(f"\nchallenger back after {seconds:.1f}s at {back['scoring_server']}; users: {statuses}")


def test_promoting_the_challenger_reuses_its_running_server(shadowed, tracking_uri):
    gw, _, v2 = shadowed
    url = challenger(gw)["scoring_server"]
    # The gate reads the same figures and refuses below them (moving `production` itself would
    # disturb the shared gateway, so acceptance is left to the unit tests).
    gate = (f"version={v2}", "require_agreement=1", f"gateway_url={gw.url}")
    refused = run_training(tracking_uri, *gate, entry="promote", timeout=300)
    assert refused.returncode != 0
    assert "below the required 100.00%" in refused.stderr, refused.stderr[-2000:]
    # The same live figures let it through under a gate it meets, and only for this version.
    agreement = challenger(gw)["agreement"]
    assert 0.5 < agreement < 0.99
    assert check_gate(gw.url, str(v2), agreement) is None
    assert "below the required" in check_gate(gw.url, str(v2), agreement + 0.01)
    assert "not v" in check_gate(gw.url, str(int(v2) + 1), 0.5)  # another version: refused

    MlflowClient(tracking_uri).set_registered_model_alias(NAME, PRODUCTION, v2)
    gw.wait_for(lambda: gw.serving(f"v{v2}"), timeout=30)
    info = gw.http.get("/info").json()
    assert info["scoring_server"] == url
    assert "challenger" in info["last_rollout"]["reason"]
    assert info["challenger"] is None  # it names production's version now: nothing to compare
    gw.wait_for(lambda: len(scoring_servers(gw)) == 1, timeout=60)  # v1 drained and stopped
