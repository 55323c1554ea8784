"""The MLflow tracking server: registry, UI and proxied artifacts, on loopback.

`make up`, the tests and the serving benchmark all start it the same way: `python -m
stack.tracking` prepares the store (its schema, and the registry's accounts when REGISTRY_AUTH
is on), then becomes `mlflow server`.
The stores (a SQLite file or a database server; a folder or an object store) reach it through
the environment variables `mlflow server` reads, so a database password never appears on a
command line; anywhere it is shown, it is shown without the password.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack.processes import BIN, ROOT, environment, free_port, start, stop, wait_until_up
from tracking_server import access, prepare

# Server-side jobs (GenAI scoring, trace archival) are unused here, and their runner
# processes outlive the server.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# MLflow's basic-auth settings, as Compose has them (a signed-in user may read everything,
# and write only what tracking_server/access.py grants); `make up` keeps its users in a
# SQLite file of its state instead.
AUTH_CONFIG = ROOT / "deploy" / "mlflow" / "basic_auth.ini"


def command(port: int, auth: bool = False) -> list[str]:
    """The command line of a tracking server on ``port``: no store, no credentials in it.
    With ``auth``, MLflow's basic-auth app (see auth_env)."""
    return [
        str(BIN / "python"), "-m", "stack.tracking",
        "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        *(["--app-name", "basic-auth"] if auth else []),
    ]  # fmt: skip


def auth_env(state: Path, passwords: Path) -> dict[str, str]:
    """What the basic-auth server reads: its user store (a SQLite file under ``state``, in a
    config file written there) and the accounts' passwords (made once in ``passwords``)."""
    access.generate(passwords)
    settings = configparser.ConfigParser()
    settings.read(AUTH_CONFIG)
    settings["mlflow"]["database_uri"] = f"sqlite:///{state / 'registry-users.db'}"
    config = state / "registry-auth.ini"
    with config.open("w") as file:
        settings.write(file)
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "REGISTRY_PASSWORDS_DIR": str(passwords),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": (passwords / access.SERVER_KEY).read_text(),
    }


def credentials(passwords: Path, account: str) -> dict[str, str]:
    """The variables an MLflow client signs in with as ``account``."""
    return {
        "MLFLOW_TRACKING_USERNAME": account,
        "MLFLOW_TRACKING_PASSWORD": (passwords / account).read_text().strip(),
    }


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


def main(args: list[str]) -> None:
    """Prepare the store (tracking_server/prepare.py), then run `mlflow server` with ``args``
    in this process (MLflow is imported once; stopping it stops both)."""
    prepare.main()
    from mlflow.cli import cli

    cli.main(args=["server", *args], prog_name="mlflow")


if __name__ == "__main__":
    main(sys.argv[1:])
