"""Static checks that the project's declarative files agree with each other and the code."""

import importlib
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def requirement_pins() -> dict[str, str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip().lower(): ver.strip() for name, ver in pins.items()}


def test_every_requirement_is_pinned():
    lines = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l and l[0] != "#"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*", line) for line in lines), lines


def test_conda_yaml_pins_python_and_agrees_with_requirements():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    deps = conda["dependencies"]
    assert "python=3.11.7" in deps
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    assert dict(p.lower().split("==") for p in pip) == requirement_pins()


def test_mlproject_entry_points_run_existing_modules_with_declared_parameters():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    assert set(project["entry_points"]) == {"main", "tune", "promote"}
    for name, entry in project["entry_points"].items():
        command = entry["command"]
        module = re.search(r"python -m ([\w.]+)", command).group(1)
        assert hasattr(importlib.import_module(module), "main"), name
        placeholders = set(re.findall(r"\{(\w+)\}", command))
        assert placeholders == set(entry["parameters"]), name
        for param in entry["parameters"]:
            assert f"--{param.replace('_', '-')} {{{param}}}" in command, (name, param)
