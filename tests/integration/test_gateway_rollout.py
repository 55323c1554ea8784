"""Promotions, rollbacks and refused versions, while requests keep coming."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.gateways import cmdline, descendants, gateway
from tests.models import promote, register_broken_version, register_version

pytestmark = pytest.mark.integration

REVIEWS = ["A wonderful, moving film.", "Dull and far too long.", "I loved every minute."]


class Traffic:
    """Keep /predict, /predict/batch and /invocations busy from background threads."""

    def __init__(self, url: str, threads: int = 3):
        self.url, self.threads = url, threads
        self.answers: list[tuple[str, int, str | None]] = []
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self):
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for worker in self._workers:
            worker.join()

    def _run(self, index: int) -> None:
        calls = [
            ("/predict", lambda i: {"text": REVIEWS[i % 3]}),
            ("/predict/batch", lambda i: {"texts": REVIEWS}),
            (
                "/invocations",
                lambda i: {"dataframe_split": {"columns": ["text"], "data": [[REVIEWS[0]]]}},
            ),
        ]
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = index
            while not self._stop.is_set():
                path, body = calls[i % len(calls)] if index else calls[0]
                response = client.post(path, json=body(i))
                version = (
                    response.headers.get("x-model-version")
                    if path == "/invocations"
                    else response.json().get("model_version")
                )
                self.answers.append((path, response.status_code, version))
                i += 1
                # Leave the two cores some room: the new scoring server has to start meanwhile.
                time.sleep(0.02)

    def statuses(self) -> Counter:
        return Counter(status for _, status, _ in self.answers)

    def versions(self) -> set:
        return {version for _, _, version in self.answers}


def test_promotion_and_rollback_lose_no_request(served, tracking_uri):
    gw, v1 = served.gw, served.v1
    v2 = register_version(tracking_uri, tags={"test_accuracy": "0.86", "preset": "tests"})
    with Traffic(gw.url) as traffic:
        time.sleep(0.5)
        promote(tracking_uri, v2)
        gw.wait_for(lambda: gw.serving(f"v{v2}"), timeout=90)
        time.sleep(1)
        promote(tracking_uri, v1)
        gw.wait_for(lambda: gw.serving(f"v{v1}"), timeout=90)
        time.sleep(1)
    assert traffic.statuses() == {200: len(traffic.answers)}
    assert traffic.versions() == {f"v{v1}", f"v{v2}"}
    assert {path for path, _, _ in traffic.answers} == {
        "/predict",
        "/predict/batch",
        "/invocations",
    }
    info = gw.http.get("/info").json()
    assert info["last_rollout"]["kind"] == "rollback"
    assert info["last_rollout"]["outcome"] == "succeeded"
    metrics = gw.http.get("/metrics").text
    assert 'gateway_rollouts_total{kind="promotion",outcome="succeeded"} 1.0' in metrics
    assert 'gateway_rollouts_total{kind="rollback",outcome="succeeded"} 1.0' in metrics
    assert len(scoring_servers(gw)) == 1


def test_a_version_failing_its_smoke_test_is_never_served(served, tracking_uri):
    gw, v1 = served.gw, served.v1
    broken = register_broken_version(tracking_uri)

    def refused():
        info = gw.http.get("/info").json()
        return info if info["rejected_versions"] else None

    with Traffic(gw.url, threads=1) as traffic:
        promote(tracking_uri, broken)
        info = gw.wait_for(refused, timeout=90)
    assert traffic.statuses() == {200: len(traffic.answers)}
    assert traffic.versions() == {f"v{v1}"}
    assert info["model_version"] == f"v{v1}"
    rejected = info["rejected_versions"][0]
    assert rejected["version"] == broken
    assert rejected["outcome"] == "failed"
    assert "expected ['positive', 'negative']" in rejected["reason"]
    assert info["last_rollout"] == rejected
    time.sleep(2.5)
    assert len(scoring_servers(gw)) == 1, "the refused version was retried or left running"

    promote(tracking_uri, v1)
    gw.wait_for(lambda: not gw.http.get("/info").json()["rejected_versions"], timeout=10)
    assert gw.serving(f"v{v1}")


def test_external_scoring_server_is_used_without_supervision(served, tracking_uri, tmp_path):
    url = served.gw.http.get("/info").json()["scoring_server"]
    with gateway(tmp_path, tracking_uri, GATEWAY_SCORING_URL=url) as external:
        external.wait_for(lambda: external.http.get("/ready").status_code == 200, timeout=20)
        answer = external.predict("An excellent, heartfelt film.")
        assert answer.status_code == 200
        assert answer.json()["sentiment"] == "positive"
        assert answer.json()["model_version"] == f"v{served.v1}"
        assert external.http.get("/info").json()["scoring_server"] == url
        assert descendants(external.proc.pid) == []


def scoring_servers(gw) -> list[int]:
    return [pid for pid in descendants(gw.proc.pid) if "models serve" in cmdline(pid)]
