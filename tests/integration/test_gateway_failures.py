"""Things going wrong: the scoring server dies, the registry is unreachable, upstream errors
and timeouts, and the gateway itself stopping."""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack

import pytest

from tests.gateways import (
    alive,
    descendants,
    gateway,
    kill_scoring_server,
    misbehaving_scoring_server,
    signal_scoring_server,
)
from tests.load import Load
from tests.models import promote, register_version
from tests.servers import free_port, tracking_server

pytestmark = pytest.mark.integration

NOT_LOADED = "Model not loaded. Service temporarily unavailable. Please try again later."


@pytest.fixture(scope="module")
def own(served, tracking_uri, tmp_path_factory):
    """A gateway of its own, serving the production version, that these tests may break."""
    with gateway(tmp_path_factory.mktemp("own-gateway"), tracking_uri) as gw:
        gw.wait_for(lambda: gw.serving(f"v{served.v1}"), timeout=90)
        yield gw


def test_killed_scoring_server_gives_503_at_once_then_recovers(own, served):
    kill_scoring_server(own)
    started = time.monotonic()
    answer = own.wait_for(lambda: (r := own.predict("A fine film.")).status_code == 503 and r, 10)
    assert answer.json() == {"detail": NOT_LOADED}
    assert time.monotonic() - started < 5
    slowest = 0.0
    for _ in range(10):
        asked = time.monotonic()
        assert own.predict("A fine film.").status_code in (200, 503)
        slowest = max(slowest, time.monotonic() - asked)
    assert slowest < 1.0, "answers must not hang while the scoring server is down"
    assert own.health()["status"] == "degraded"

    own.wait_for(lambda: own.serving(f"v{served.v1}"), timeout=90)
    assert own.predict("A fine film.").status_code == 200
    info = own.http.get("/info").json()
    assert info["last_rollout"]["kind"] == "restart"
    assert info["last_rollout"]["outcome"] == "succeeded"
    assert (
        'gateway_rollouts_total{kind="crash",outcome="failed"} 1.0' in own.http.get("/metrics").text
    )


def test_shutdown_stops_every_process_it_started(own):
    children = descendants(own.proc.pid)
    assert any(alive(pid) for pid in children), "a scoring server should be running"
    own.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the parent sees it.
    assert own.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert own.log_lines()[-1]["msg"].startswith("Finished server process")
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if alive(pid)] == []


def test_upstream_errors_are_500_and_timeouts_504(tmp_path):
    unreachable = f"http://127.0.0.1:{free_port()}"
    with (
        misbehaving_scoring_server(delay=5) as upstream,
        gateway(
            tmp_path, unreachable, GATEWAY_SCORING_URL=upstream, GATEWAY_REQUEST_TIMEOUT="1"
        ) as gw,
    ):
        gw.wait_for(lambda: gw.http.get("/ready").status_code == 200, timeout=20)
        failed = gw.predict("Any review.")
        assert failed.status_code == 500
        assert failed.json() == {"detail": "Prediction failed: Model raised MemoryError"}
        asked = time.monotonic()
        stalled = gw.predict("Please stall.")
        assert stalled.status_code == 504
        assert time.monotonic() - asked < 4
        assert stalled.json() == {"detail": "Prediction timed out after 1s."}
        passed = gw.http.post("/invocations", json={"inputs": ["x"]})
        assert passed.status_code == 500
        assert "stack_trace" in passed.json()


def test_starts_with_the_registry_unreachable(tmp_path):
    with gateway(tmp_path, f"http://127.0.0.1:{free_port()}") as gw:
        assert gw.health()["status"] == "degraded"
        asked = time.monotonic()
        answer = gw.predict("A fine film.")
        assert (answer.status_code, answer.json()) == (503, {"detail": NOT_LOADED})
        assert time.monotonic() - asked < 1
        assert gw.http.get("/ready").status_code == 503
        assert descendants(gw.proc.pid) == []


def test_losing_the_registry_does_not_stop_predictions(tmp_path):
    with ExitStack() as stack:
        registry = stack.enter_context(ExitStack())
        uri = registry.enter_context(tracking_server(tmp_path / "tracking"))
        version = register_version(uri, alias=True, tags={"test_accuracy": "0.8"})
        gw = stack.enter_context(gateway(tmp_path / "gateway", uri))
        gw.wait_for(lambda: gw.serving(f"v{version}"), timeout=90)

        registry.close()
        time.sleep(3)
        assert [gw.predict("A fine film.").status_code for _ in range(5)] == [200] * 5
        assert gw.health()["status"] == "healthy"
        info = gw.http.get("/info").json()
        assert (info["model_version"], info["metrics"]) == (f"v{version}", {"test_accuracy": 0.8})
        assert any(line["msg"].startswith("registry unavailable") for line in gw.log_lines())


def test_a_hung_scoring_server_is_noticed_and_replaced_by_its_standby(
    served, tracking_uri, tmp_path
):
    """SIGSTOP: the server keeps its port and accepts connections, but never answers."""
    promote(tracking_uri, served.v1)
    settings = {"GATEWAY_STANDBY": "true", "GATEWAY_REQUEST_TIMEOUT": "10"}
    with gateway(tmp_path, tracking_uri, **settings) as gw:
        gw.wait_for(lambda: gw.serving(f"v{served.v1}"), timeout=90)
        spare = gw.wait_for(lambda: gw.http.get("/info").json()["standby_server"], timeout=90)
        hung_url = gw.http.get("/info").json()["scoring_server"]
        with Load(gw.url, concurrency=4, pause=0.05, timeout=30) as load:
            load.wait(1)
            hung = signal_scoring_server(gw, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                info = gw.wait_for(
                    lambda: (i := gw.http.get("/info").json())["scoring_server"] != hung_url and i,
                    timeout=60,
                    every=0.1,
                )
                detected = time.monotonic() - stopped
                gw.wait_for(lambda: not alive(hung), timeout=20)
                load.wait(2)
            finally:
                if alive(hung):  # never leave a stopped process behind
                    os.kill(hung, signal.SIGKILL)
    late = load.between(stopped + detected)
    bad = {s: n for s, n in load.statuses().items() if s != 200}
    print(
        f"hung server: failover after {detected:.1f} s; {len(load.answers)} requests, "
        f"non-2xx {bad}; recovery {load.recovery(stopped)}"
    )
    assert info["scoring_server"] == spare
    assert info["last_rollout"]["kind"] == "failover"
    # Only requests that were waiting on the hung server may fail (a timeout at most).
    assert load.statuses(late) == {200: len(late)}
    assert set(bad) <= {504}, bad
    assert sum(bad.values()) <= 4, "at most one request per client was waiting on it"
    assert load.versions() == {f"v{served.v1}"}
