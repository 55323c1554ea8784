"""Promotions, rollbacks and refused versions, while requests keep coming."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager

import httpx
import pytest

from tests.gateways import descendants, gateway, scoring_servers
from tests.models import confidences, promote, register_broken_version, register_version

REVIEWS = ["A wonderful, moving film.", "Dull and far too long.", "I loved every minute."]


class Traffic:
    """Keep /predict, /predict/batch and /invocations busy from background threads.

    Every answer keeps its path, status, version label and, per review, its confidence."""

    def __init__(self, url: str, threads: int = 3):
        self.url, self.threads = url, threads
        self.answers: list[tuple[str, int, str | None]] = []
        # (version label, review, confidence) for every row answered.
        self.rows: list[tuple[str, str, float]] = []
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
                request = body(i)
                response = client.post(path, json=request)
                self._record(path, request, response)
                i += 1
                # Leave the two cores some room: the new scoring server has to start meanwhile.
                time.sleep(0.02)

    def _record(self, path: str, request: dict, response: httpx.Response) -> None:
        if response.status_code != 200:
            self.answers.append((path, response.status_code, None))
            return
        body = response.json()
        if path == "/invocations":
            version = response.headers.get("x-model-version")
            texts = [row[0] for row in request["dataframe_split"]["data"]]
            rows = body["predictions"]
        elif path == "/predict":
            version, texts, rows = body["model_version"], [request["text"]], [body]
        else:
            version, texts, rows = body["model_version"], request["texts"], body["predictions"]
        self.answers.append((path, 200, version))
        self.rows.extend(
            (version, t, row["confidence"]) for t, row in zip(texts, rows, strict=True)
        )

    def statuses(self) -> Counter:
        return Counter(status for _, status, _ in self.answers)

    def versions(self) -> set:
        return {version for _, _, version in self.answers}

    def mislabelled(self, expected: dict[str, dict[str, float]]) -> list[tuple[str, str, float]]:
        """Rows whose confidence is not what the version they are labelled with answers."""
        return [
            (version, text, confidence)
            for version, text, confidence in self.rows
            if confidence != pytest.approx(expected[version][text], abs=1e-9)
        ]


def test_promotion_and_rollback_lose_no_request(served, tracking_uri):
    gw, v1 = served.gw, served.v1
    # Fitted on other reviews: the same review gets another confidence from each version.
    v2 = register_version(tracking_uri, tags={"test_accuracy": "0.86"}, sample=1)
    expected = {f"v{v}": confidences(tracking_uri, v, REVIEWS) for v in (v1, v2)}
    assert all(expected[f"v{v1}"][t] != expected[f"v{v2}"][t] for t in REVIEWS), expected
    with Traffic(gw.url) as traffic:
        gw.wait_for(lambda: len(traffic.answers) >= 10, timeout=30, every=0.05)
        promote(tracking_uri, v2)
        gw.wait_for(lambda: gw.serving(f"v{v2}"), timeout=90)
        switched = len(traffic.answers)
        gw.wait_for(lambda: len(traffic.answers) >= switched + 20, timeout=30, every=0.05)
        promote(tracking_uri, v1)
        gw.wait_for(lambda: gw.serving(f"v{v1}"), timeout=90)
        switched = len(traffic.answers)
        gw.wait_for(lambda: len(traffic.answers) >= switched + 20, timeout=30, every=0.05)
    assert traffic.statuses() == {200: len(traffic.answers)}
    assert traffic.versions() == {f"v{v1}", f"v{v2}"}
    assert traffic.mislabelled(expected) == []
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
    # The old servers are drained and stopped in the background.
    gw.wait_for(lambda: len(scoring_servers(gw)) == 1, timeout=60)


def refused(gw, version: str) -> dict | None:
    info = gw.http.get("/info").json()
    return info if any(r["version"] == version for r in info["rejected_versions"]) else None


def test_a_version_failing_its_smoke_test_is_never_served(served, tracking_uri):
    gw, v1 = served.gw, served.v1
    broken = register_broken_version(tracking_uri)
    with Traffic(gw.url, threads=1) as traffic, production_back_to(tracking_uri, v1):
        promote(tracking_uri, broken)
        info = gw.wait_for(lambda: refused(gw, broken), timeout=90)
        gw.wait_for(lambda: len(scoring_servers(gw)) == 1, timeout=30)
        # Refused until the alias moves: never started again, over several polls.
        counts = watch_scoring_servers(gw, seconds=3.0)
    assert traffic.statuses() == {200: len(traffic.answers)}
    assert traffic.versions() == {f"v{v1}"}
    assert info["model_version"] == f"v{v1}"
    (rejected,) = info["rejected_versions"]
    assert rejected["version"] == broken
    assert rejected["outcome"] == "failed"
    assert "expected ['positive', 'negative']" in rejected["reason"], rejected
    assert info["last_rollout"] == rejected
    assert set(counts) == {1}, f"the refused version was retried or left running: {counts}"

    promote(tracking_uri, v1)
    gw.wait_for(lambda: not gw.http.get("/info").json()["rejected_versions"], timeout=10)
    assert gw.serving(f"v{v1}")


@pytest.mark.parametrize("kind", ["dict", "scalar"])
def test_a_version_answering_nonsense_is_stopped_refused_and_not_retried(
    served, tracking_uri, kind
):
    """A predict that returns a dict or a scalar must not leak its scoring server."""
    gw, v1 = served.gw, served.v1
    broken = register_broken_version(tracking_uri, kind=kind)
    with Traffic(gw.url, threads=1) as traffic, production_back_to(tracking_uri, v1):
        promote(tracking_uri, broken)
        # Live + the candidate is two; more means a server was left running and another started.
        seen: list[int] = []

        def settled():
            seen.append(len(scoring_servers(gw)))
            assert seen[-1] <= 2, f"scoring servers leak: {seen}"
            return refused(gw, broken)

        info = gw.wait_for(settled, timeout=90)
        gw.wait_for(lambda: len(scoring_servers(gw)) == 1, timeout=30)
        counts = watch_scoring_servers(gw, seconds=5.0)
        answered = gw.predict(REVIEWS[0])
    (rejected,) = info["rejected_versions"]
    assert (rejected["version"], rejected["outcome"]) == (broken, "failed")
    assert "the answer has no list of predictions" in rejected["reason"], rejected
    assert set(counts) == {1}, f"scoring servers over five polls: {counts}"
    assert traffic.statuses() == {200: len(traffic.answers)}
    assert traffic.versions() == {f"v{v1}"}
    assert (answered.status_code, answered.json()["model_version"]) == (200, f"v{v1}")


def test_external_scoring_server_is_used_without_supervision(served, tracking_uri, tmp_path):
    url = served.gw.http.get("/info").json()["scoring_server"]
    with gateway(tmp_path, tracking_uri, GATEWAY_SCORING_URL=url) as external:
        external.wait_for(lambda: external.http.get("/ready").status_code == 200, timeout=20)
        answer = external.predict("An excellent, heartfelt film.")
        assert answer.status_code == 200
        assert answer.json()["sentiment"] == "positive"
        # MLflow's scoring server does not say which version it runs: no guess.
        assert answer.json()["model_version"] == "unknown"
        assert external.health()["model_version"] == "unknown"
        invoked = external.http.post("/invocations", json={"inputs": ["A fine film."]})
        assert invoked.headers["x-model-version"] == "unknown"
        info = external.wait_for(
            lambda: (i := external.http.get("/info").json())["alias_version"] and i, timeout=20
        )
        assert info["model_version"] == "unknown"
        assert info["alias_version"] == f"v{served.v1}"
        assert info["scoring_server"] == url
        assert descendants(external.proc.pid) == []


@contextmanager
def production_back_to(tracking_uri: str, version: str):
    """Whatever the test does, the alias names ``version`` again afterwards."""
    try:
        yield
    finally:
        promote(tracking_uri, version)


def watch_scoring_servers(gw, seconds: float, every: float = 0.25) -> Counter:
    """How many scoring servers run under the gateway, sampled for ``seconds``."""
    counts: Counter = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        counts[len(scoring_servers(gw))] += 1
        time.sleep(every)
    return counts
