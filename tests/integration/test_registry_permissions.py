"""The registry's permissions on `make up` (REGISTRY_AUTH=true): the real stack, with MLflow's
basic-auth app, trains as `trainer`, serves as `gateway`, and follows a promotion that the
`promoter` makes in the MLflow UI, in Chromium, with its own login."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from model.names import ALIAS, CHALLENGER, MODEL_NAME
from stack import tracking
from tests.load import Load
from tests.registry_ui import promote_in_the_ui
from tests.servers import free_port, spawn, stop, wait_until_up
from tracking_server import access


@dataclass
class AuthStack:
    tracking_uri: str
    gateway_url: str
    state: Path

    @property
    def passwords(self) -> Path:
        return self.state / "secrets" / "registry"

    def login(self, account: str) -> tuple[str, str]:
        return account, (self.passwords / account).read_text().strip()

    def client(self, account: str, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
        """An MLflow client signed in as ``account`` (MLflow reads the login from the env)."""
        for key, value in tracking.credentials(self.passwords, account).items():
            monkeypatch.setenv(key, value)
        return MlflowClient(self.tracking_uri, self.tracking_uri)


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory) -> Iterator[AuthStack]:
    """`make up` with REGISTRY_AUTH=true from an empty state: the first start makes the
    accounts and trains."""
    state = tmp_path_factory.mktemp("auth-stack")
    ports = {name: str(free_port()) for name in ("MLFLOW_PORT", "GATEWAY_PORT", "SCORING_PORT")}
    log = state / "make-up.log"
    proc = spawn(
        [sys.executable, "-m", "stack.up"],
        log,
        REGISTRY_AUTH="true",
        STATE_DIR=str(state / "state"),
        **ports,
    )
    try:
        gateway_url = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        wait_until_up(f"{gateway_url}/ready", timeout=900, proc=proc)
        yield AuthStack(f"http://127.0.0.1:{ports['MLFLOW_PORT']}", gateway_url, state / "state")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            stop(proc)


def test_no_credentials_get_401_from_the_api_and_the_ui(auth_stack):
    for path in ("/api/2.0/mlflow/registered-models/get?name=SentimentClassifier", "/"):
        answer = httpx.get(f"{auth_stack.tracking_uri}{path}", timeout=30)
        assert answer.status_code == 401, path
    wrong = ("gateway", "not-the-password")
    answer = httpx.get(f"{auth_stack.tracking_uri}/api/2.0/mlflow/experiments/search", auth=wrong)
    assert answer.status_code == 401
    # The health check stays open: the stack and orchestrators probe it without a login.
    assert httpx.get(f"{auth_stack.tracking_uri}/health", timeout=30).status_code == 200


def test_the_first_start_trains_as_trainer_and_serves_as_gateway(auth_stack, monkeypatch):
    client = auth_stack.client("gateway", monkeypatch)
    production = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    assert client.get_run(production.run_id).info.status == "FINISHED"
    answer = httpx.post(f"{auth_stack.gateway_url}/predict", json={"text": "A fine film."})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == f"v{production.version}"


def test_the_gateway_reads_but_gets_403_when_it_moves_an_alias(auth_stack, monkeypatch):
    client = auth_stack.client("gateway", monkeypatch)
    production = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    with pytest.raises(MlflowException, match="403"):
        client.set_registered_model_alias(MODEL_NAME, ALIAS, production.version)
    with pytest.raises(MlflowException, match="403"):
        client.set_model_version_tag(MODEL_NAME, production.version, "by", "gateway")
    answer = httpx.post(
        f"{auth_stack.tracking_uri}/api/2.0/mlflow/registered-models/alias",
        json={"name": MODEL_NAME, "alias": ALIAS, "version": production.version},
        auth=auth_stack.login("gateway"),
    )
    assert answer.status_code == 403


def test_the_monitor_tags_versions_and_moves_the_challenger(auth_stack, monkeypatch):
    client = auth_stack.client("monitor", monkeypatch)
    production = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    client.set_model_version_tag(MODEL_NAME, production.version, "monitoring.check", "test")
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, production.version)
    # Taking an alias away needs MANAGE, which only the admin holds.
    with pytest.raises(MlflowException, match="403"):
        client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    auth_stack.client("admin", monkeypatch).delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    # A promoter may not log runs: it has no grant on the training experiment.
    promoter = auth_stack.client("promoter", monkeypatch)
    experiment = promoter.get_experiment_by_name("Sentiment-Analysis")
    assert experiment is not None
    with pytest.raises(MlflowException, match="403"):
        promoter.create_run(experiment.experiment_id)


def test_a_second_start_creates_nothing(auth_stack):
    users = f"sqlite:///{auth_stack.state / 'registry-users.db'}"
    backend = f"sqlite:///{auth_stack.state / 'mlflow.db'}"
    assert access.prepare(backend, users, auth_stack.passwords) == []


def test_a_ui_promotion_by_the_promoter_is_followed_with_no_failed_request(auth_stack, monkeypatch):
    trainer = auth_stack.client("trainer", monkeypatch)
    current = trainer.get_model_version_by_alias(MODEL_NAME, ALIAS)
    new = trainer.copy_model_version(f"models:/{MODEL_NAME}/{current.version}", MODEL_NAME)
    with Load(auth_stack.gateway_url, concurrency=4, pause=0.05) as load:
        load.wait(2)
        reader = auth_stack.client("gateway", monkeypatch)

        def promoted() -> bool:
            return reader.get_model_version_by_alias(MODEL_NAME, ALIAS).version == new.version

        login = auth_stack.login("promoter")
        promote_in_the_ui(auth_stack.tracking_uri, login, new.version, promoted, auth_stack.state)
        since = time.monotonic()
        deadline = since + 180
        while not any(a.version == f"v{new.version}" for a in load.between(since)):
            assert time.monotonic() < deadline, "the gateway never served the promoted version"
            load.wait(0.5)
        load.wait(2)
    assert [a for a in load.answers if a.status != 200] == []
    assert {f"v{current.version}", f"v{new.version}"} <= load.versions()
    assert promoted()
