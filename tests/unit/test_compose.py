"""The compose file, checked statically: no Docker engine runs on the test machines."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_three_services_share_one_image_built_from_the_dockerfile():
    assert set(SERVICES) == {"mlflow", "trainer", "gateway"}
    assert {s["image"] for s in SERVICES.values()} == {"sentiment-mlops-service:latest"}
    assert all(s["build"] == "." for s in SERVICES.values())
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11.7-slim" in dockerfile
    for copied in re.findall(r"^COPY (?:--chown=\w+ )?(\S+)", dockerfile, re.M):
        assert (ROOT / copied).exists(), copied


def test_tracking_server_keeps_its_store_on_a_named_volume_and_serves_artifacts():
    mlflow = SERVICES["mlflow"]
    args = shlex.split(mlflow["command"])
    assert args[:2] == ["mlflow", "server"] and "--serve-artifacts" in args
    assert args[args.index("--backend-store-uri") + 1].startswith("sqlite:////data/")
    volume, mount = mlflow["volumes"][0].split(":")
    assert volume in COMPOSE["volumes"] and mount == "/data"
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in hosts, "other services reach it as mlflow:5000"


def test_trainer_runs_the_mlproject_after_the_tracking_server_is_healthy():
    trainer = SERVICES["trainer"]
    args = shlex.split(trainer["command"])
    assert args[:3] == ["mlflow", "run", "."] and "--env-manager" in args
    assert (ROOT / "MLproject").exists()
    assert trainer["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert trainer["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_gateway_environment_names_are_settings_and_ports_match():
    gateway = SERVICES["gateway"]
    assert shlex.split(gateway["command"]) == ["python", "-m", "gateway"]
    assert (ROOT / "gateway" / "__main__.py").exists()
    env = gateway["environment"]
    fields = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields} | {"MLFLOW_TRACKING_URI"}
    assert set(env) <= fields, set(env) - fields
    published = {p.rsplit(":", 1)[-1] for p in gateway["ports"]}
    scoring = int(env["GATEWAY_SCORING_PORT"])
    assert published == {env["GATEWAY_PORT"], f"{scoring}-{scoring + 2}"}, "live, standby, next"
    Settings(**{k.removeprefix("GATEWAY_").lower(): v for k, v in env.items() if k.startswith("GATEWAY_")})


@pytest.mark.parametrize("name", ["mlflow", "gateway"])
def test_health_checks_use_get_with_tools_the_slim_image_has(name):
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], "no curl or wget in python:slim"
    assert "urlopen(" in test[-1], "urlopen sends GET; HEAD /ping answers 405"
    port = re.search(r"127\.0\.0\.1:(\d+)", test[-1]).group(1)
    assert any(p.endswith(f":{port}") for p in SERVICES[name]["ports"]), port


def test_env_example_lists_every_gateway_setting():
    example = (ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"GATEWAY_{name.upper()}" in example or name == "tracking_uri", name
