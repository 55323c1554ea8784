"""Start and stop real servers for tests: free loopback ports, readiness, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env(**extra: str) -> dict[str, str]:
    """The test environment: the venv first on PATH (MLflow runs `python` and `uvicorn`)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
    base["PYTHONUNBUFFERED"] = "1"
    base.update(extra)
    return base


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not up after {timeout:.0f}s")


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


def spawn(args: list[str], log: Path, **extra_env: str) -> subprocess.Popen:
    handle = log.open("ab")
    return subprocess.Popen(
        args, cwd=ROOT, env=env(**extra_env), stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def tracking_server(state: Path, port: int | None = None):
    """A real MLflow tracking server with registry, SQLite store and proxied artifacts.

    Started again with the same ``state`` and ``port``, it is the same registry back."""
    state.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = spawn(
        [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
            "--artifacts-destination", str(state / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        state / "tracking.log",
        # Server-side jobs (GenAI scoring, trace archival) are unused here, and their
        # runner processes outlive the server.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{uri}/health", timeout=120, proc=proc)
        yield uri
    finally:
        stop(proc)


def run_training(tracking_uri: str, *params: str, entry: str = "main", timeout: float = 600):
    """`mlflow run .` exactly as a user types it, with ``-P key=value`` parameters."""
    args = [
        str(BIN / "mlflow"), "run", ".", "-e", entry, "--env-manager", "local",
        "--experiment-name", "Sentiment-Analysis",
    ]
    for param in params:
        args += ["-P", param]
    return subprocess.run(
        args, cwd=ROOT, env=env(MLFLOW_TRACKING_URI=tracking_uri), capture_output=True,
        text=True, timeout=timeout,
    )
