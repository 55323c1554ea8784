"""`docker compose up --build` end to end on a real engine (`make test-compose`).

The tests run in this file's order on one stack: first training, a promotion and faults under
load, Prometheus, then `down` and `up` with the volumes kept, and last `down -v`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest
from mlflow import MlflowClient

from tests.compose import engine
from tests.compose.conftest import (
    AUTH,
    GATEWAY,
    IMAGES,
    PROJECT,
    PROMETHEUS,
    README_ENV,
    ROOT,
    TRACKING,
    docker,
    predict,
    stack_env,
    wait_for,
)
from tests.load import Load

MODEL = "SentimentClassifier"


def registry() -> MlflowClient:
    return MlflowClient(tracking_uri=TRACKING, registry_uri=TRACKING)


def replicas_seen(count: int) -> set[str]:
    return {predict(f"Review {i}: a fine film.").headers["x-gateway-replica"] for i in range(count)}


def run_ids(client: MlflowClient) -> set[str]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(experiment_ids=experiments)}


def failures(load: Load) -> list:
    return [a for a in load.answers if a.status != 200]


@pytest.mark.parametrize("variable", sorted(README_ENV))
def test_a_missing_password_or_key_stops_compose_with_a_sentence_naming_it(variable):
    env = {k: v for k, v in stack_env().items() if k != variable}
    result = subprocess.run(
        [*engine.compose(), "--project-name", f"{PROJECT}-refused", "up", "--no-start"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert f"set {variable}" in result.stderr, result.stderr[-500:]


def test_first_training_promotes_a_version_answered_by_two_gateways_through_nginx(stack):
    production = registry().get_model_version_by_alias(MODEL, "production")
    answer = predict("An absolute delight from start to finish.")
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == f"v{production.version}"
    assert answer.json()["sentiment"] == "positive"
    # nginx spreads requests over both replicas: both names are seen (a replica that is
    # healthy but still loading its model answers 503, and nginx sends that request on).
    wait_for(lambda: len(replicas_seen(20)) == 2, 120, "both gateways answering through nginx")
    assert len(stack.containers("gateway")) == 2
    refused = httpx.post(f"{GATEWAY}/predict", json={"text": "A fine film."})
    assert refused.status_code == 401, "compose always sets API keys"


def test_a_promotion_through_the_tracking_server_is_followed_with_no_failed_request(stack):
    client = registry()
    current = client.get_model_version_by_alias(MODEL, "production")
    new = client.copy_model_version(f"models:/{MODEL}/{current.version}", MODEL)
    with Load(GATEWAY, headers=AUTH, concurrency=4, pause=0.05) as load:
        load.wait(3)
        client.set_registered_model_alias(MODEL, "production", new.version)
        promoted = time.monotonic()

        def on_new_version() -> set[str | None]:
            return {a.replica for a in load.between(promoted) if a.version == f"v{new.version}"}

        wait_for(lambda: len(on_new_version()) == 2, 120, "both gateways on the new version")
        load.wait(2)
    assert failures(load) == []
    assert {f"v{current.version}", f"v{new.version}"} <= load.versions()
    stack.timings["promotion_requests"] = len(load.answers)


def test_a_killed_gateway_and_a_restarted_database_fail_no_request(stack):
    first, _ = stack.containers("gateway")
    with Load(GATEWAY, headers=AUTH, concurrency=4, pause=0.05) as load:
        load.wait(3)
        # SIGKILL to its main process, as a crash would (`docker kill` counts as a stop that
        # the restart policy respects).
        os.kill(int(docker("inspect", "--format", "{{.State.Pid}}", first)), signal.SIGKILL)
        load.wait(5)
        (postgres,) = stack.containers("postgres")
        docker("restart", postgres)
        load.wait(5)
    assert failures(load) == [], failures(load)[:5]
    assert len(load.answers) > 100
    stack.timings["fault_requests"] = len(load.answers)
    # The killed gateway comes back on its own (restart: unless-stopped) and is used again.
    restarts = docker("inspect", "--format", "{{.RestartCount}}", first)
    wait_for(lambda: first in stack.containers("gateway"), 60, "the killed gateway restarted")
    assert int(restarts) >= 1
    wait_for(lambda: len(replicas_seen(20)) == 2, 180, "both gateways answering again")
    # The registry works again after the database's restart.
    wait_for(lambda: registry().get_model_version_by_alias(MODEL, "production"), 60, "registry")


def test_gateways_scaled_out_and_back_in_are_followed_by_nginx_with_no_failed_request(stack):
    """nginx looks the replicas up again: a third gateway is used once it answers, and the one
    removed when scaling back in is dropped, without restarting nginx."""
    (nginx,) = stack.containers("nginx")
    nginx_started = docker("inspect", "--format", "{{.State.StartedAt}}", nginx)
    with Load(GATEWAY, headers=AUTH, concurrency=4, pause=0.05) as load:
        load.wait(3)
        stack.compose("up", "-d", "--no-recreate", "--scale", "gateway=3", "gateway")
        wait_for(lambda: len(replicas_seen(30)) == 3, 240, "three gateways answering", every=2)
        stack.compose("up", "-d", "--no-recreate", "--scale", "gateway=2", "gateway")
        load.wait(10)
    assert failures(load) == [], failures(load)[:5]
    assert len(stack.containers("gateway")) == 2
    assert len({a.replica for a in load.answers}) == 3
    wait_for(lambda: len(replicas_seen(20)) == 2, 60, "the two remaining gateways answering")
    assert docker("inspect", "--format", "{{.State.StartedAt}}", nginx) == nginx_started
    stack.timings["scaling_requests"] = len(load.answers)


def test_prometheus_scrapes_every_gateway_with_the_sentiment_gauges(stack):
    def targets():
        found = httpx.get(f"{PROMETHEUS}/api/v1/targets").json()["data"]["activeTargets"]
        gateways = [t for t in found if t["labels"]["job"] == "gateway"]
        return len(gateways) == 2 and all(t["health"] == "up" for t in gateways) and gateways

    wait_for(targets, 90, "two gateway targets up", every=2)

    def gauges():
        query = {"query": 'count by (instance) ({__name__=~"sentiment_.+", job="gateway"})'}
        result = httpx.get(f"{PROMETHEUS}/api/v1/query", params=query).json()["data"]["result"]
        return len(result) == 2 and result

    wait_for(gauges, 90, "sentiment_* series from both gateways", every=2)


def test_runs_models_and_the_prediction_log_survive_down_and_up(stack):
    client = registry()
    versions = {v.version for v in client.search_model_versions(f"name='{MODEL}'")}
    runs = run_ids(client)
    answered = predict("Remember this one: a truly great film.")
    request_id = answered.headers["x-request-id"]

    # At once: a gateway told to stop writes the answers it still has queued.
    stack.compose("down")
    assert stack.containers("gateway") == []
    stack.timings["first_predict_warm_seconds"] = stack.up()

    assert versions <= {v.version for v in client.search_model_versions(f"name='{MODEL}'")}
    assert runs and runs <= run_ids(client)
    label = httpx.post(
        f"{GATEWAY}/feedback",
        json={"request_id": request_id, "label": "positive"},
        headers=AUTH,
        timeout=10,
    )
    assert label.status_code == 201, label.text
    assert label.json()["correct"] is True


def test_the_images_run_as_a_user_and_carry_no_compiler_or_test_tool(stack):
    for image in IMAGES:
        config = docker("image", "inspect", "--format", "{{.Config.User}}", image).strip()
        assert config == "app", image
        found = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "sh", image, "-c",
             "id -u; command -v gcc cc g++ make pytest; ls /opt/venv/bin"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert found[0] == "1000", image
        tools = {path.rsplit("/")[-1] for path in found}
        assert not {"gcc", "cc", "g++", "make", "pytest", "ruff"} & tools, image
    for image in ("sentiment-mlops-tracking:latest", "sentiment-mlops-gateway:latest"):
        assert "python" in docker("image", "inspect", "--format", "{{.Config.Healthcheck}}", image)


def test_down_with_volumes_leaves_nothing_behind(stack):
    stack.compose("down", "--volumes", "--remove-orphans")
    label = f"label=com.docker.compose.project={PROJECT}"
    assert docker("ps", "--all", "--quiet", "--filter", label).split() == []
    assert docker("network", "ls", "--quiet", "--filter", label).split() == []
    assert docker("volume", "ls", "--quiet", "--filter", label).split() == []
