"""A local MLflow tracking server: SQLite store, proxied artifacts, registry, on loopback.

`make up`, the tests and the serving benchmark all start it the same way.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack.processes import BIN, environment, free_port, start, stop, wait_until_up

# Server-side jobs (GenAI scoring, trace archival) are unused here, and their runner
# processes outlive the server.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def command(state: Path, port: int) -> list[str]:
    """The `mlflow server` command line for a store kept under ``state``."""
    return [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
        "--artifacts-destination", str(state / "artifacts"),
        "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def start_server(state: Path, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start the server in a session of its own (not waiting for it to answer)."""
    state.mkdir(parents=True, exist_ok=True)
    return start(command(state, port), log=log, env={**env, **SERVER_ENV})


@contextmanager
def tracking_server(
    state: Path,
    port: int | None = None,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """A running tracking server, as its URI; stopped, children and all, on the way out.

    Started again with the same ``state`` and ``port``, it is the same registry back. Its
    output goes to ``state/tracking.log``; the environment defaults to this one without
    its MLFLOW_* variables."""
    port = port or free_port()
    variables = environment(drop=("MLFLOW_",)) if env is None else env
    proc = start_server(state, port, state / "tracking.log", variables)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", timeout=timeout, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
