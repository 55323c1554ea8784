"""Where the tracking URI comes from: MLflow's own variable first, the gateway's second, or the
constructor by the field's name."""

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
