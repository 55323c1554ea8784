"""Static checks that the project's declarative files agree with each other and the code."""

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from importlib.metadata import version as installed
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
LOCAL = {
    "model",
    "gateway",
    "pipelines",
    "stack",
    "tests",
    "benchmarks",
    "monitoring",
    "tracking_server",
}
# Which direct pins cover the third-party imports of each top-level package (or of a folder of
# one, checked apart from it): every file named pins them.
COVERS = {
    "model": "requirements/model.in",
    # Statistics shared by the gateway, training and the monitor job.
    "monitoring": "requirements/model.in",
    # The log store: the gateways write it, the monitor job (the training image) reads it.
    "monitoring/log_store": ("requirements/gateway.in", "requirements/training.in"),
    "pipelines": "requirements/batch.in",
    "gateway": "requirements/gateway.in",
    # What the tracking image runs before the server (its store, the registry's accounts).
    "tracking_server": "requirements/tracking.in",
    "stack": "requirements/dev.in",
    "tests": "requirements/dev.in",
    "benchmarks": "requirements/dev.in",
}
# Each requirements/NAME.in (direct pins) is compiled into the locked requirements/NAME.txt.
LOCKS = ("model", "stores", "tracking", "gateway", "training", "batch", "dev")
DEVELOPMENT_ONLY = {"pytest", "schemathesis", "hypothesis", "ruff", "psutil", "httpx", "playwright"}
DEVELOPMENT_ONLY |= {"tritonclient", "mypy", "pre-commit", "pip-tools"}
# Never in an image, not even as another package's dependency (the trainer's evidently brings
# httpx with litestar, for instance).
TEST_TOOLS = DEVELOPMENT_ONLY - {"httpx"}
WEB = {"fastapi", "starlette", "uvicorn", "uvloop", "httptools", "aiohttp", "httpx"}


def normal(name: str) -> str:
    """The package's normalised name, without extras (`tritonclient[http]`: tritonclient)."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def entries(path: Path) -> list[tuple[str, list[str]]]:
    """A requirements file's requirements (and ``-r`` lines), each with its ``--hash`` values:
    continued lines joined, comments dropped (pip-compile's ``# via`` notes too)."""
    found = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        words = line.split(" #")[0].split()
        if not words or words[0].startswith("#"):
            continue
        hashes = [word.removeprefix("--hash=") for word in words if word.startswith("--hash=")]
        found.append((" ".join(w for w in words if not w.startswith("--hash=")), hashes))
    return found


def lines(path: Path) -> list[str]:
    """A requirements file's requirements (and ``-r`` lines), without their hashes."""
    return [requirement for requirement, _ in entries(path)]


def pins(path: Path) -> dict[str, str]:
    """The exact pins of a requirements file and of the files it includes (``-r``)."""
    found: dict[str, str] = {}
    for line in lines(path):
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
    """Everything for development: what `make install` installs (the lock of dev.in)."""
    return pins(ROOT / "requirements.txt")


def requirement_files() -> list[Path]:
    return [ROOT / "requirements.txt", *sorted(REQUIREMENTS.glob("*.in"))] + sorted(
        REQUIREMENTS.glob("*.txt")
    )


@pytest.mark.parametrize("path", requirement_files(), ids=lambda p: p.name)
def test_every_requirement_is_pinned(path):
    for line in lines(path):
        if line.startswith("-r "):
            assert (path.parent / line[3:]).is_file(), line
            assert path.suffix == ".in" or path == ROOT / "requirements.txt", "locks are flat"
        else:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*", line), line
            assert "[" not in line or path.suffix == ".in", "locks have no extras"
    names = [normal(line.split("==")[0]) for line in lines(path) if "==" in line]
    assert len(names) == len(set(names)), "each package is pinned once per file"


@pytest.mark.parametrize("name", LOCKS)
def test_every_locked_package_carries_the_hashes_of_its_files(name):
    """pip installs the locks in hash-checking mode (`make install`, the images'
    --require-hashes): a file whose hash the lock lacks is refused, so each pin needs them."""
    for requirement, hashes in entries(REQUIREMENTS / f"{name}.txt"):
        assert hashes, f"{requirement}: no --hash; run `make lock`"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), requirement
    for path in [ROOT / "requirements.txt", REQUIREMENTS / f"{name}.in"]:
        assert not any(hashes for _, hashes in entries(path)), "hashes belong in the locks"


def test_each_direct_pin_is_set_in_one_in_file_only():
    seen: dict[str, str] = {}
    for path in sorted(REQUIREMENTS.glob("*.in")):
        for line in lines(path):
            if "==" in line:
                name = normal(line.split("==")[0])
                assert name not in seen, f"{name} is pinned in {seen.get(name)} and {path.name}"
                seen[name] = path.name
    assert set(seen) == set(pins(REQUIREMENTS / "dev.in"))
    assert {path.stem for path in REQUIREMENTS.glob("*.in")} == set(LOCKS)
    assert {path.stem for path in REQUIREMENTS.glob("*.txt")} == set(LOCKS)


def direct(path: Path) -> list[str]:
    """The requirement lines of an .in file and of the files it includes, extras kept."""
    found = []
    for line in lines(path):
        found += direct(path.parent / line[3:]) if line.startswith("-r ") else [line]
    return found


def closure(path: Path) -> set[str]:
    """What installing the direct pins of ``path`` (an .in file) installs: the packages and,
    through their metadata, every dependency (markers for this Python 3.11 on Linux, extras
    followed), read from the development environment."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    wanted = [Requirement(line) for line in direct(path)]
    found: dict[str, set[str]] = {}
    while wanted:
        requirement = wanted.pop()
        name, extras = normal(requirement.name), set(requirement.extras)
        if name in found and extras <= found[name]:
            continue
        found[name] = found.get(name, set()) | extras
        for text in requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or any(
                needed.marker.evaluate({"extra": extra}) for extra in {"", *found[name]}
            ):
                wanted.append(needed)
    return set(found)


@pytest.mark.parametrize("name", LOCKS)
def test_each_lock_pins_exactly_what_its_in_file_installs(name):
    """requirements/NAME.txt is requirements/NAME.in compiled: its direct pins at the same
    versions, and every package they need, nothing else."""
    direct, locked = pins(REQUIREMENTS / f"{name}.in"), pins(REQUIREMENTS / f"{name}.txt")
    assert {n: locked.get(n) for n in direct} == direct, "make lock"
    assert set(locked) == closure(REQUIREMENTS / f"{name}.in"), "make lock"


def test_the_locks_pin_each_package_at_one_version():
    """Every lock is compiled within dev.txt: an image never gets another version of a
    package than the one the tests ran with."""
    everything = pins(REQUIREMENTS / "dev.txt")
    for name in LOCKS:
        locked = pins(REQUIREMENTS / f"{name}.txt")
        assert {n: everything.get(n) for n in locked} == locked, name


def test_the_development_environment_has_the_pinned_versions():
    wrong = {n: (v, installed(n)) for n, v in requirement_pins().items() if installed(n) != v}
    assert not wrong, f"pinned vs installed: {wrong}; run `make install`"


def test_conda_yaml_and_the_images_default_base_name_one_python_release():
    """`mlflow run .`'s environment and the images' default base (Dockerfile, compose): the
    same patch release, on the Debian release the images are tested on (bookworm)."""
    python = re.search(
        r'^PYTHON = "(3\.11\.\d+)"$', (REQUIREMENTS / "conda_env.py").read_text(), re.M
    )
    assert python, "requirements/conda_env.py pins a Python 3.11 release"
    deps = yaml.safe_load((ROOT / "conda.yaml").read_text())["dependencies"]
    assert f"python={python[1]}" in deps
    image = f"python:{python[1]}-slim-bookworm"
    assert f"\nARG PYTHON_IMAGE={image}\n" in (ROOT / "Dockerfile").read_text()
    assert f"PYTHON_IMAGE: ${{PYTHON_IMAGE:-{image}}}" in (ROOT / "docker-compose.yml").read_text()


def test_conda_yaml_agrees_with_the_training_requirements():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    deps = conda["dependencies"]
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    # Every package of the batch image, locked: `make lock` writes it from batch.txt.
    assert {normal(p.split("==")[0]): p.split("==")[1] for p in pip} == pins(
        REQUIREMENTS / "batch.txt"
    )


def test_the_logged_model_declares_exactly_the_model_requirements():
    from pipelines.training import SERVING_PACKAGES
    from tests.models import REQUIREMENTS as TEST_MODEL_REQUIREMENTS

    model = pins(REQUIREMENTS / "model.in")
    declared = {normal(name): installed(name) for name in SERVING_PACKAGES}
    assert declared == model
    assert {normal(r.split("==")[0]): r.split("==")[1] for r in TEST_MODEL_REQUIREMENTS} == model


def test_the_served_model_needs_no_web_framework_and_the_images_no_test_tools():
    # Direct pins: MLflow brings its own scoring server's web stack (in model.txt).
    assert not WEB & set(pins(REQUIREMENTS / "model.in"))
    dockerfile = (ROOT / "Dockerfile").read_text()
    commands = re.findall(r"pip install ([^\n]*?)-r /tmp/requirements/(\S+)", dockerfile)
    # Hash-checking mode: only the files the lock names, and nothing it does not pin.
    assert commands and all("--require-hashes --no-deps" in flags for flags, _ in commands)
    installs = [name for _, name in commands]
    image = {}
    for name in installs:
        assert f"COPY requirements/{name} /tmp/requirements/" in dockerfile, name
        image |= pins(REQUIREMENTS / name)
    assert set(pins(REQUIREMENTS / "batch.txt")) <= set(image), "the trainer and batch images"
    assert set(pins(REQUIREMENTS / "gateway.txt")) <= set(image), "the gateway image"
    assert set(pins(REQUIREMENTS / "tracking.txt")) <= set(image), "the tracking image"
    assert not TEST_TOOLS & set(image)
    images = {name.removesuffix(".txt") for name in installs}
    assert not DEVELOPMENT_ONLY & {n for name in images for n in pins(REQUIREMENTS / f"{name}.in")}


def test_every_image_is_labelled_with_its_source_revision_and_version():
    """Each image names the repository and commit it was built from (build arguments, at the
    end of its stage so that a new commit rebuilds no layer), and the project's version."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"\nARG VERSION={version}\n" in dockerfile
    images = [s for s in re.split(r"^FROM ", dockerfile, flags=re.M) if s.startswith("runtime AS")]
    assert len(images) == 4
    for stage in images:
        for name, arg in [("source", "SOURCE"), ("revision", "REVISION"), ("version", "VERSION")]:
            assert f'org.opencontainers.image.{name}="${arg}"' in stage, stage.split()[2]
        lines = [line.strip() for line in stage.splitlines() if line.strip()]
        instructions = [line for line in lines if not line.startswith("#")]
        assert instructions[-1] == 'org.opencontainers.image.version="$VERSION"', stage.split()[2]


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
    apart = [ROOT / other for other in COVERS if other.startswith(f"{package}/")]
    for path in (ROOT / package).rglob("*.py"):
        if any(path.is_relative_to(folder) for folder in apart):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    distributions = packages_distributions()
    third_party = modules - set(sys.stdlib_module_names) - LOCAL
    covers = COVERS[package]
    for requirements in [covers] if isinstance(covers, str) else covers:
        pinned = set(pins(ROOT / requirements))
        missing = {
            module
            for module in third_party
            if not {normal(d) for d in distributions.get(module, [module])} & pinned
        }
        assert not missing, f"{package}/ imports {missing}, not pinned in {requirements}"


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


def make_gives(makefile: Path, **variables: str) -> str:
    """What a recipe of ``makefile`` (`make up`, `make train`, ...) finds in
    MLFLOW_DISABLE_TELEMETRY, run from a shell without it unless given in ``variables``."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "MAKEFLAGS")
    }
    result = subprocess.run(
        ["make", "--no-print-directory", "-f", str(makefile), "--eval",
         "telemetry-check: ; @echo \"[$$MLFLOW_DISABLE_TELEMETRY]\"", "telemetry-check"],
        cwd=ROOT, env={**env, **variables}, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.strip()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_every_make_target_runs_with_mlflow_telemetry_off_unless_turned_on(tmp_path):
    makefile = ROOT / "Makefile"
    assert make_gives(makefile) == "[true]"
    assert make_gives(makefile, MLFLOW_DISABLE_TELEMETRY="false") == "[false]"
    # Without the two lines, a recipe would find nothing: MLflow's default, telemetry on.
    text = makefile.read_text()
    lines = "MLFLOW_DISABLE_TELEMETRY ?= true\nexport MLFLOW_DISABLE_TELEMETRY\n"
    assert lines in text
    (tmp_path / "Makefile").write_text(text.replace(lines, ""))
    assert make_gives(tmp_path / "Makefile") == "[]"
