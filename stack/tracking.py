"""The MLflow tracking server: registry, UI and proxied artifacts, on loopback.

`make up`, the tests and the serving benchmark all start it the same way: `python -m
stack.tracking` upgrades the store's schema (`mlflow db upgrade`), then becomes `mlflow server`.
The stores (a SQLite file or a database server; a folder or an object store) reach it through
the environment variables `mlflow server` reads, so a database password never appears on a
command line; anywhere it is shown, it is shown without the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from stack.processes import BIN, environment, free_port, start, stop, wait_until_up

# Server-side jobs (GenAI scoring, trace archival) are unused here, and their runner
# processes outlive the server.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# Seconds the schema upgrade waits for a database server that is still starting.
CONNECT_TIMEOUT = 60.0


def command(port: int) -> list[str]:
    """The command line of a tracking server on ``port``: no store, no credentials in it."""
    return [
        str(BIN / "python"), "-m", "stack.tracking",
        "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def server_env(backend_store_uri: str, artifacts_destination: str) -> dict[str, str]:
    """What the tracking server reads its stores from (with the S3 endpoint and keys, if any,
    from the rest of its environment)."""
    return {
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination,
        **SERVER_ENV,
    }


def local_stores(state: Path) -> tuple[str, str]:
    """The embedded default: a SQLite file and an artifact folder under ``state``."""
    return f"sqlite:///{state / 'mlflow.db'}", str(state / "artifacts")


def shown(uri: str) -> str:
    """``uri`` as it may be printed: any password replaced by ***."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any("password" in key.lower() for key, _ in query):
        return uri
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = [(key, "***" if "password" in key.lower() else value) for key, value in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def start_server(
    state: Path,
    port: int,
    log: Path,
    env: dict[str, str],
    stores: tuple[str, str] | None = None,
) -> subprocess.Popen:
    """Start the server in a session of its own (not waiting for it to answer). ``stores``
    (backend store URI, artifacts destination) defaults to the local ones under ``state``."""
    state.mkdir(parents=True, exist_ok=True)
    backend, artifacts = stores or local_stores(state)
    return start(command(port), log=log, env={**env, **server_env(backend, artifacts)})


@contextmanager
def tracking_server(
    state: Path,
    port: int | None = None,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    stores: tuple[str, str] | None = None,
) -> Iterator[str]:
    """A running tracking server, as its URI; stopped, children and all, on the way out.

    Started again with the same ``state`` (or ``stores``) and ``port``, it is the same
    registry back. Its output goes to ``state/tracking.log``; the environment defaults to
    this one without its MLFLOW_* variables (but its MLFLOW_DISABLE_TELEMETRY)."""
    port = port or free_port()
    variables = environment(drop=("MLFLOW_",)) if env is None else env
    proc = start_server(state, port, state / "tracking.log", variables, stores)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", timeout=timeout, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def upgrade_schema(uri: str) -> None:
    """`mlflow db upgrade` (creating the tables of an empty database), once the database
    answers. A SQLite file that does not exist yet is left to the server to create."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return
    from mlflow.db import upgrade
    from mlflow.store.db.utils import create_sqlalchemy_engine

    deadline = time.monotonic() + CONNECT_TIMEOUT
    engine = create_sqlalchemy_engine(uri)
    while True:
        try:
            with engine.connect():
                break
        except Exception as error:
            if time.monotonic() > deadline:
                # The driver's message names the host, port and user, never the password.
                cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise SystemExit(
                    f"The backend store {shown(uri)} did not answer within "
                    f"{CONNECT_TIMEOUT:.0f}s: {type(error).__name__}: {cause}"
                ) from None
            time.sleep(1)
        finally:
            engine.dispose()
    print(f"Upgrading the schema of {shown(uri)} (mlflow db upgrade)", flush=True)
    upgrade.main(args=[uri], prog_name="mlflow db upgrade", standalone_mode=False)


def main(args: list[str]) -> None:
    """Upgrade the schema of the store in MLFLOW_BACKEND_STORE_URI, then run `mlflow server`
    with ``args`` in this process (MLflow is imported once; stopping it stops both)."""
    upgrade_schema(os.environ["MLFLOW_BACKEND_STORE_URI"])
    from mlflow.cli import cli

    cli.main(args=["server", *args], prog_name="mlflow")


if __name__ == "__main__":
    main(sys.argv[1:])
