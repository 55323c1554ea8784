"""Start and stop real servers for tests: free loopback ports, readiness, clean shutdown.

The helpers live in `stack/` (the stack and the benchmarks use them too); these are the
names the tests know them by.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

from stack import processes
from stack.processes import BIN, ROOT, free_port, stop, wait_until_up
from stack.tracking import tracking_server as _tracking_server

__all__ = [
    "BIN", "ROOT", "env", "free_port", "run_training", "spawn", "stop", "tracking_server",
    "wait_until_up",
]  # fmt: skip


def env(**extra: str) -> dict[str, str]:
    """The test environment: the venv first on PATH (MLflow runs `python` and `uvicorn`),
    and none of the calling shell's MLFLOW_* variables but MLFLOW_DISABLE_TELEMETRY."""
    return processes.environment(drop=("MLFLOW_",), **extra)


def spawn(args: list[str], log: Path, **extra_env: str) -> subprocess.Popen:
    """Start ``args`` from the repository in a session of its own, output to ``log``."""
    return processes.start(args, log=log, env=env(**extra_env))


@contextmanager
def tracking_server(state: Path, port: int | None = None):
    """A real MLflow tracking server with registry, SQLite store and proxied artifacts.

    Started again with the same ``state`` and ``port``, it is the same registry back."""
    with _tracking_server(state, port, env=env()) as uri:
        yield uri


def run_training(tracking_uri: str, *params: str, entry: str = "main", timeout: float = 600):
    """`mlflow run .` exactly as a user types it, with ``-P key=value`` parameters."""
    args = [
        str(BIN / "mlflow"), "run", ".", "-e", entry, "--env-manager", "local",
        "--experiment-name", "Sentiment-Analysis",
    ]  # fmt: skip
    for param in params:
        args += ["-P", param]
    return subprocess.run(
        args,
        cwd=ROOT,
        env=env(MLFLOW_TRACKING_URI=tracking_uri),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
