"""How `make up` hands its stores to the tracking server: by environment, shown without the
password (the real servers are in tests/integration/test_shared_stores.py)."""

import pytest

from stack import tracking, up
from stack.settings import StackSettings

SECRET = "s3cr3t-Pa55"
URI = f"postgresql://mlflow:{SECRET}@db.example:5432/mlflow"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (URI, "postgresql://mlflow:***@db.example:5432/mlflow"),
        ("postgresql+psycopg://u:p%40ss@h/db", "postgresql+psycopg://u:***@h/db"),
        ("postgresql://u@h/db?password=x&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////var/lib/mlflow/mlflow.db", "sqlite:////var/lib/mlflow/mlflow.db"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
    ],
)  # fmt: skip
def test_a_store_uri_is_shown_without_its_password(uri, expected):
    assert tracking.shown(uri) == expected


def test_the_stores_default_to_a_sqlite_file_and_a_folder_under_the_state(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ARTIFACTS_DESTINATION", raising=False)
    settings = StackSettings(state_dir=tmp_path)
    assert settings.backend_store_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.artifacts_destination == str(tmp_path / "artifacts")
    assert (settings.backend_store_uri, settings.artifacts_destination) == tracking.local_stores(
        tmp_path
    )


def test_make_up_passes_the_stores_by_environment_to_the_tracking_server_alone(
    monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", URI)
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://mlflow/artifacts")
    started = []
    monkeypatch.setattr(
        up.Stack, "start", lambda self, args, log=None, **env: started.append((args, env))
    )
    monkeypatch.setattr(up.Stack, "wait_healthy", lambda *a, **k: None)
    settings = StackSettings(state_dir=tmp_path)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    stack = up.Stack(settings)
    stack.tracking_server()
    ((args, env),) = started
    assert SECRET not in " ".join(args) and "--backend-store-uri" not in args
    assert env["MLFLOW_BACKEND_STORE_URI"] == URI
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow/artifacts"
    assert "MLFLOW_BACKEND_STORE_URI" not in stack.env, "the gateway and training never get it"
    up.banner(settings)
    out = capsys.readouterr().out
    assert SECRET not in out and "postgresql://mlflow:***@db.example:5432/mlflow" in out


def test_a_sqlite_store_that_does_not_exist_yet_is_left_to_the_server(tmp_path):
    tracking.upgrade_schema(f"sqlite:///{tmp_path / 'new.db'}")
    assert not (tmp_path / "new.db").exists()
