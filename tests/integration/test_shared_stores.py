"""The whole loop on shared stores: a real PostgreSQL server for runs and the registry, an
S3-compatible server (moto) for artifacts, the tracking server between them and everyone else.

`mlflow run .` trains, registers and promotes; the gateway downloads the version through the
tracking server and serves it; `make up` (stack.up) runs on the same stores. The database
password never shows on a command line, in a log, or in what the servers answer.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from mlflow.tracking import MlflowClient

from model.names import ALIAS, MODEL_NAME
from tests.gateways import gateway
from tests.servers import free_port, run_training, spawn, stop, wait_until_up
from tests.stores import SharedStores
from tracking_server import store


def production(uri: str):
    return MlflowClient(uri, uri).get_model_version_by_alias(MODEL_NAME, ALIAS)


@pytest.fixture(scope="module")
def trained(shared_stores: SharedStores):
    """`mlflow run .` on 2,000 reviews against the tracking server on PostgreSQL and S3."""
    result = run_training(shared_stores.uri, "max_rows=2000")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return production(shared_stores.uri)


def test_the_run_and_the_registry_are_in_postgresql(shared_stores, trained):
    with shared_stores.postgres.connect() as db:
        (status,) = db.execute(
            "SELECT status FROM runs WHERE run_uuid = %s", (trained.run_id,)
        ).fetchone()
        metrics = dict(
            db.execute(
                "SELECT key, value FROM latest_metrics WHERE run_uuid = %s", (trained.run_id,)
            ).fetchall()
        )
        aliases = db.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE name = %s", (MODEL_NAME,)
        ).fetchall()
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert status == "FINISHED"
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    assert (ALIAS, int(trained.version)) in aliases
    assert revision, "the schema was created by mlflow db upgrade"


def test_the_artifacts_are_in_the_bucket_and_not_on_disk(shared_stores, trained):
    prefix = shared_stores.artifacts.removeprefix(f"s3://{shared_stores.s3.bucket}/")
    keys = shared_stores.s3.keys(prefix)
    model_id = trained.source.removeprefix("models:/")
    assert any(key.endswith(f"/models/{model_id}/artifacts/MLmodel") for key in keys), keys
    assert any(
        key.endswith(f"/models/{model_id}/artifacts/code/model/preprocess.py") for key in keys
    )
    evaluation = [key for key in keys if trained.run_id in key and "/evaluation/" in key]
    assert any(key.endswith("test_confusion_matrix.png") for key in evaluation), evaluation
    state = shared_stores.state / "tracking"
    assert not (state / "artifacts").exists() and not (state / "mlflow.db").exists()


def test_the_ui_and_its_api_answer(shared_stores, trained):
    page = httpx.get(f"{shared_stores.uri}/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    found = httpx.get(
        f"{shared_stores.uri}/ajax-api/2.0/mlflow/registered-models/get",
        params={"name": MODEL_NAME},
        timeout=30,
    )
    assert found.status_code == 200
    aliases = found.json()["registered_model"]["aliases"]
    assert {"alias": ALIAS, "version": trained.version} in aliases


def test_the_gateway_downloads_through_the_tracking_server_and_predicts(
    shared_stores, trained, tmp_path_factory
):
    with gateway(tmp_path_factory.mktemp("shared-gateway"), shared_stores.uri) as gw:
        gw.wait_for(lambda: gw.serving(f"v{trained.version}"), timeout=180)
        answer = gw.predict("This movie was absolutely amazing!")
        assert answer.status_code == 200, answer.text
        assert answer.json()["sentiment"] == "positive"
        assert answer.json()["model_version"] == f"v{trained.version}"
        # No S3 endpoint or keys: the model came through the tracking server's proxy.
        environment = Path(f"/proc/{gw.proc.pid}/environ").read_bytes()
        assert b"MLFLOW_S3_ENDPOINT_URL" not in environment
        assert b"AWS_SECRET_ACCESS_KEY" not in environment
        assert_password_hidden(shared_stores, [gw.log, *gw.log.parent.rglob("*.log")])
        info = gw.http.get("/info").text + gw.http.get("/health").text
        assert shared_stores.postgres.password not in info


def test_make_up_runs_on_the_shared_stores(shared_stores, trained, tmp_path):
    """`make up` with MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION: schema
    upgrade on a database in use, no training (production exists), the gateway serves."""
    ports = {name: str(free_port()) for name in ("MLFLOW_PORT", "GATEWAY_PORT", "SCORING_PORT")}
    log = tmp_path / "make-up.log"
    proc = spawn(
        [sys.executable, "-m", "stack.up"],
        log,
        STATE_DIR=str(tmp_path / "state"),
        MLFLOW_BACKEND_STORE_URI=shared_stores.postgres.uri,
        MLFLOW_ARTIFACTS_DESTINATION=shared_stores.artifacts,
        **shared_stores.s3.env,
        **ports,
    )
    try:
        gateway_url = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        wait_until_up(f"{gateway_url}/ready", timeout=240, proc=proc)
        answer = httpx.post(f"{gateway_url}/predict", json={"text": "A dull film."}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == f"v{trained.version}"
        out = _wait_for_text(log, "The stack is up", timeout=30)
        assert "no training needed" in out
        shown = store.shown(shared_stores.postgres.uri)
        assert ":***@127.0.0.1:" in shown
        assert f"(store: {shown}; artifacts: {shared_stores.artifacts})" in out
        assert f"Tracking store  {shown}" in out
        # The store URI goes to the tracking server alone, not to the gateway or training.
        children = psutil.Process(proc.pid).children(recursive=True)
        (server,) = [c for c in children if "stack.tracking" in " ".join(c.cmdline())]
        assert b"MLFLOW_BACKEND_STORE_URI" in _environ(server.pid)
        others = set(children) - {server, *server.children(recursive=True)}
        assert any("gateway" in " ".join(c.cmdline()) for c in others)
        for child in others:
            assert b"MLFLOW_BACKEND_STORE_URI" not in _environ(child.pid), child.cmdline()
        assert_password_hidden(shared_stores, [log, *(tmp_path / "state").rglob("*.log")])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        stop(proc)
    assert "Stopped." in log.read_text()


def test_a_store_that_does_not_answer_stops_the_start_with_its_uri_hidden(
    shared_stores, monkeypatch
):
    monkeypatch.setattr(store, "CONNECT_TIMEOUT", 0.0)
    database = shared_stores.postgres
    wrong = database.uri.replace(f":{database.password}@", ":not-the-password@")
    closed = database.uri.replace(f":{database.port}/", f":{free_port()}/")
    for uri, password in ((wrong, "not-the-password"), (closed, database.password)):
        with pytest.raises(SystemExit) as stopped:
            store.upgrade_schema(uri)
        message = str(stopped.value)
        assert message.startswith(f"The backend store {store.shown(uri)} did not answer")
        assert password not in message and "OperationalError" in message


def assert_password_hidden(stores: SharedStores, logs: list[Path]) -> None:
    """No process on this machine has the password on its command line; no log holds it."""
    password = stores.postgres.password
    for process in psutil.process_iter(["cmdline"]):
        assert password not in " ".join(process.info["cmdline"] or []), process.info["cmdline"]
    server_log = stores.postgres.data.parent / "postgres.log"
    logs = [
        *logs,
        server_log,
        stores.state / "tracking" / "tracking.log",
        *stores.state.rglob("*.log"),
    ]
    for path in logs:
        assert password not in path.read_text(errors="replace"), path


def _wait_for_text(path: Path, text: str, timeout: float) -> str:
    """The file's content once it holds ``text`` (checked every 0.2 s, at most ``timeout``)."""
    deadline = time.monotonic() + timeout
    while text not in (content := path.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{text!r} not in {path} after {timeout:.0f}s"
        time.sleep(0.2)
    return content


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def test_the_shared_stores_hold_a_password_to_hide(shared_stores):
    """The checks above would pass vacuously with an empty password."""
    assert len(shared_stores.postgres.password) >= 16
    assert shared_stores.postgres.password in shared_stores.postgres.uri
    assert os.environ.get("MLFLOW_BACKEND_STORE_URI") is None


def test_the_registry_user_store_gets_its_database_on_the_same_server_once(shared_stores):
    """The basic-auth app keeps its users next to the tracking store: the first start creates
    that database, later starts find it."""
    database = shared_stores.postgres
    users = database.uri.rsplit("/", 1)[0] + "/registry_users"
    for _ in range(2):
        store.create_database(users)
        with psycopg.connect(users.replace("postgresql+psycopg://", "postgresql://")) as db:
            assert db.execute("SELECT current_database()").fetchone() == ("registry_users",)
