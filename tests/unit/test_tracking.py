"""How `make up` hands its stores to the tracking server: by environment, shown without the
password (the real servers are in tests/integration/test_shared_stores.py)."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from stack import tracking, up
from stack.settings import StackSettings
from tracking_server import access, store

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
    assert store.shown(uri) == expected


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
    store.upgrade_schema(f"sqlite:///{tmp_path / 'new.db'}")
    assert not (tmp_path / "new.db").exists()


# MLflow's usage telemetry: the two variables MLflow 3.17 reads (mlflow/telemetry/utils.py).
TELEMETRY = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


class Started:
    """A child that `make up` believes it started: alive, and exits 0 when waited for."""

    pid = 0
    returncode = 0

    def poll(self):
        return None

    def wait(self, timeout=None):
        return 0


def started_by_make_up(monkeypatch, tmp_path, replicas: int) -> list[tuple[list[str], dict]]:
    """Every (command, environment) `make up` hands to the process starter, from the tracking
    server to nginx, with no model in the registry (so training runs)."""
    from mlflow.exceptions import MlflowException

    started: list[tuple[list[str], dict]] = []

    def start(args, *, log=None, cwd=None, env=None):
        started.append((args, env))
        return Started()

    class EmptyRegistry:
        def __init__(self, *args):
            pass

        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("no such alias")

    monkeypatch.setattr(up.processes, "start", start)
    monkeypatch.setattr(up, "MlflowClient", EmptyRegistry)
    monkeypatch.setattr(up.Stack, "wait_healthy", lambda *a, **k: None)
    monkeypatch.setattr(up.Stack, "required_nginx", lambda self: "nginx")
    monkeypatch.setattr(up.Balancer, "check", lambda self: None)
    settings = StackSettings(
        state_dir=tmp_path, gateway_replicas=replicas, replica_port=0, scoring_port=0
    )
    stack = up.Stack(settings)
    stack.tracking_server()
    stack.train_if_needed()
    stack.gateway()
    return started


@pytest.mark.parametrize("replicas", [1, 2])
def test_every_process_make_up_starts_runs_with_mlflow_telemetry_off(
    monkeypatch, tmp_path, replicas
):
    for name in TELEMETRY:
        monkeypatch.delenv(name, raising=False)
    started = started_by_make_up(monkeypatch, tmp_path, replicas)
    commands = [" ".join(args) for args, _ in started]
    expected = ["stack.tracking", "mlflow run", *["-m gateway"] * replicas]
    expected += ["nginx"] * (replicas > 1)
    assert [next(e for e in expected if e in c) for c in commands] == expected, commands
    for command, (_, env) in zip(commands, started, strict=True):
        assert {name: env.get(name) for name in TELEMETRY} == dict.fromkeys(TELEMETRY, "true"), (
            command
        )


@pytest.mark.parametrize("value", ["false", "False", "0"])
def test_an_operator_turns_mlflow_telemetry_on_for_every_process(monkeypatch, tmp_path, value):
    """MLFLOW_DISABLE_TELEMETRY=false reaches every child as MLflow reads it; DO_NOT_TRACK is
    left as the operator has it (unset here, set below), never added."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", value)
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    assert StackSettings().telemetry_env == {"MLFLOW_DISABLE_TELEMETRY": "false"}
    started = started_by_make_up(monkeypatch, tmp_path, replicas=2)
    assert len(started) == 5
    for args, env in started:
        assert env["MLFLOW_DISABLE_TELEMETRY"] == "false" and "DO_NOT_TRACK" not in env, args
    monkeypatch.setenv("DO_NOT_TRACK", "true")  # theirs: MLflow stays silent then
    assert up.Stack(StackSettings()).env["DO_NOT_TRACK"] == "true"


@pytest.mark.parametrize("value", ["true", "1", "TRUE", None])
def test_telemetry_is_off_unless_turned_on_and_a_wrong_value_stops_the_stack(monkeypatch, value):
    for name in TELEMETRY:
        monkeypatch.delenv(name, raising=False)
    if value is not None:
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", value)
    assert StackSettings().telemetry_env == dict.fromkeys(TELEMETRY, "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "maybe")
    with pytest.raises(ValidationError, match="mlflow_disable_telemetry"):
        StackSettings()


def test_registry_auth_makes_the_passwords_once_for_their_owner_alone(tmp_path):
    passwords = tmp_path / "secrets" / "registry"
    env = tracking.auth_env(tmp_path, passwords)
    made = {path.name: path.read_text() for path in passwords.iterdir()}
    assert set(made) == {*access.NAMES, access.SERVER_KEY}
    assert len(set(made.values())) == len(made), "every account has a password of its own"
    assert all(len(value) >= 24 for value in made.values())
    assert all(path.stat().st_mode & 0o077 == 0 for path in [passwords, *passwords.iterdir()])
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == made[access.SERVER_KEY]
    config = Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    assert f"database_uri = sqlite:///{tmp_path / 'registry-users.db'}" in config
    assert "default_permission = READ" in config
    tracking.auth_env(tmp_path, passwords)
    assert {path.name: path.read_text() for path in passwords.iterdir()} == made
    assert tracking.credentials(passwords, "gateway") == {
        "MLFLOW_TRACKING_USERNAME": "gateway",
        "MLFLOW_TRACKING_PASSWORD": made["gateway"],
    }
    assert "--app-name" not in tracking.command(5000)
    assert tracking.command(5000, auth=True)[-2:] == ["--app-name", "basic-auth"]


def test_missing_passwords_stop_the_start_naming_the_files(tmp_path):
    (tmp_path / "admin").write_text("x" * 24)
    with pytest.raises(SystemExit, match="missing from .*: trainer, monitor, gateway, promoter"):
        access.read_passwords(tmp_path)
