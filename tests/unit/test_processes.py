"""The process helpers on small real processes: stop leaves nothing behind, readiness waits."""

import os
import sys
import time
from contextlib import suppress

import psutil
import pytest

from stack.processes import (
    EPHEMERAL_RANGE,
    cpu_seconds,
    descendants,
    environment,
    free_port,
    running,
    start,
    stop,
    wait_until_up,
)

# A leader that ignores SIGTERM and starts a child in a session of its own that ignores it
# too: the shape of a hung gateway and the scoring server it started.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
time.sleep(600)
"""


def until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


def test_stop_ends_a_stubborn_leader_and_the_child_that_left_its_group(tmp_path):
    proc = start([sys.executable, "-c", STUBBORN], log=tmp_path / "out.log")
    children: list[psutil.Process] = []
    try:
        children = until(lambda: [c for c in descendants(proc.pid) if os.getsid(c.pid) == c.pid])

        stop(proc, timeout=1)

        assert proc.returncode is not None
        assert not any(running(c) for c in children), "the child in its own session was left"
    finally:
        for process in [*children, psutil.Process(proc.pid)] if proc.poll() is None else children:
            with suppress(psutil.Error):
                process.kill()


def test_free_ports_are_below_the_ephemeral_range():
    low = int(EPHEMERAL_RANGE.read_text().split()[0]) if EPHEMERAL_RANGE.exists() else None
    if low is None or low < 2048:
        pytest.skip("no ephemeral range with room below it")
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= port < low for port in ports), ports
    assert len(ports) > 1, "drawn at random: two helpers starting at once differ"


def test_wait_until_up_returns_once_the_url_answers(tmp_path):
    port = free_port()
    proc = start(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        log=tmp_path / "http.log",
        cwd=tmp_path,
    )
    try:
        assert wait_until_up(f"http://127.0.0.1:{port}/", timeout=30, proc=proc) >= 0
    finally:
        stop(proc)
    assert proc.returncode is not None


def test_wait_until_up_gives_up_as_soon_as_the_process_exits(tmp_path):
    proc = start([sys.executable, "-c", "raise SystemExit(3)"], log=tmp_path / "out.log")
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_until_up(f"http://127.0.0.1:{free_port()}/", timeout=60, proc=proc)


def test_cpu_seconds_counts_what_runs_and_nothing_for_what_is_gone(tmp_path):
    proc = start([sys.executable, "-c", "pass"], log=tmp_path / "out.log")
    gone = psutil.Process(proc.pid)
    proc.wait()
    assert cpu_seconds([gone]) == 0
    assert cpu_seconds([psutil.Process()]) > 0


def test_a_childs_environment_keeps_the_telemetry_choice_when_mlflow_variables_are_dropped(
    monkeypatch,
):
    """Tests and benchmarks start servers without the shell's MLFLOW_* variables (its tracking
    URI, its stores), but with its choice about MLflow's usage telemetry."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    child = environment(drop=("MLFLOW_",), EXTRA="1")
    assert "MLFLOW_TRACKING_URI" not in child and child["EXTRA"] == "1"
    assert child["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "MLFLOW_DISABLE_TELEMETRY" not in environment(drop=("MLFLOW_DISABLE_TELEMETRY",))
