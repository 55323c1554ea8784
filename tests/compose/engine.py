"""The Docker engine and the Compose command the container tests use.

`make test-compose` calls `python -m tests.compose.engine`: it installs Debian's docker.io and
docker-compose (as root) when missing and starts `dockerd` when no engine answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Where a daemon started here keeps its images and logs.
DATA_ROOT = Path(os.environ.get("DOCKER_DATA_ROOT", "/var/lib/docker-tests"))


def answers() -> bool:
    """True if a Docker engine answers the CLI."""
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def compose() -> list[str]:
    """`docker compose` (v2) where the plugin exists, else Debian's `docker-compose` (1.29)."""
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if v2.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("Neither `docker compose` nor `docker-compose` is installed.")


def install() -> None:
    """Debian's engine, Compose 1.29 and mmdebstrap (for the stand-ins' base), as root."""
    needed = [
        package
        for package, command in [
            ("docker.io", "dockerd"),
            ("docker-compose", "docker-compose"),
            ("mmdebstrap", "mmdebstrap"),
        ]
        if shutil.which(command) is None
    ]
    if not needed:
        return
    if os.geteuid() != 0:
        sys.exit(f"Install {' '.join(needed)} (apt-get, as root) and run this again.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *needed], check=True, env=env)


def start(timeout: float = 60.0) -> None:
    """Start `dockerd` in the background unless an engine already answers."""
    if answers():
        return
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    log = open(DATA_ROOT.with_suffix(".log"), "ab")  # noqa: SIM115 (outlives this process)
    subprocess.Popen(
        ["dockerd", "--data-root", str(DATA_ROOT)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not answers():
        if time.monotonic() > deadline:
            sys.exit(f"dockerd did not answer within {timeout:.0f} s: see {log.name}")
        time.sleep(0.5)


if __name__ == "__main__":
    install()
    start()
    version = ["docker", "version", "--format", "Docker engine {{.Server.Version}}"]
    print(subprocess.run(version, capture_output=True, text=True, check=True).stdout.strip())
