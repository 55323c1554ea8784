"""The Compose stack on a real Docker engine, shared by the tests of this folder.

The stack runs with the README's variables and the stand-ins of the images no registry serves
here (tests/compose/standins). The tests talk to it only through the ports it publishes on
127.0.0.1: nginx (gateways), the tracking server and Prometheus, and through the commands an
operator runs (`docker compose run --rm monitor`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.compose import engine, standins

ROOT = Path(__file__).resolve().parents[2]
# Not the file's own `name:` (sentiment-mlops): a stack of the operator's on this machine is
# left alone.
PROJECT = "sentiment-compose-test"
# The README's variables (none has a default: compose refuses to start without them). The
# webhook is the alert test's recorder (tests/compose/alerting.yml).
README_ENV = {
    "GATEWAY_API_KEYS": "compose-test-key-7f3a",
    "POSTGRES_PASSWORD": "pg7f3a9c",
    "MINIO_ROOT_PASSWORD": "minio7f3a9c",
    "METRICS_API_KEY": "metrics-7f3a9c",
    "GRAFANA_ADMIN_PASSWORD": "grafana7f3a9c",
    "ALERT_WEBHOOK_URL": "http://alert-webhook:8080/alerts",
    "REGISTRY_ADMIN_PASSWORD": "admin-7f3a9c-registry",
    "REGISTRY_PROMOTER_PASSWORD": "promoter-7f3a9c-registry",
    "REGISTRY_TRAINER_PASSWORD": "trainer-7f3a9c-registry",
    "REGISTRY_MONITOR_PASSWORD": "monitor-7f3a9c-registry",
    "REGISTRY_GATEWAY_PASSWORD": "gateway-7f3a9c-registry",
    "REGISTRY_SESSION_KEY": "session-7f3a9c-registry-key",
    "PREDICTION_LOG_WRITER_PASSWORD": "log-writer-7f3a9c",
    "PREDICTION_LOG_READER_PASSWORD": "log-reader-7f3a9c",
}
GATEWAY = "http://127.0.0.1:8000"
TRACKING = "http://127.0.0.1:5000"
PROMETHEUS = "http://127.0.0.1:9090"
AUTH = {"Authorization": f"Bearer {README_ENV['GATEWAY_API_KEYS']}"}
# Grafana has no stand-in: every other service `up` starts is started.
SERVICES = [
    "postgres", "minio", "mlflow", "trainer", "gateway", "nginx", "prometheus", "alertmanager"
]  # fmt: skip
# Where the timings and image sizes go (the README reports them).
RESULTS = Path(os.environ.get("COMPOSE_RESULTS", ROOT / "benchmarks" / "results" / "compose.json"))


def wait_for(check: Callable[[], object], seconds: float, what: str, every: float = 1.0):
    """``check()``'s first truthy value, retried every ``every`` s for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (httpx.HTTPError, OSError, ValueError, KeyError) as error:
            last = error
        time.sleep(every)
    raise AssertionError(f"{what}: not within {seconds:.0f} s (last: {last!r})")


@dataclass
class Stack:
    """One compose project: its command, environment and the timings taken along the way."""

    command: list[str]
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, check: bool = True, timeout: float = 1200):
        """The command as an operator types it: the project comes from the environment."""
        return subprocess.run(
            [*self.command, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def containers(self, service: str) -> list[str]:
        """Names of the service's running containers."""
        out = docker(
            "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--format", "{{.Names}}",
        )  # fmt: skip
        return sorted(out.split())

    def up(self, *args: str) -> float:
        """`up -d`, then the seconds until nginx answers a /predict with 200."""
        started = time.monotonic()
        result = self.compose("up", "-d", *args, *SERVICES, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        wait_for(lambda: predict("A fine film.").status_code == 200, 900, "a first /predict")
        return time.monotonic() - started

    def logs(self) -> str:
        """Each container's last 60 lines, then nginx's lines other than its 200 answers: its
        errors name the gateway address that failed, and how."""
        tail = self.compose("logs", "--no-color", "--tail", "60", check=False).stdout
        nginx = self.compose("logs", "--no-color", "nginx", check=False).stdout.splitlines()
        odd = [line for line in nginx if '" 200 ' not in line]
        return f"{tail}\n--- nginx, all but its 200 answers ---\n" + "\n".join(odd[-200:])


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def predict(text: str, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(f"{GATEWAY}/predict", json={"text": text}, headers=AUTH, timeout=timeout)


def stack_env() -> dict[str, str]:
    prefixes = ("MLFLOW_", "GATEWAY_", "COMPOSE_", "MONITOR_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return (
        env
        | README_ENV
        | standins.variables()
        | {"GATEWAY_REPLICAS": "2", "COMPOSE_PROJECT_NAME": PROJECT}
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test's report carries the containers' last log lines: what each gateway,
    nginx and the tracking server were doing when it failed."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and call.when == "call" and isinstance(stack, Stack):
        report.sections.append(("docker compose logs", stack.logs()))
    return report


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The stack, brought up from no containers and no volumes (images are built as needed)
    and removed with its volumes at the end."""
    engine.install()
    engine.start()
    standins.build()
    stack = Stack(engine.compose(), stack_env())
    stack.compose("down", "--volumes", "--remove-orphans", check=False)
    try:
        built = time.monotonic()
        result = stack.compose("build", *SERVICES, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        stack.timings["build_seconds"] = time.monotonic() - built
        stack.timings["first_predict_with_training_seconds"] = stack.up()
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", check=False)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        sizes = {
            image: int(docker("image", "inspect", "--format", "{{.Size}}", image))
            for image in IMAGES
            if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
            == 0
        }
        RESULTS.write_text(json.dumps({**stack.timings, "image_bytes": sizes}, indent=2) + "\n")


# The images built from this repository for the stack.
IMAGES = [f"sentiment-mlops-{target}:latest" for target in ("tracking", "gateway", "trainer")]
