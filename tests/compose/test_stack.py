"""`docker compose up --build` end to end on a real engine (`make test-compose`).

The tests run in this file's order on one stack: first training, a promotion and faults under
load, Prometheus and where its alerts go, the monitor job, secrets and limits, then `down` and
`up` with the volumes kept, and last `down -v`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from monitoring.log_store.tables import iso
from tests.compose import engine
from tests.compose.conftest import (
    AUTH,
    GATEWAY,
    IMAGES,
    PROJECT,
    PROMETHEUS,
    README_ENV,
    ROOT,
    SERVICES,
    TRACKING,
    docker,
    predict,
    stack_env,
    wait_for,
)
from tests.load import Load
from tests.registry_ui import promote_in_the_ui

MODEL = "SentimentClassifier"
# The alert test's override and where its webhook recorder answers.
ALERTING = ROOT / "tests" / "compose" / "alerting.yml"
RECORDER = "http://127.0.0.1:9095"
ALWAYS = "ComposeTestAlwaysFiring"  # tests/compose/alert-rules
# The scheduled monitor job, as docs/deployment.md's crontab line runs it.
SCHEDULED = ["docker", "compose", "run", "--rm", "monitor"]


def registry(account: str = "admin") -> MlflowClient:
    """A client of the tracking server signed in as ``account`` (MLflow reads the login from
    the environment at each request: the last call here decides)."""
    os.environ["MLFLOW_TRACKING_USERNAME"] = account
    os.environ["MLFLOW_TRACKING_PASSWORD"] = README_ENV[f"REGISTRY_{account.upper()}_PASSWORD"]
    return MlflowClient(tracking_uri=TRACKING, registry_uri=TRACKING)


def replicas_seen(count: int) -> set[str]:
    return {predict(f"Review {i}: a fine film.").headers["x-gateway-replica"] for i in range(count)}


def run_ids(client: MlflowClient) -> set[str]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(experiment_ids=experiments)}


def log_rows(stack, sql: str) -> list[list[str]]:
    """A query on the gateways' log store, as the database's administrator."""
    (postgres,) = stack.containers("postgres")
    out = docker("exec", postgres, "psql", "-U", "mlflow", "-d", "prediction_log", "-AtF", "\t",
                 "-c", sql)  # fmt: skip
    return [line.split("\t") for line in out.splitlines() if line]


def failures(load: Load) -> list:
    return [a for a in load.answers if a.status != 200]


@pytest.mark.parametrize("empty", [False, True], ids=["unset", "empty"])
@pytest.mark.parametrize("variable", sorted(README_ENV))
def test_a_missing_password_or_key_stops_compose_with_a_sentence_naming_it(variable, empty):
    env = {k: v for k, v in stack_env().items() if k != variable}
    if empty:
        env[variable] = ""
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


def test_the_registry_wants_a_login_and_the_gateways_may_not_promote(stack):
    path = f"{TRACKING}/api/2.0/mlflow/registered-models/alias"
    body = {"name": MODEL, "alias": "production", "version": "1"}
    # The server hashes the password at every request: slow on two busy cores.
    gateway = ("gateway", README_ENV["REGISTRY_GATEWAY_PASSWORD"])
    with httpx.Client(timeout=30) as client:
        assert client.post(path, json=body).status_code == 401
        assert client.get(f"{TRACKING}/").status_code == 401, "the UI too"
        alias = client.get(f"{path}?name={MODEL}&alias=production", auth=gateway)
        assert alias.status_code == 200
        assert client.post(path, json=body, auth=gateway).status_code == 403


def test_a_promotion_in_the_ui_by_a_permitted_user_is_followed_with_no_failed_request(
    stack, tmp_path
):
    current = registry("trainer").get_model_version_by_alias(MODEL, "production")
    new = registry("trainer").copy_model_version(f"models:/{MODEL}/{current.version}", MODEL)
    reader = registry("gateway")

    def promoted_in_the_registry() -> bool:
        return reader.get_model_version_by_alias(MODEL, "production").version == new.version

    login = ("promoter", README_ENV["REGISTRY_PROMOTER_PASSWORD"])
    with Load(GATEWAY, headers=AUTH, concurrency=4, pause=0.05) as load:
        load.wait(3)
        promote_in_the_ui(TRACKING, login, new.version, promoted_in_the_registry, tmp_path)
        promoted = time.monotonic()

        def on_new_version() -> set[str | None]:
            return {a.replica for a in load.between(promoted) if a.version == f"v{new.version}"}

        wait_for(lambda: len(on_new_version()) == 2, 120, "both gateways on the new version")
        load.wait(2)
    assert failures(load) == []
    assert {f"v{current.version}", f"v{new.version}"} <= load.versions()
    stack.timings["promotion_requests"] = len(load.answers)


def test_a_killed_gateway_fails_no_request(stack):
    first, _ = stack.containers("gateway")
    with Load(GATEWAY, headers=AUTH, concurrency=4, pause=0.05) as load:
        load.wait(3)
        # SIGKILL to its main process, as a crash would (`docker kill` counts as a stop that
        # the restart policy respects).
        os.kill(int(docker("inspect", "--format", "{{.State.Pid}}", first)), signal.SIGKILL)
        load.wait(5)
    assert failures(load) == [], failures(load)[:5]
    assert len(load.answers) > 50
    stack.timings["fault_requests"] = len(load.answers)
    # The killed gateway comes back on its own (restart: unless-stopped) and is used again.
    restarts = docker("inspect", "--format", "{{.RestartCount}}", first)
    wait_for(lambda: first in stack.containers("gateway"), 60, "the killed gateway restarted")
    assert int(restarts) >= 1
    wait_for(lambda: len(replicas_seen(20)) == 2, 180, "both gateways answering again")


def test_a_restarted_database_fails_no_request_and_loses_no_logged_prediction(stack):
    """PostgreSQL holds the registry and the prediction log: while it restarts the gateways
    serve from their scoring servers and hold the log's rows, then write every one."""
    (postgres,) = stack.containers("postgres")
    since = iso(time.time())  # the test before this one ends with requests of its own
    with Load(GATEWAY, headers=AUTH, concurrency=4, pause=0.05) as load:
        load.wait(3)
        docker("restart", postgres)
        load.wait(5)
    assert failures(load) == [], failures(load)[:5]
    assert len(load.answers) > 100
    stack.timings["database_restart_requests"] = len(load.answers)
    sent = Counter(a.path for a in load.answers)

    def logged() -> dict[str, int]:
        rows = log_rows(
            stack,
            "SELECT route, COUNT(DISTINCT request_id) FROM predictions "
            f"WHERE time >= '{since}' GROUP BY route",
        )
        return {route: int(count) for route, count in rows}

    try:
        wait_for(lambda: logged() == dict(sent), 60, "every answer logged")
    finally:
        print(f"sent {dict(sent)}, logged {logged()}")
    assert logged() == dict(sent)
    assert (
        log_rows(
            stack,
            "SELECT request_id, item FROM predictions "
            "GROUP BY request_id, item HAVING COUNT(*) > 1",
        )
        == []
    )
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


def test_what_fires_goes_through_alertmanager_to_the_webhook_the_variable_names(stack):
    """The service's rules fire only after minutes of bad figures: the override puts one that
    always fires in their place and starts the recorder that ALERT_WEBHOOK_URL names."""

    def alertmanagers():
        found = httpx.get(f"{PROMETHEUS}/api/v1/alertmanagers").json()["data"]
        return [a["url"] for a in found["activeAlertmanagers"]]

    urls = wait_for(alertmanagers, 60, "Prometheus finding Alertmanager")
    assert urls == ["http://alertmanager:9093/api/v2/alerts"]
    overridden = ["-f", "docker-compose.yml", "-f", str(ALERTING)]
    started = time.monotonic()
    try:
        stack.compose(*overridden, "up", "-d", "--no-deps", "prometheus", "alert-webhook")

        def delivered():
            posts = httpx.get(RECORDER, timeout=5).json()
            return [p for p in posts if p["body"]["groupLabels"] == {"alertname": ALWAYS}]

        post, *_ = wait_for(delivered, 240, "the alert posted to ALERT_WEBHOOK_URL", every=2)
        stack.timings["alert_delivered_seconds"] = time.monotonic() - started
    finally:
        # Back to the service's own rules, without the recorder.
        stack.compose("up", "-d", "--no-deps", "--remove-orphans", "prometheus")
    assert post["path"] == "/alerts", "the variable's address, path included"
    assert post["body"]["receiver"] == "webhook" and post["body"]["status"] == "firing"
    (alert,) = post["body"]["alerts"]
    assert alert["labels"] == {"alertname": ALWAYS, "severity": "none"}
    assert stack.containers("alert-webhook") == []

    def groups():
        found = httpx.get(f"{PROMETHEUS}/api/v1/rules").json()["data"]["groups"]
        return sorted(g["name"] for g in found)

    wait_for(lambda: groups() == ["gateway", "model"], 60, "the service's rules loaded again")


def monitor_run(stack) -> str:
    """The scheduled command, run as cron would from the project folder; the run's id."""
    result = subprocess.run(
        SCHEDULED, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_id,) = re.findall(r"^Monitoring completed: \w+ \(run (\w+)\)$", result.stdout, re.M)
    return run_id


def test_the_scheduled_monitor_job_counts_the_predictions_sent_since_its_last_run(stack):
    """`docker compose run --rm monitor` as the documented crontab line runs it: each run
    checks the gateways' shared prediction log since the previous run, against the tracking
    server, and records the count of predictions of the served version."""
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    crontab = re.findall(r"^(?:[\d*/,-]+ ){5}(.+)$", deployment, re.M)
    assert len(crontab) == 1 and f" {' '.join(SCHEDULED)} " in crontab[0], crontab
    client = registry()
    previous = client.get_run(monitor_run(stack))
    sent = 30
    for i in range(sent):
        assert predict(f"Review {i} for the monitor: a fine film.").status_code == 200
    time.sleep(2)  # the prediction log's writer gathers answers for 0.25 s per transaction
    started = time.monotonic()
    run = client.get_run(monitor_run(stack))
    stack.timings["monitor_seconds"] = time.monotonic() - started
    served = client.get_model_version_by_alias(MODEL, "production").version
    assert client.get_experiment(run.info.experiment_id).name == "Sentiment-Monitoring"
    assert run.data.params["period_start"] == previous.data.params["period_end"]
    assert run.data.metrics["rows"] == sent
    assert run.data.tags["monitoring.model_version"] == served
    assert run.data.tags["monitoring.verdict"] in {"ok", "drift", "degraded"}


def test_no_container_holds_a_password_or_key_in_its_environment(stack):
    """The secrets reach the services as files: `docker inspect`, and every process started
    with a container's environment (`docker exec`, health checks), shows none of them."""
    label = f"label=com.docker.compose.project={PROJECT}"
    ids = docker("ps", "--all", "--quiet", "--filter", label).split()
    found = json.loads(docker("inspect", *ids))
    services = {c["Config"]["Labels"]["com.docker.compose.service"] for c in found}
    assert set(SERVICES) | {"minio-bucket", "mlflow-prepare", "log-store-prepare"} <= services
    leaks = [
        (c["Name"], variable)
        for c in found
        for variable in c["Config"]["Env"]
        for secret in README_ENV.values()
        if secret in variable
    ]
    assert leaks == []
    # MLflow's usage telemetry: off in every container of our images (the official ones run
    # no MLflow), the one-shots' included.
    ours = [c for c in found if c["Config"]["Image"] in IMAGES]
    assert {c["Config"]["Labels"]["com.docker.compose.service"] for c in ours} >= {
        "mlflow-prepare", "minio-bucket", "log-store-prepare", "mlflow", "trainer", "gateway"
    }  # fmt: skip
    for c in ours:
        assert {"MLFLOW_DISABLE_TELEMETRY=true", "DO_NOT_TRACK=true"} <= set(c["Config"]["Env"])


def entrypoint(image: str, files: dict[str, Path], *env: str) -> subprocess.CompletedProcess:
    mounts = [f"--volume={path}:/run/secrets/{name}:ro" for name, path in files.items()]
    show = 'printf "%s|%s|%s|%s" "$A" "$KEYS" "$SSL_CERT_FILE" "${A_FILE-unset}"'
    return subprocess.run(
        ["docker", "run", "--rm", *mounts, *(f"--env={e}" for e in env), image, "sh", "-c", show],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_each_images_entrypoint_turns_secret_files_into_variables(stack):
    with tempfile.TemporaryDirectory() as tmp:
        files = {"a": Path(tmp, "a"), "b": Path(tmp, "b")}
        files["a"].write_text("first\n")
        files["b"].write_text("k1,k2")
        for path in files.values():
            path.chmod(0o644)
        given = ["A_FILE=/run/secrets/a", "KEYS_FILE=/run/secrets/a,/run/secrets/b",
                 "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]  # fmt: skip
        for image in IMAGES:
            shown = entrypoint(image, files, *given)
            assert shown.returncode == 0, (image, shown.stderr)
            # A path outside /run/secrets is a setting of its own, left as it is.
            assert shown.stdout == "first|first,k1,k2|/etc/ssl/certs/ca-certificates.crt|unset"
        both = entrypoint(IMAGES[0], files, "A_FILE=/run/secrets/a", "A=other")
        assert both.returncode != 0 and "both A and A_FILE" in both.stderr
        missing = entrypoint(IMAGES[0], files, "A_FILE=/run/secrets/missing")
        assert missing.returncode != 0 and "/run/secrets/missing" in missing.stderr


def mebibytes(size: str) -> float:
    """`docker stats` sizes (12.5MiB, 1.02GiB, 800kB, ...) in MiB."""
    number, unit = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)", size.strip()).groups()
    scale = {"B": 2**-20, "KiB": 2**-10, "kB": 1e3 / 2**20, "MiB": 1, "MB": 1e6 / 2**20,
             "GiB": 2**10, "GB": 1e9 / 2**20}  # fmt: skip
    return float(number) * scale[unit]


def test_every_container_runs_under_its_memory_limit_with_its_log_rotated(stack):
    """After the load of the tests above: no container was killed for memory (a one-shot
    trainer included), each keeps a fifth of its limit free, and each log rotates."""
    label = f"label=com.docker.compose.project={PROJECT}"
    found = json.loads(
        docker("inspect", *docker("ps", "--all", "--quiet", "--filter", label).split())
    )
    limits = {}
    for container in found:
        name, host = container["Name"].lstrip("/"), container["HostConfig"]
        assert host["Memory"] > 0, name
        assert not container["State"]["OOMKilled"], name
        assert host["LogConfig"] == {
            "Type": "json-file",
            "Config": {"max-file": "3", "max-size": "10m"},
        }, name
        limits[name] = host["Memory"] / 2**20
    gateways = [
        c for c in found if c["Config"]["Labels"]["com.docker.compose.service"] == "gateway"
    ]
    assert gateways and all(c["Config"]["StopTimeout"] == 60 for c in gateways)
    used: dict[str, float] = {}
    for line in docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}").splitlines():
        name, usage = line.split(" ", 1)
        if name in limits:
            service = re.sub(rf"^{PROJECT}-(.+)-\d+$", r"\1", name)
            used[service] = max(used.get(service, 0.0), mebibytes(usage.split("/")[0]))
            assert mebibytes(usage.split("/")[0]) < 0.8 * limits[name], (name, usage)
    assert set(SERVICES) - {"trainer"} <= set(used)
    stack.timings["memory_mib"] = {service: round(mib) for service, mib in sorted(used.items())}


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
