"""Where the tracking URI comes from: MLflow's own variable first, the gateway's second, or the
constructor by the field's name. MLflow's usage telemetry: off in the gateway and its scoring
servers unless MLflow's own variable turns it on."""

from __future__ import annotations

import pytest

from gateway.settings import Settings


@pytest.fixture(autouse=True)
def no_tracking_uri(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "GATEWAY_TRACKING_URI", "TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def test_mlflow_tracking_uri_wins_over_the_gateways_own(monkeypatch):
    assert Settings(_env_file=None).tracking_uri == "http://127.0.0.1:5000"
    monkeypatch.setenv("GATEWAY_TRACKING_URI", "http://gateway:5000")
    assert Settings(_env_file=None).tracking_uri == "http://gateway:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert Settings(_env_file=None).tracking_uri == "http://mlflow:5000"


def test_the_tracking_uri_is_also_given_by_its_field_name(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    given = Settings(tracking_uri="http://given:5000", _env_file=None)
    assert given.tracking_uri == "http://given:5000"
    monkeypatch.setenv("TRACKING_URI", "http://unprefixed:5000")  # no such variable
    assert Settings(_env_file=None).tracking_uri == "http://mlflow:5000"


# MLflow's usage telemetry: the two variables MLflow 3.17 reads (mlflow/telemetry/utils.py).
TELEMETRY = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
# What export_mlflow_env sets in this process: restored after each test below.
EXPORTED = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
)


@pytest.fixture
def no_telemetry_variables(monkeypatch):
    for name in (*TELEMETRY, *EXPORTED, "GATEWAY_MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.setenv(name, "")  # recorded, so that what the test exports is undone
        monkeypatch.delenv(name)


def test_the_gateway_and_its_scoring_servers_run_with_mlflow_telemetry_off(
    no_telemetry_variables,
):
    import os

    settings = Settings(_env_file=None)
    assert settings.mlflow_disable_telemetry is True
    child = settings.child_env()
    assert {name: child.get(name) for name in TELEMETRY} == dict.fromkeys(TELEMETRY, "true")
    settings.export_mlflow_env()  # the gateway's own process, before any MLflow call
    assert {name: os.environ.get(name) for name in TELEMETRY} == dict.fromkeys(TELEMETRY, "true")


@pytest.mark.parametrize("value", ["false", "0", "False"])
def test_an_operator_turns_it_on_with_mlflows_own_variable(
    no_telemetry_variables, monkeypatch, value
):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", value)
    settings = Settings(_env_file=None)
    assert settings.mlflow_disable_telemetry is False
    child = settings.child_env()
    assert child["MLFLOW_DISABLE_TELEMETRY"] == "false" and "DO_NOT_TRACK" not in child
    monkeypatch.setenv("DO_NOT_TRACK", "true")  # the operator's own: kept, MLflow stays silent
    assert Settings(_env_file=None).child_env()["DO_NOT_TRACK"] == "true"


def test_mlflows_variable_decides_and_a_wrong_value_stops_the_gateway(
    no_telemetry_variables, monkeypatch
):
    from pydantic import ValidationError

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("GATEWAY_MLFLOW_DISABLE_TELEMETRY", "false")  # the field's name loses
    assert Settings(_env_file=None).mlflow_disable_telemetry is True
    assert Settings(mlflow_disable_telemetry=False, _env_file=None).telemetry_env == {
        "MLFLOW_DISABLE_TELEMETRY": "false"
    }
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "maybe")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_the_scoring_servers_get_neither_the_keys_nor_the_log_stores_login(monkeypatch):
    monkeypatch.setenv("GATEWAY_API_KEYS", "a-key-of-our-own-1234")
    monkeypatch.setenv("GATEWAY_PREDICTION_LOG_URI", "postgresql://w:inline-secret@db/x")
    monkeypatch.setenv("PGPASSWORD", "the-writers-password")
    settings = Settings(_env_file=None)
    assert settings.prediction_log_uri is not None
    assert "inline-secret" not in repr(settings)  # a SecretStr: never in a log line
    child = settings.child_env()
    assert not {"GATEWAY_API_KEYS", "GATEWAY_PREDICTION_LOG_URI", "PGPASSWORD"} & set(child)
