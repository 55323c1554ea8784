"""Static checks that the project's declarative files agree with each other and the code."""

import ast
import importlib
import re
import sys
from importlib.metadata import packages_distributions
from importlib.metadata import version as installed
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
LOCAL = {"model", "gateway", "pipelines", "stack", "tests", "benchmarks", "monitoring"}
# Which requirements cover the third-party imports of each top-level package.
COVERS = {
    "model": "requirements/model.txt",
    # Statistics shared by the gateway, training and the monitor job.
    "monitoring": "requirements/model.txt",
    "pipelines": "requirements/batch.txt",
    "gateway": "requirements/gateway.txt",
    "stack": "requirements.txt",
    "tests": "requirements.txt",
    "benchmarks": "requirements.txt",
}
DEVELOPMENT_ONLY = {"pytest", "schemathesis", "hypothesis", "ruff", "psutil", "httpx", "playwright"}
DEVELOPMENT_ONLY |= {"tritonclient"}
WEB = {"fastapi", "starlette", "uvicorn", "uvloop", "httptools", "aiohttp", "httpx"}


def normal(name: str) -> str:
    """The package's normalised name, without extras (`tritonclient[http]`: tritonclient)."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def pins(path: Path) -> dict[str, str]:
    """The exact pins of a requirements file and of the files it includes (``-r``)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            included = pins(path.parent / line.removeprefix("-r ").strip())
            clash = {k for k in included.keys() & found.keys() if included[k] != found[k]}
            assert not clash, (path, clash)
            found |= included
            continue
        name, version = line.split("==")
        found[normal(name)] = version
    return found


def requirement_pins() -> dict[str, str]:
    """Everything for development: what `make install` installs."""
    return pins(ROOT / "requirements.txt")


def requirement_files() -> list[Path]:
    return [ROOT / "requirements.txt", *sorted(REQUIREMENTS.glob("*.txt"))]


@pytest.mark.parametrize("path", requirement_files(), ids=lambda p: p.name)
def test_every_requirement_is_pinned(path):
    lines = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
    for line in lines:
        if line.startswith("-r "):
            assert (path.parent / line[3:]).is_file(), line
        else:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*", line), line
    names = [normal(line.split("==")[0]) for line in lines if "==" in line]
    assert len(names) == len(set(names)), "each package is pinned once per file"


def test_each_package_is_pinned_in_one_file_only():
    seen: dict[str, str] = {}
    for path in sorted(REQUIREMENTS.glob("*.txt")):
        for line in path.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name = normal(line.split("==")[0])
                assert name not in seen, f"{name} is pinned in {seen.get(name)} and {path.name}"
                seen[name] = path.name
    assert set(seen) == set(requirement_pins())


def test_the_development_environment_has_the_pinned_versions():
    wrong = {n: (v, installed(n)) for n, v in requirement_pins().items() if installed(n) != v}
    assert not wrong, f"pinned vs installed: {wrong}; run `make install`"


def test_conda_yaml_pins_python_and_agrees_with_the_training_requirements():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    deps = conda["dependencies"]
    assert "python=3.11.7" in deps
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    assert {normal(p.split("==")[0]): p.split("==")[1] for p in pip} == pins(
        REQUIREMENTS / "batch.txt"
    )


def test_the_logged_model_declares_exactly_the_model_requirements():
    from pipelines.training import SERVING_PACKAGES
    from tests.models import REQUIREMENTS as TEST_MODEL_REQUIREMENTS

    model = pins(REQUIREMENTS / "model.txt")
    declared = {normal(name): installed(name) for name in SERVING_PACKAGES}
    assert declared == model
    assert {normal(r.split("==")[0]): r.split("==")[1] for r in TEST_MODEL_REQUIREMENTS} == model


def test_the_served_model_needs_no_web_framework_and_the_images_no_test_tools():
    assert not WEB & set(pins(REQUIREMENTS / "model.txt"))
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install -r /tmp/requirements/(\S+)", dockerfile)
    image = {}
    for name in installs:
        assert f"COPY requirements/{name} /tmp/requirements/" in dockerfile, name
        image |= pins(REQUIREMENTS / name)
    assert set(pins(REQUIREMENTS / "batch.txt")) <= set(image), "the trainer and batch images"
    assert set(pins(REQUIREMENTS / "gateway.txt")) <= set(image), "the gateway image"
    assert set(pins(REQUIREMENTS / "tracking.txt")) <= set(image), "the tracking image"
    assert not DEVELOPMENT_ONLY & set(image)


def test_the_image_carries_the_page():
    """The gateway serves its page from gateway/api/page/assets/: the image must copy those
    files."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY (--chown=\S+ )?gateway \./gateway$", dockerfile, re.MULTILINE)
    ignored = [
        line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
    ]
    page = ["gateway", "gateway/api", "gateway/api/page", "gateway/api/page/assets"]
    page += ["gateway/api/page/assets/*", "gateway/**"]
    assert not set(ignored) & set(page)
    assert {"index.html", "page.js", "page.css"} <= {
        f.name for f in (ROOT / "gateway/api/page/assets").iterdir()
    }


@pytest.mark.parametrize("package", sorted(COVERS))
def test_every_third_party_import_is_pinned_where_it_runs(package):
    """An import that only works because something else happens to pull its package in
    breaks the day that something changes: each one is pinned in the package's own file."""
    modules = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    distributions = packages_distributions()
    pinned = set(pins(ROOT / COVERS[package]))
    third_party = modules - set(sys.stdlib_module_names) - LOCAL
    missing = {
        module
        for module in third_party
        if not {normal(d) for d in distributions.get(module, [module])} & pinned
    }
    assert not missing, f"{package}/ imports {missing}, not pinned in {COVERS[package]}"


def test_mlproject_entry_points_run_existing_modules_with_declared_parameters():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    assert set(project["entry_points"]) == {
        "main", "tune", "promote", "batch_score", "monitor"
    }  # fmt: skip
    for name, entry in project["entry_points"].items():
        command = entry["command"]
        module = re.search(r"python -m ([\w.]+)", command).group(1)
        assert hasattr(importlib.import_module(module), "main"), name
        placeholders = set(re.findall(r"\{(\w+)\}", command))
        assert placeholders == set(entry["parameters"]), name
        for param in entry["parameters"]:
            assert f"--{param.replace('_', '-')} {{{param}}}" in command, (name, param)
