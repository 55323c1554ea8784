"""Nothing sent home: MLflow's usage telemetry is off in every process `make up` starts.

`python -m stack.up` on free ports and a throwaway state dir, from an empty registry, started
without MLFLOW_DISABLE_TELEMETRY or DO_NOT_TRACK (the two variables MLflow 3.17 reads), so
that whatever its processes have, the stack gave them. While it comes up, every process in
its tree has its /proc/<pid>/environ read: the tracking server, the first training
(`mlflow run .` and the entry point it runs), the gateway and its scoring server, and
everything they start. Then a gateway started with MLFLOW_DISABLE_TELEMETRY=false shows that
an operator who turns it on gets it on, in the scoring servers too.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from stack import processes
from tests.gateways import gateway
from tests.servers import env, free_port, wait_until_up

TELEMETRY = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
# What each process the stack starts is recognised by, on its command line.
STARTED = {
    "tracking server": "-m stack.tracking",
    "training": "mlflow run .",
    "training entry point": "-m pipelines.train",
    "gateway": "-m gateway",
    "scoring server": " models serve ",
}


def environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with, as /proc shows it."""
    data = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


@dataclass
class Watcher:
    """Reads the command line and environment of every process below ``root``, every 0.1 s,
    until stopped: processes that come and go (the training) are seen too."""

    root: psutil.Process
    seen: dict[tuple[int, float], tuple[str, dict[str, str]]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.own = " ".join(self.root.cmdline())
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.done.wait(0.1):
            self.look()

    def look(self) -> None:
        for process in processes.descendants(self.root.pid):
            try:
                key = (process.pid, process.create_time())
                command = " ".join(process.cmdline())
                variables = environ(process.pid)
            except (psutil.Error, OSError):
                continue  # gone meanwhile
            if command == self.own:
                continue  # forked by the stack and not yet running its program: the stack's
            self.seen[key] = (f" {command} ", variables)  # the latest look: after its exec

    def stop(self) -> None:
        """Stop watching, after a last look."""
        if not self.done.is_set():
            self.done.set()
            self.thread.join()
            self.look()


@dataclass
class Stack:
    proc: subprocess.Popen
    watcher: Watcher
    tracking_uri: str
    gateway_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("telemetry")
    ports = {name: free_port() for name in ("MLFLOW_PORT", "GATEWAY_PORT", "SCORING_PORT")}
    variables = env(
        STATE_DIR=str(state),
        **{name: str(port) for name, port in ports.items()},
        GATEWAY_STANDBY="false",  # one scoring server is enough here
        GATEWAY_MODEL_CACHE_DIR=str(state / "models"),
        GATEWAY_SCORING_LOG_DIR=str(state / "logs" / "scoring"),
    )
    for name in TELEMETRY:  # whatever the processes have, the stack gave them
        variables.pop(name, None)
    log = state / "stack.log"
    proc = processes.start([sys.executable, "-m", "stack.up"], log=log, env=variables)
    watcher = Watcher(psutil.Process(proc.pid))
    gateway_url = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    try:
        try:
            # The first training (the packaged reviews), then a scoring server's start.
            wait_until_up(f"{gateway_url}/ready", timeout=900, proc=proc)
        except (RuntimeError, TimeoutError) as error:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise AssertionError(f"{error}; stack log:\n{tail}") from None
        answer = httpx.post(f"{gateway_url}/predict", json={"text": "A fine film."}, timeout=30)
        assert answer.status_code == 200, answer.text
        watcher.stop()
        yield Stack(proc, watcher, f"http://127.0.0.1:{ports['MLFLOW_PORT']}", gateway_url)
    finally:
        watcher.stop()
        processes.stop(proc, timeout=60)


def test_every_process_the_stack_starts_runs_with_mlflow_telemetry_off(stack):
    seen = list(stack.watcher.seen.values())
    for what, mark in STARTED.items():
        assert any(mark in command for command, _ in seen), f"no {what} seen: {seen}"
    wrong = [
        (command.strip(), {name: variables.get(name) for name in TELEMETRY})
        for command, variables in seen
        if any(variables.get(name) != "true" for name in TELEMETRY)
    ]
    listed = "\n".join(f"{command[:100]}: {values}" for command, values in wrong)
    assert not wrong, f"{len(wrong)} of {len(seen)} processes with telemetry on:\n{listed}"
    # Not inherited: the stack's own environment has neither.
    own = environ(stack.proc.pid)
    assert not set(TELEMETRY) & set(own)


def test_an_operator_who_turns_it_on_gets_it_on_in_the_scoring_servers(stack, tmp_path):
    """MLFLOW_DISABLE_TELEMETRY=false, and a DO_NOT_TRACK of their own: both reach the scoring
    servers as given, never overridden."""
    version = httpx.get(f"{stack.gateway_url}/health", timeout=30).json()["model_version"]
    with gateway(
        tmp_path, stack.tracking_uri, MLFLOW_DISABLE_TELEMETRY="false", DO_NOT_TRACK="false"
    ) as gw:
        gw.wait_for(lambda: gw.serving(version), timeout=300)
        children = processes.descendants(gw.proc.pid)
        scoring = [p for p in children if " models serve " in f" {' '.join(p.cmdline())} "]
        assert scoring, [p.cmdline() for p in children]
        for process in scoring:
            variables = environ(process.pid)
            assert {name: variables.get(name) for name in TELEMETRY} == dict.fromkeys(
                TELEMETRY, "false"
            ), process.cmdline()
