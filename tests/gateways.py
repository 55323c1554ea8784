"""Run the real gateway as a subprocess for tests, and look at the processes it leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil

from stack import processes
from tests.servers import free_port, spawn, stop, wait_until_up


class Gateway:
    """A running `python -m gateway` and an HTTP client for it."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log
        self.http = httpx.Client(base_url=url, timeout=30)

    def predict(self, text: str, **extra) -> httpx.Response:
        return self.http.post("/predict", json={"text": text, **extra})

    def health(self) -> dict:
        return self.http.get("/health").json()

    def wait_for(self, what: Callable[[], object], timeout: float = 60.0, every: float = 0.2):
        """Poll until ``what()`` is truthy and return it; on timeout, show the gateway's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = what()
            if result:
                return result
            time.sleep(every)
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        raise TimeoutError(f"condition not met after {timeout:.0f}s; gateway log:\n{tail}")

    def serving(self, version: str) -> bool:
        return self.health()["model_version"] == version

    def log_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@contextmanager
def gateway(state: Path, tracking_uri: str, **settings: str):
    """Start the gateway on a free port with short poll intervals; stop it afterwards."""
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = state / f"gateway-{port}.log"
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "GATEWAY_PORT": str(port),
        "GATEWAY_POLL_INTERVAL": "1",
        "GATEWAY_RESTART_BACKOFF": "0.5",
        "GATEWAY_SCORING_LOG_DIR": str(state / "scoring"),
        "GATEWAY_MODEL_CACHE_DIR": str(state / "models"),
        "GATEWAY_MONITOR_DIR": str(state / "monitoring"),
        # Off unless a test is about it: each standby is one more scoring server to start.
        "GATEWAY_STANDBY": "false",
        **settings,
    }
    proc = spawn([sys.executable, "-m", "gateway"], log, **env)
    gw = Gateway(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_until_up(f"{gw.url}/health", timeout=60, proc=proc)
        yield gw
    finally:
        gw.http.close()
        stop(proc)


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (zombies included, as before they are reaped)."""
    return [child.pid for child in processes.descendants(pid)]


def alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdline(pid: int) -> str:
    """The process's command line, words joined by spaces ("" if it is gone)."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def kill_scoring_server(gw: Gateway, role: str = "scoring_server") -> int:
    """SIGKILL the uvicorn that serves the model (as the OOM killer would); return its pid.

    ``role="standby_server"`` kills the live version's standby instead."""
    port = gw.http.get("/info").json()[role].rsplit(":", 1)[1]
    for pid in descendants(gw.proc.pid):
        line = cmdline(pid)
        if "uvicorn" in line and f"--port {port}" in line:
            os.kill(pid, signal.SIGKILL)
            return pid
    raise AssertionError(f"no scoring server on port {port} under the gateway")


@contextmanager
def misbehaving_scoring_server(delay: float):
    """An external "scoring server" that answers /ping but fails or stalls on /invocations.

    It stands in for MLflow's server failing in ways a healthy model cannot be made to:
    a review containing "stall" is answered after ``delay`` seconds, anything else with
    MLflow's error body (a message and a stack trace).
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self._reply(200, b"\n")

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if b"stall" in body:
                time.sleep(delay)
                self._reply(200, b'{"predictions": []}')
                return
            error = {
                "error_code": "INTERNAL_ERROR",
                "message": "Model raised MemoryError\nwhile scoring",
                "stack_trace": "Traceback (most recent call last):\n  File ...",
            }
            self._reply(500, json.dumps(error).encode())

        def _reply(self, status: int, body: bytes):
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def scoring_servers(gw: Gateway) -> list[int]:
    """The `mlflow models serve` processes running under the gateway."""
    return [pid for pid in descendants(gw.proc.pid) if "models serve" in cmdline(pid)]


def signal_scoring_server(gw: Gateway, sig: int, role: str = "scoring_server") -> int:
    """Send ``sig`` to the uvicorn serving the model (SIGSTOP: a hung server); return its pid."""
    port = gw.http.get("/info").json()[role].rsplit(":", 1)[1]
    for pid in descendants(gw.proc.pid):
        line = cmdline(pid)
        if "uvicorn" in line and f"--port {port}" in line:
            os.kill(pid, sig)
            return pid
    raise AssertionError(f"no scoring server on port {port} under the gateway")
