"""The compose file and the Dockerfile, checked statically in every test run (the stack itself
runs on a real engine in tests/compose, with `make test-compose`)."""

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from gateway.settings import Settings
from monitoring.log_store.prepare import DATABASE, READER, WRITER
from pipelines.monitoring_job import LOG_URI
from stack.balancer import render

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# ${VAR}, ${VAR:-default}, ${VAR:?error}: filled in by compose from the shell or `.env`.
INTERPOLATED = re.compile(r"\$\{[A-Z_]+(?::?[-?][^}]*)?\}")


# The services built from this repository; the others run official images.
OWN = {"minio-bucket", "mlflow-prepare", "mlflow", "trainer", "monitor", "gateway"}
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# The images that run (the other stages build their virtual environments).
IMAGES = ("tracking", "gateway", "trainer", "batch")
# The two variables MLflow 3.17 reads to send no usage telemetry (mlflow/telemetry/utils.py).
TELEMETRY = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def default(value: str) -> str:
    """The default of ``${VAR:-default}``."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-([^}]+)\}", value)
    assert match, f"{value} is not a variable with a default"
    return match.group(1)


def secret_file(service: str, variable: str) -> str:
    """The top-level secret ``variable`` (NAME_FILE) names, after checking that the service
    mounts it; returns the environment variable the secret is read from."""
    path = SERVICES[service]["environment"][variable]
    name = path.removeprefix("/run/secrets/")
    assert path.startswith("/run/secrets/") and name in SERVICES[service]["secrets"], path
    return COMPOSE["secrets"][name]["environment"]


def required(variable: str) -> bool:
    """Compose stops with a sentence naming ``variable`` when it is unset or empty."""
    pattern = re.compile(r"\$\{" + variable + r":\?set " + variable + r"\b[^}]*\}")
    return any(pattern.fullmatch(line) for line in COMPOSE["x-required"])


def stage(target: str) -> str:
    """The Dockerfile's lines from ``FROM ... AS target`` to the next FROM."""
    match = re.search(rf"^FROM \S+ AS {target}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S)
    assert match, f"no stage {target}"
    return match.group(1)


def image_env(dockerfile: str, target: str) -> dict[str, str]:
    """The ENV an image of ``target`` starts with: its stage's, over those it is built FROM."""
    stages = {
        match[2]: (match[1], match[3])
        for match in re.finditer(
            r"^FROM (\S+) AS (\S+)\n(.*?)(?=^FROM |\Z)", dockerfile, re.M | re.S
        )
    }
    base, body = stages[target]
    values = image_env(dockerfile, base) if base in stages else {}
    for line in re.findall(r"^ENV (.+)$", body.replace("\\\n", " "), re.M):
        values |= dict(word.split("=", 1) for word in shlex.split(line))
    return values


def image_telemetry_problems(dockerfile: str) -> list[str]:
    return [
        f"{target}: {name} is {image_env(dockerfile, target).get(name)!r}"
        for target in IMAGES
        for name in TELEMETRY
        if image_env(dockerfile, target).get(name) != "true"
    ]


def service_telemetry_problems(services: dict) -> list[str]:
    """Each service built here gets both variables, true unless the operator sets them."""
    return [
        f"{service}: {name} is {services[service].get('environment', {}).get(name)!r}"
        for service in sorted(OWN)
        for name in TELEMETRY
        if services[service].get("environment", {}).get(name) != f"${{{name}:-true}}"
    ]


def test_own_services_run_targets_of_the_dockerfile_on_the_python_image_given():
    assert set(SERVICES) >= OWN
    for name in OWN:
        service = SERVICES[name]
        target = service["build"]["target"]
        assert service["build"]["context"] == "."
        assert service["image"] == f"sentiment-mlops-{target}:latest", name
        stage(target)
        argument = service["build"]["args"]["PYTHON_IMAGE"]
        assert f"ARG PYTHON_IMAGE={default(argument)}" in DOCKERFILE
    for copied in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+)", DOCKERFILE, re.M):
        assert (ROOT / copied).exists(), copied


def test_tracking_server_runs_on_postgres_and_minio_and_serves_artifacts():
    from mlflow.cli import server

    mlflow = SERVICES["mlflow"]
    args = shlex.split(mlflow["command"])
    assert args[:2] == ["mlflow", "server"] and "--serve-artifacts" in args
    assert "--backend-store-uri" not in args and "--artifacts-destination" not in args
    env = mlflow["environment"]
    # `mlflow server` reads its stores from these variables.
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"} <= {
        p.envvar for p in server.params
    }
    # No password in the URI: libpq reads PGPASSWORD, which the entrypoint takes from the file.
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://mlflow@postgres:5432/mlflow"
    assert secret_file("mlflow", "PGPASSWORD_FILE") == "POSTGRES_PASSWORD"
    assert secret_file("postgres", "POSTGRES_PASSWORD_FILE") == "POSTGRES_PASSWORD"
    assert SERVICES["postgres"]["environment"]["POSTGRES_USER"] == "mlflow"
    assert SERVICES["postgres"]["environment"]["POSTGRES_DB"] == "mlflow"
    (bucket,) = re.findall(r"Bucket='([^']+)'", SERVICES["minio-bucket"]["command"][-1])
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == f"s3://{bucket}/artifacts"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert secret_file("mlflow", "AWS_SECRET_ACCESS_KEY_FILE") == "MINIO_ROOT_PASSWORD"
    assert secret_file("minio", "MINIO_ROOT_PASSWORD_FILE") == "MINIO_ROOT_PASSWORD"
    assert secret_file("minio-bucket", "AWS_SECRET_ACCESS_KEY_FILE") == "MINIO_ROOT_PASSWORD"
    assert env["AWS_ACCESS_KEY_ID"] == SERVICES["minio"]["environment"]["MINIO_ROOT_USER"]
    # Its state lives in the stores: its one mount is its basic-auth settings, read-only.
    assert mlflow["volumes"] == ["./deploy/mlflow:/etc/mlflow-auth:ro"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow-auth/basic_auth.ini"
    words = mlflow["command"].split()
    assert words[words.index("--app-name") + 1] == "basic-auth"
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in hosts, "other services reach it as mlflow:5000"


def test_the_tracking_server_starts_after_the_schema_upgrade_and_the_bucket():
    conditions = {k: v["condition"] for k, v in SERVICES["mlflow"]["depends_on"].items()}
    assert conditions == {
        "mlflow-prepare": "service_completed_successfully",
        "minio-bucket": "service_completed_successfully",
    }
    upgrade, bucket = SERVICES["mlflow-prepare"], SERVICES["minio-bucket"]
    assert upgrade["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert bucket["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert upgrade["restart"] == bucket["restart"] == "no"
    env = upgrade["environment"]
    for name in ("MLFLOW_BACKEND_STORE_URI", "PGPASSWORD_FILE"):
        assert env[name] == SERVICES["mlflow"]["environment"][name]
    assert secret_file("mlflow-prepare", "PGPASSWORD_FILE") == "POSTGRES_PASSWORD"
    assert bucket["command"][:2] == ["python", "-c"] and "create_bucket" in bucket["command"][2]
    assert bucket["environment"]["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"


def test_the_schema_upgrade_command_creates_the_tables(tmp_path):
    """The one-shot's command as compose runs it, on an empty SQLite file instead of
    PostgreSQL: it takes the URI from the environment and creates MLflow's tables."""
    import sqlite3
    import subprocess
    import sys

    database = tmp_path / "mlflow.db"
    command = SERVICES["mlflow-prepare"]["command"]
    assert command == ["python", "-m", "tracking_server.prepare"]
    uri = f"sqlite:///{database}"
    database.touch()  # the server creates a missing SQLite file itself; PostgreSQL's exists
    result = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=ROOT,
        env={"MLFLOW_BACKEND_STORE_URI": uri, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"alembic_version", "runs", "registered_model_aliases"} <= tables


def test_the_stores_keep_their_data_on_named_volumes_behind_health_checks():
    for name, mount in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data")):
        service = SERVICES[name]
        (volume,) = service["volumes"]
        assert volume.split(":")[0] in COMPOSE["volumes"] and volume.split(":")[1] == mount
        assert service["healthcheck"]["test"][0] == "CMD"
        assert "ports" not in service, f"{name} is reached by the tracking server only"
    assert SERVICES["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert SERVICES["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]


def test_compose_refuses_to_start_without_the_store_passwords_and_shows_them_nowhere():
    text = (ROOT / "docker-compose.yml").read_text()
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        uses = re.findall(rf"\$\{{{name}[^}}]*\}}", text)
        assert uses and all(re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", use) for use in uses), uses
        assert required(name)
    secret = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|WEBHOOK")
    for name, service in SERVICES.items():
        for key in ("command", "entrypoint"):
            words = service.get(key, [])
            line = words if isinstance(words, str) else " ".join(words)
            # Addresses without credentials only, and no secret's variable.
            assert not re.search(r"://[^/\s]*@", line), (name, key, line)
            assert not [v for v in re.findall(r"\$\{([A-Z_]+)", line) if secret.search(v)]
        healthcheck = " ".join(service.get("healthcheck", {}).get("test", []))
        assert "PASSWORD" not in healthcheck, name


def test_trainer_runs_the_mlproject_after_the_tracking_server_is_healthy():
    trainer = SERVICES["trainer"]
    (command,) = re.findall(r"^CMD (.+)$", stage("trainer"), re.M)
    args = yaml.safe_load(command)
    assert args[:3] == ["mlflow", "run", "."] and "--env-manager" in args
    assert "command" not in trainer, "the image's command"
    assert (ROOT / "MLproject").exists()
    assert trainer["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert trainer["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def settings_variables() -> set[str]:
    """Every environment variable the gateway's Settings reads: GATEWAY_<field>, and the
    aliases (MLflow's own names)."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias]) if alias else [f"GATEWAY_{name.upper()}"]
        names |= {str(choice) for choice in choices}
    return names


def test_gateway_environment_names_are_settings(monkeypatch):
    gateway = SERVICES["gateway"]
    assert 'CMD ["python", "-m", "gateway"]' in stage("gateway") and "command" not in gateway
    assert (ROOT / "gateway" / "__main__.py").exists()
    # NAME_FILE becomes NAME, from the secrets' files, comma-joined (the images' entrypoint).
    env = {}
    for name, value in gateway["environment"].items():
        if name.endswith("_FILE"):
            paths = [path.removeprefix("/run/secrets/") for path in value.split(",")]
            assert set(paths) <= set(gateway["secrets"]), value
            sources = [COMPOSE["secrets"][path]["environment"] for path in paths]
            env[name.removesuffix("_FILE")] = ",".join(f"${{{v}:?}}" for v in sources)
        else:
            env[name] = value
    # Read by MLflow itself: DO_NOT_TRACK beside MLFLOW_DISABLE_TELEMETRY, and the registry's
    # login.
    mlflow_reads = {"DO_NOT_TRACK", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    # And by libpq: the log store's password.
    read = settings_variables() | mlflow_reads | {"PGPASSWORD"}
    assert set(env) <= read, set(env) - read
    for name in read:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        # As compose fills them in with nothing set: defaults, and an operator's key.
        value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
        monkeypatch.setenv(name, INTERPOLATED.sub("a-key-of-the-operator", value))
    settings = Settings(_env_file=None)
    assert settings.port == int(env["GATEWAY_PORT"])
    assert settings.mlflow_disable_telemetry is True


def test_only_the_balancer_the_uis_and_prometheus_are_published_and_on_loopback():
    published = {
        name: [p.rsplit(":", 1)[-1] for p in service["ports"]]
        for name, service in SERVICES.items()
        if service.get("ports")
    }
    gateway_port = SERVICES["gateway"]["environment"]["GATEWAY_PORT"]
    assert published == {
        "mlflow": ["5000"],
        "nginx": [gateway_port],
        "prometheus": ["9090"],
        "alertmanager": ["9093"],
        "grafana": ["3000"],
    }
    for service in SERVICES.values():
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", [])), service["ports"]
    # The scoring servers answer without a key: only the gateway in their container reaches them.
    assert SERVICES["gateway"]["environment"]["GATEWAY_SCORING_HOST"] == "127.0.0.1"
    exposed = re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.M)
    assert {port for line in exposed for port in line.split()} == {"5000", gateway_port}


def test_compose_refuses_to_start_without_an_api_key():
    """The operator's keys, and Prometheus's key for /metrics added to them: two secret files
    that the entrypoint joins with a comma."""
    files = SERVICES["gateway"]["environment"]["GATEWAY_API_KEYS_FILE"].split(",")
    names = [path.removeprefix("/run/secrets/") for path in files]
    assert [COMPOSE["secrets"][name]["environment"] for name in names] == [
        "GATEWAY_API_KEYS",
        "METRICS_API_KEY",
    ]
    assert set(names) <= set(SERVICES["gateway"]["secrets"])
    assert required("GATEWAY_API_KEYS") and required("METRICS_API_KEY")


@pytest.mark.parametrize("keys", ["change-me", "a-real-key-of-mine, change-me", " CHANGEME "])
def test_the_gateway_refuses_a_placeholder_key_without_showing_the_others(keys):
    with pytest.raises(ValidationError) as refused:
        Settings(api_keys=keys)
    assert "placeholder" in str(refused.value)
    assert "a-real-key-of-mine" not in str(refused.value)


def test_the_gateway_accepts_real_keys_and_none():
    assert Settings(api_keys="k3y-0f-m1ne,another-one").keys == ["k3y-0f-m1ne", "another-one"]
    assert Settings(api_keys="").keys == []


@pytest.mark.parametrize("target", ["tracking", "gateway"])
def test_the_images_health_checks_use_get_with_tools_the_slim_image_has(target):
    (check,) = re.findall(r"^HEALTHCHECK (.+?)(?<!\\)$", stage(target).replace("\\\n", ""), re.M)
    test = yaml.safe_load(check.split(" CMD ", 1)[1])
    assert test[0] == "python", "no curl or wget in python:slim"
    assert "urlopen(" in test[-1], "urlopen sends GET; HEAD /ping answers 405"
    assert re.search(r"EXPOSE (\d+)", stage(target)).group(1) in test[-1] + "8000"
    for name in OWN:
        assert "healthcheck" not in SERVICES[name], "the image's own"


def test_env_example_lists_every_gateway_setting():
    example = (ROOT / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias]) if alias else [f"GATEWAY_{name.upper()}"]
        assert any(f"{choice}=" in example for choice in choices), name


def test_every_image_runs_with_mlflow_telemetry_off():
    assert image_telemetry_problems(DOCKERFILE) == []
    base = image_env(DOCKERFILE, "runtime")
    assert {name: base.get(name) for name in TELEMETRY} == dict.fromkeys(TELEMETRY, "true")
    assert {name: image_env(DOCKERFILE, "venv-model").get(name) for name in TELEMETRY} == {
        name: None for name in TELEMETRY
    }, "only the runtime stages: the check reads each image's own"
    # Either left out of the base stage, or turned back on in one image: noticed.
    for name in TELEMETRY:
        left_out = DOCKERFILE.replace(f"    {name}=true \\\n", "")
        assert left_out != DOCKERFILE, name
        assert image_telemetry_problems(left_out) == [
            f"{target}: {name} is None" for target in IMAGES
        ]
    turned_on = DOCKERFILE.replace(
        "FROM runtime AS gateway\n", "FROM runtime AS gateway\nENV A=1 DO_NOT_TRACK=false\n"
    )
    assert image_telemetry_problems(turned_on) == ["gateway: DO_NOT_TRACK is 'false'"]


def test_every_service_built_here_runs_with_mlflow_telemetry_off():
    """True unless the operator sets them, as the images: the values compose passes on."""
    assert service_telemetry_problems(SERVICES) == []
    broken = copy.deepcopy(SERVICES)
    del broken["trainer"]["environment"]["MLFLOW_DISABLE_TELEMETRY"]
    broken["gateway"]["environment"]["DO_NOT_TRACK"] = "false"
    assert service_telemetry_problems(broken) == [
        "gateway: DO_NOT_TRACK is 'false'",
        "trainer: MLFLOW_DISABLE_TELEMETRY is None",
    ]


def test_a_replica_is_named_by_its_host_and_port_unless_named():
    assert Settings(port=8123).replica.endswith(":8123")
    assert Settings(replica="gateway-2").replica == "gateway-2"
    with pytest.raises(ValidationError):
        Settings(replica="two words")  # it goes into a response header as it is


NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def directives(text: str) -> set[str]:
    """A config's directives, one per entry, without comments or extra spaces."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {" ".join(line.split()) for line in lines if line}


def test_gateway_replicas_are_reached_only_through_the_nginx_service():
    gateway, nginx = SERVICES["gateway"], SERVICES["nginx"]
    replicas = gateway["deploy"]["replicas"]
    assert re.fullmatch(r"\$\{GATEWAY_REPLICAS:-([2-9]|\d\d+)\}", replicas), replicas
    assert "ports" not in gateway and "container_name" not in gateway
    assert "GATEWAY_REPLICA" not in gateway["environment"], "each names itself: <container>:8000"
    pinned = re.fullmatch(r"nginx:(\d+)\.(\d+)\.(\d+)(-alpine)?", default(nginx["image"]))
    assert pinned, "pinned"
    # `server ... resolve` in an upstream block: open-source nginx 1.27.3 and later.
    assert tuple(map(int, pinned.groups()[:3])) >= (1, 27, 3)
    source, target, mode = nginx["volumes"][0].split(":")
    assert (ROOT / source).resolve() == NGINX_CONF and target == "/etc/nginx/nginx.conf"
    assert mode == "ro"
    assert nginx["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_the_compose_balancer_spreads_retries_and_errors_as_the_stack_does():
    """Both configs: least_conn (no stickiness by client address), passive checks, one retry
    on another gateway (POSTs included, labels only when they never reached one), the
    gateway's error format. Compose's upstream is the service name, one address per replica,
    resolved again as replicas come and go."""
    compose = directives(NGINX_CONF.read_text())
    stack = directives(render("127.0.0.1", 8000, {8001: True, 8002: True}, ROOT, ROOT))
    shared = {
        d
        for d in stack
        if not re.search(r"/|127\.0\.0\.1|daemon|master_process", d) or d.startswith("location")
    }
    assert shared - compose == set(), shared - compose
    port = SERVICES["gateway"]["environment"]["GATEWAY_PORT"]
    assert f"listen {port};" in compose
    # Looked up again in Docker's DNS: a restarted replica may come back with a new address,
    # and scaling adds addresses; nginx follows both without a restart.
    assert f"server gateway:{port} resolve max_fails=2 fail_timeout=5s;" in compose
    assert any(d.startswith("resolver 127.0.0.11 ") for d in compose), "Docker's DNS"
    # A name in a variable is looked up again, but every request then goes to its first address.
    assert not [d for d in compose if "$" in d and d.startswith("proxy_pass")]
    assert not [d for d in compose | stack if d.startswith(("ip_hash", "hash ", "sticky"))]


def mounted(service: str, path: str) -> Path:
    """The file or folder of this repository that ``path`` shows inside ``service``."""
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(".") and (path == target or path.startswith(f"{target}/")):
            return ROOT / source / path.removeprefix(target).lstrip("/")
    raise AssertionError(f"{path} is not mounted from the repository into {service}")


def test_every_service_runs_a_pinned_image_that_a_variable_can_replace():
    for name, service in SERVICES.items():
        if "build" in service:  # this repository's image
            continue
        repository, _, tag = default(service["image"]).rpartition(":")
        assert repository and re.search(r"\d", tag) and "latest" not in tag, (name, tag)
        variable = re.match(r"\$\{([A-Z_]+)", service["image"]).group(1)
        assert variable == f"{name.upper()}_IMAGE", name


def test_every_folder_or_file_mounted_from_the_repository_exists():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in COMPOSE["volumes"], (name, source)


def test_no_secret_has_a_default():
    """Passwords and keys come from the operator: compose stops when one is unset or empty."""
    text = (ROOT / "docker-compose.yml").read_text()
    secret = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN")
    for use in re.findall(r"\$\{([A-Z_]+)([^}]*)\}", text):
        if secret.search(use[0]):
            assert use[1].startswith(":?"), use
    for name, service in SERVICES.items():
        environment = service.get("environment", {})
        for key, value in environment.items() if isinstance(environment, dict) else ():
            if key == "REGISTRY_PASSWORDS_DIR":
                # A folder of secret files: the accounts' passwords, each mounted into it.
                targets = [f"/run/secrets/{s['target']}" for s in service["secrets"]
                           if isinstance(s, dict)]  # fmt: skip
                assert targets and all(t.startswith(f"{value}/") for t in targets), targets
            elif secret.search(key):
                # A file of a secret of the compose file, which the service mounts.
                assert re.search(r"_FILE$", key), (name, key)
                for path in str(value).split(","):
                    assert path.removeprefix("/run/secrets/") in service["secrets"], (name, path)
    # Each secret comes from a variable Compose requires.
    for secret_name, source in COMPOSE["secrets"].items():
        assert required(source["environment"]), secret_name


PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def test_prometheus_scrapes_every_gateway_replica_with_the_metrics_key():
    prometheus = SERVICES["prometheus"]
    flags = dict(flag.removeprefix("--").split("=", 1) for flag in prometheus["command"])
    assert mounted("prometheus", flags["config.file"]) == PROMETHEUS
    config = yaml.safe_load(PROMETHEUS.read_text())
    for pattern in config["rule_files"]:
        assert list(PROMETHEUS.parent.glob(pattern)), pattern
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "gateway"]
    # One target per replica from Docker's DNS, never the balancer's single address.
    assert "static_configs" not in job
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["gateway"] and discovery["type"] == "A"
    assert str(discovery["port"]) == SERVICES["gateway"]["environment"]["GATEWAY_PORT"]
    assert job["metrics_path"] == "/metrics"
    authorization = job["authorization"]
    assert authorization["type"] == "Bearer"
    # The key's file is the secret from METRICS_API_KEY, one of the gateways' key files.
    key = authorization["credentials_file"].removeprefix("/run/secrets/")
    assert key in prometheus["secrets"] and "entrypoint" not in prometheus
    assert COMPOSE["secrets"][key]["environment"] == "METRICS_API_KEY"
    assert f"/run/secrets/{key}" in SERVICES["gateway"]["environment"]["GATEWAY_API_KEYS_FILE"]
    # What fires goes to the stack's Alertmanager.
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    (target,) = alertmanagers["static_configs"][0]["targets"]
    assert target == "alertmanager:9093" and "9093" in SERVICES["alertmanager"]["ports"][0]
    assert prometheus["volumes"][1].split(":") == ["prometheus-data", flags["storage.tsdb.path"]]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard():
    grafana = SERVICES["grafana"]
    env = grafana["environment"]
    assert secret_file("grafana", "GF_SECURITY_ADMIN_PASSWORD__FILE") == "GRAFANA_ADMIN_PASSWORD"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS:-false}"
    provisioning = mounted("grafana", "/etc/grafana/provisioning")
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    assert "web.listen-address" not in " ".join(SERVICES["prometheus"]["command"])
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "sentiment.yml").read_text())[
        "providers"
    ]
    dashboards = mounted("grafana", provider["options"]["path"])
    assert sorted(p.name for p in dashboards.glob("*.json")) == ["sentiment.json"]
    assert mounted("grafana", env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()
    assert grafana["volumes"][-1] == "grafana-data:/var/lib/grafana"


def log_login(service: str, variable: str):
    """The log store URI of ``service`` and the secret its PGPASSWORD is read from."""
    url = make_url(SERVICES[service]["environment"][variable])
    assert url.password is None, "the password comes from PGPASSWORD, not the URI"
    return url, secret_file(service, "PGPASSWORD_FILE")


def test_every_gateway_replica_logs_to_one_database_as_the_writer():
    """Feedback sent through nginx reaches any replica, and a replica may run on any host:
    the prediction log and the feedback are one PostgreSQL database, written through the
    login that may only insert, read and expire, prepared before any gateway starts."""
    gateway = SERVICES["gateway"]
    url, password = log_login("gateway", "GATEWAY_PREDICTION_LOG_URI")
    assert (url.username, url.host, url.database) == (WRITER, "postgres", DATABASE)
    assert password == "PREDICTION_LOG_WRITER_PASSWORD" and required(password)
    assert "volumes" not in gateway and "GATEWAY_MONITOR_DIR" not in gateway["environment"]
    condition = gateway["depends_on"]["log-store-prepare"]["condition"]
    assert condition == "service_completed_successfully"
    prepare = SERVICES["log-store-prepare"]
    assert prepare["command"] == ["python", "-m", "monitoring.log_store.prepare"]
    assert prepare["image"] == gateway["image"] and prepare["restart"] == "no"
    admin = make_url(prepare["environment"]["PREDICTION_LOG_ADMIN_URI"])
    backend = make_url(SERVICES["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"])
    assert (admin.username, admin.host) == (backend.username, backend.host) == ("mlflow", url.host)
    assert secret_file("log-store-prepare", "PGPASSWORD_FILE") == "POSTGRES_PASSWORD"
    for login in ("WRITER", "READER"):
        variable = f"PREDICTION_LOG_{login}_PASSWORD"
        assert secret_file("log-store-prepare", f"{variable}_FILE") == variable


ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def test_alertmanager_posts_every_alert_to_the_webhook_the_secret_names():
    alertmanager = SERVICES["alertmanager"]
    flags = dict(f.removeprefix("--").split("=", 1) for f in alertmanager["command"])
    assert mounted("alertmanager", flags["config.file"]) == ALERTMANAGER
    config = yaml.safe_load(ALERTMANAGER.read_text())
    (receiver,) = config["receivers"]
    assert config["route"]["receiver"] == receiver["name"]
    (webhook,) = receiver["webhook_configs"]
    secret = webhook["url_file"].removeprefix("/run/secrets/")
    assert secret in alertmanager["secrets"] and "url" not in webhook
    assert COMPOSE["secrets"][secret]["environment"] == "ALERT_WEBHOOK_URL"
    assert flags["cluster.listen-address"] == "", "one instance: no gossip port"


def test_every_service_has_a_memory_limit_and_a_rotated_log():
    for name, service in SERVICES.items():
        assert re.fullmatch(r"\d+[mg]", service["mem_limit"]), name
        assert service["logging"] == COMPOSE["x-logging"], name
    assert COMPOSE["x-logging"]["driver"] == "json-file"
    assert set(COMPOSE["x-logging"]["options"]) == {"max-size", "max-file"}


def test_a_gateway_has_longer_to_stop_than_its_drain_and_its_scoring_servers_stop():
    """Docker's SIGKILL must not cut the drain short: the drain, then the scoring servers'
    SIGTERM (10 s) and SIGKILL (5 s) grace (gateway/serving/scoring_server.py)."""
    grace = int(SERVICES["gateway"]["stop_grace_period"].removesuffix("s"))
    assert grace > Settings(_env_file=None).drain_timeout + 10 + 5


def test_the_monitor_job_runs_the_mlproject_entry_point_only_when_asked():
    """`docker compose run --rm monitor`: in a profile (`up` leaves it), on the trainer image,
    on the gateways' shared folder, with parameters the entry point has."""
    monitor = SERVICES["monitor"]
    assert monitor["profiles"] and monitor["image"] == SERVICES["trainer"]["image"]
    command = monitor["command"]
    assert command[:5] == ["mlflow", "run", ".", "-e", "monitor"]
    entry = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["monitor"]
    given = dict(command[i + 1].split("=", 1) for i, w in enumerate(command) if w == "-P")
    assert set(given) <= set(entry["parameters"])
    # The gateways' database, through the read-only login; no shared folder.
    url, password = log_login("monitor", LOG_URI)
    writer, _ = log_login("gateway", "GATEWAY_PREDICTION_LOG_URI")
    assert (url.username, url.host, url.database) == (READER, writer.host, writer.database)
    assert password == "PREDICTION_LOG_READER_PASSWORD" and required(password)
    assert "volumes" not in monitor and "state_dir" not in given
    assert (
        given["gateway_url"] == f"http://nginx:{SERVICES['gateway']['environment']['GATEWAY_PORT']}"
    )
    assert secret_file("monitor", "GATEWAY_API_KEY_FILE") == "METRICS_API_KEY"
    assert monitor["depends_on"]["mlflow"]["condition"] == "service_healthy"
