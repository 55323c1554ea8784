"""Things going wrong: the scoring server dies, the registry is unreachable, upstream errors
and timeouts, and the gateway itself stopping."""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack

import httpx
import psutil
import pytest

from tests.gateways import (
    alive,
    descendants,
    gateway,
    kill_scoring_server,
    misbehaving_scoring_server,
    scoring_servers,
)
from tests.models import promote, register_version
from tests.servers import free_port, tracking_server

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
    answer = own.wait_for(lambda: (r := own.predict("A fine film.")).status_code == 503 and r, 5)
    noticed = time.monotonic() - started
    assert answer.json() == {"detail": NOT_LOADED}
    slowest = 0.0
    for _ in range(10):
        asked = time.monotonic()
        # Bounded: an answer that hangs while the scoring server is down raises here.
        answered = own.http.post("/predict", json={"text": "A fine film."}, timeout=2)
        assert answered.status_code in (200, 503)
        slowest = max(slowest, time.monotonic() - asked)
    print(f"killed scoring server: 503 after {noticed:.2f} s; slowest answer {slowest:.3f} s")
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
    own.wait_for(lambda: not any(alive(pid) for pid in children), timeout=10, every=0.1)


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
        # Bounded: the upstream stalls for 5 s, the gateway must give up after 1 s.
        stalled = gw.http.post("/predict", json={"text": "Please stall."}, timeout=4)
        assert stalled.status_code == 504
        assert stalled.json() == {"detail": "Prediction timed out after 1s."}
        passed = gw.http.post("/invocations", json={"inputs": ["x"]})
        assert passed.status_code == 500
        assert "stack_trace" not in passed.json()
        assert passed.json()["message"].startswith("Model raised MemoryError")


def test_starts_with_the_registry_unreachable(tmp_path):
    with gateway(tmp_path, f"http://127.0.0.1:{free_port()}") as gw:
        assert gw.health()["status"] == "degraded"
        # Bounded: nothing to wait for, so the answer is immediate.
        answer = gw.http.post("/predict", json={"text": "A fine film."}, timeout=2)
        assert (answer.status_code, answer.json()) == (503, {"detail": NOT_LOADED})
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
        gw.wait_for(lambda: gw.health()["registry_reachable"] is False, timeout=30)
        assert [gw.predict("A fine film.").status_code for _ in range(5)] == [200] * 5
        assert gw.health()["status"] == "healthy"
        info = gw.http.get("/info").json()
        assert (info["model_version"], info["metrics"]) == (f"v{version}", {"test_accuracy": 0.8})
        assert any(line["msg"].startswith("registry unavailable") for line in gw.log_lines())


def test_the_gateway_out_of_file_descriptors_leaves_the_scoring_server_alone(
    served, tracking_uri, tmp_path
):
    """No file descriptor for a new connection is the gateway's trouble, not the server's:
    the request fails, and the live scoring server is neither stopped nor replaced."""
    promote(tracking_uri, served.v1)
    with gateway(tmp_path, tracking_uri) as gw:
        gw.wait_for(lambda: gw.serving(f"v{served.v1}"), timeout=90)
        before = gw.http.get("/info").json()["scoring_server"]
        (server,) = scoring_servers(gw)
        process = psutil.Process(gw.proc.pid)
        limits = process.rlimit(psutil.RLIMIT_NOFILE)
        # One kept-alive connection carries every request below: the gateway needs no new
        # descriptor to hear them, only to call the scoring server.
        with httpx.Client(base_url=gw.url, timeout=30, limits=httpx.Limits(max_connections=1)) as c:
            # The scorer's idle connections to the scoring server close after 2 s; the
            # health pings keep one of their own.
            port = int(before.rsplit(":", 1)[1])
            gw.wait_for(lambda: len(_connections(process, port)) <= 1, timeout=10, every=0.1)
            assert c.get("/health").status_code == 200
            try:
                process.rlimit(psutil.RLIMIT_NOFILE, (_lowest_free_fd(gw.proc.pid), limits[1]))
                starved = [c.post("/predict", json={"text": "A fine film."}) for _ in range(3)]
                info = c.get("/info").json()
            finally:
                process.rlimit(psutil.RLIMIT_NOFILE, limits)
            answer = c.post("/predict", json={"text": "A fine film."})
        print(f"out of descriptors: {[(r.status_code, r.json()) for r in starved]}")
        assert {r.status_code for r in starved} == {503}
        assert info["scoring_server"] == before and info["last_rollout"]["kind"] == "start"
        assert answer.status_code == 200 and answer.json()["model_version"] == f"v{served.v1}"
        assert scoring_servers(gw) == [server], "the scoring server was stopped or replaced"
        assert 'kind="crash"' not in gw.http.get("/metrics").text


def _connections(process: psutil.Process, port: int) -> list:
    return [
        c
        for c in process.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


def _lowest_free_fd(pid: int) -> int:
    """The lowest descriptor number the process has free: as a limit, no new one opens."""
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return next(n for n in range(len(used) + 1) if n not in used)


def test_a_sigkilled_gateway_leaves_no_scoring_server_behind(served, tracking_uri, tmp_path):
    """It cannot stop them itself: the kernel tells them it is gone, and they go too, so a
    gateway started again on the same ports can serve."""
    with gateway(tmp_path, tracking_uri) as gw:
        gw.wait_for(lambda: gw.serving(f"v{served.v1}"), timeout=90)
        below = [psutil.Process(pid) for pid in descendants(gw.proc.pid)]
        assert any("models serve" in " ".join(p.cmdline()) for p in below), below
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(10)
        _, left = psutil.wait_procs(below, timeout=30)
        assert not [p for p in left if alive(p.pid)], [p.cmdline()[:6] for p in left]
