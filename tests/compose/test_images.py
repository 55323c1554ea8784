"""The gateway image carries what it runs and nothing else (`make test-compose`).

The image is built as `docker compose build gateway` builds it (on the stand-in base, with the
source and revision the labels name), then looked at from inside: its installed
distributions, its files, its user, and from outside: its labels.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest

from tests.compose import engine, standins
from tests.compose.conftest import ROOT, Stack, docker, stack_env

IMAGE = "sentiment-mlops-gateway:latest"
LOCK = ROOT / "requirements" / "gateway.txt"
# What the labels must name: the checkout the image is built from.
SOURCE = ROOT.as_uri()
# The packages whose own test suites the Dockerfile deletes (about 100 MB).
TESTED_PACKAGES = ["numpy", "scipy", "pandas", "pyarrow", "sklearn"]
COMPILERS = ["cc", "gcc", "c++", "g++", "clang", "ld"]
# The code the gateway runs; tests/, benchmarks/, pipelines/ and the rest stay outside.
CODE = ["gateway", "model", "monitoring"]
# Run inside the image as root (so that every folder can be read), given the names above:
# what the image holds, as JSON.
FACTS = """
import importlib.metadata, importlib.util, json, os, shutil, sys
compilers, tested = json.loads(sys.argv[1])
site = os.path.join(sys.prefix, "lib", "python3.11", "site-packages")
folders = []
for folder, names, _ in os.walk("/"):
    names[:] = [n for n in names if os.path.join(folder, n) not in ("/proc", "/sys", "/dev")]
    folders.append(folder)
print(json.dumps({
    "distributions": {
        d.metadata["Name"]: d.version for d in importlib.metadata.distributions(path=[site])
    },
    "compilers": [shutil.which(c) for c in compilers if shutil.which(c)],
    "pip_caches": [f for f in folders if f.endswith("/.cache/pip") or f.startswith("/tmp/pip-")],
    "test_folders": [
        os.path.join(folder, "tests")
        for package in tested
        for folder, names, _ in os.walk(os.path.join(site, package))
        if "tests" in names
    ],
    "app": sorted(os.listdir("/app")),
    "importable": [
        name for name in ("tests", "benchmarks", "pipelines", "stack")
        if importlib.util.find_spec(name) is not None
    ],
}))
"""


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path) -> dict[str, str]:
    """A lock's ``name==version`` pins (its hash and comment lines skipped)."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", path.read_text(), re.M)
    return {normal(name): version for name, version in pins}


def revision() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip() if head.returncode == 0 else "no-git-checkout"


def facts_of(image: str) -> dict:
    names = json.dumps([COMPILERS, TESTED_PACKAGES])
    out = docker(
        "run", "--rm", "--user", "root", "--workdir", "/app",
        "--entrypoint", "/opt/venv/bin/python", image, "-c", FACTS, names,
    )  # fmt: skip
    return json.loads(out)


@pytest.fixture(scope="module")
def gateway() -> str:
    """The gateway image, (re)built by compose from this checkout."""
    engine.install()
    engine.start()
    if not standins.exists(standins.BASE):
        standins.build_base()
    stack = Stack(engine.compose(), stack_env() | {"SOURCE": SOURCE, "REVISION": revision()})
    result = stack.compose("build", "gateway", check=False, timeout=2400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def facts(gateway: str) -> dict:
    return facts_of(gateway)


def test_the_gateway_image_holds_exactly_the_pinned_distributions(facts):
    """gateway.txt (model.txt's pins and the gateway's): no other package, no other version,
    and not pip or setuptools, which the gateway never runs."""
    installed = {normal(name): version for name, version in facts["distributions"].items()}
    pins = locked(LOCK)
    assert installed == pins, {
        "not pinned": sorted(installed.keys() - pins.keys()),
        "missing": sorted(pins.keys() - installed.keys()),
        "other version": {
            n: installed[n] for n in pins.keys() & installed.keys() if installed[n] != pins[n]
        },
    }


def test_the_gateway_image_has_no_compiler(facts):
    assert facts["compilers"] == []


def test_the_gateway_image_keeps_no_pip_cache(facts):
    assert facts["pip_caches"] == []


def test_the_gateway_image_has_no_test_suites_of_the_numeric_packages(facts):
    assert facts["test_folders"] == []


def test_the_gateway_image_holds_only_the_code_it_runs(facts):
    assert facts["app"] == CODE
    assert facts["importable"] == []


def test_the_gateway_image_runs_as_an_unprivileged_user_who_cannot_change_the_code(gateway):
    assert docker("image", "inspect", "--format", "{{.Config.User}}", gateway).strip() == "app"
    check = "import os; print(os.getuid(), os.access('/app/gateway', os.W_OK))"
    out = docker("run", "--rm", "--entrypoint", "/opt/venv/bin/python", gateway, "-c", check)
    assert out.split() == ["1000", "False"]


def test_the_gateway_image_names_its_source_revision_and_version(gateway):
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", gateway))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.source"] == SOURCE
    assert labels["org.opencontainers.image.revision"] == revision()
    assert labels["org.opencontainers.image.version"] == version
