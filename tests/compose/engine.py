"""The Docker engine and the Compose command the container tests use.

`make test-compose` calls `python -m tests.compose.engine`: as root, it installs Debian's
docker.io and mmdebstrap when missing, Compose v2 as the docker CLI plugin when `docker
compose` is missing, and starts `dockerd` when no engine answers.

Compose v2 comes from Debian trixie's `docker-compose` package (Compose 2.26, a Go binary that
needs only libc): bookworm's is 1.29, which reads neither `name:` nor secrets taken from the
environment. The package is downloaded with a sources list and package lists of its own, so
the system's apt configuration never names trixie.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Where a daemon started here keeps its images and logs.
DATA_ROOT = Path(os.environ.get("DOCKER_DATA_ROOT", "/var/lib/docker-tests"))
# One of the folders where the docker CLI looks for plugins, whichever CLI is on PATH.
PLUGINS = Path("/usr/local/lib/docker/cli-plugins")
COMPOSE_SUITE = "trixie"
# The oldest Compose that reads secrets from the environment (`secrets: x: environment: Y`).
COMPOSE_MINIMUM = (2, 26)
APT_SOURCES = Path("/etc/apt/sources.list.d")


def answers() -> bool:
    """True if a Docker engine answers the CLI."""
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def compose_version() -> tuple[int, int] | None:
    """`docker compose`'s major and minor version, None without the plugin."""
    if shutil.which("docker") is None:
        return None
    found = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True
    )
    match = re.match(r"v?(\d+)\.(\d+)", found.stdout.strip())
    return (int(match[1]), int(match[2])) if found.returncode == 0 and match else None


def compose() -> list[str]:
    """`docker compose`: the file needs v2 (2.26 or later), and says so if it is missing."""
    version = compose_version()
    if version is None or version < COMPOSE_MINIMUM:
        found = "no `docker compose`" if version is None else f"Compose {version[0]}.{version[1]}"
        raise RuntimeError(
            f"docker-compose.yml needs Compose v2 ({'.'.join(map(str, COMPOSE_MINIMUM))} or "
            f"later) as the docker CLI plugin; found {found}. `python -m tests.compose.engine` "
            "installs it (as root)."
        )
    return ["docker", "compose"]


def debian_mirror() -> tuple[str, str | None]:
    """The Debian archive the system already uses (its URI and keyring): the stanza of a
    deb822 .sources file whose suites include a release name without a dash."""
    for path in sorted(APT_SOURCES.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if re.match(r"^[A-Z][\w-]*:", line)
            )
            suites = fields.get("Suites", "").split()
            if fields.get("Types", "").split() == ["deb"] and any("-" not in s for s in suites):
                keyring = fields.get("Signed-By", "").strip() or None
                return fields["URIs"].split()[0], keyring
    for path in [Path("/etc/apt/sources.list"), *sorted(APT_SOURCES.glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+/debian/?)\s+[a-z]+\s", line)
                if match:
                    return match[1], None
    raise SystemExit(f"No Debian archive found in {APT_SOURCES}: install Compose v2 by hand.")


def install_compose() -> None:
    """trixie's `docker-compose` package, unpacked, its plugin copied into PLUGINS."""
    uri, keyring = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="compose-v2-") as tmp:
        work = Path(tmp)
        sources = work / "trixie.list"
        signed = f"[signed-by={keyring}] " if keyring else ""
        sources.write_text(f"deb {signed}{uri} {COMPOSE_SUITE} main\n")
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "cache" / "archives" / "partial").mkdir(parents=True)
        apt = [
            "apt-get", "-qq",
            "-o", f"Dir::Etc::sourcelist={sources}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={work / 'lists'}",
            "-o", f"Dir::Cache={work / 'cache'}",
            # A mirror that is a dated snapshot serves a Release file past its validity.
            "-o", "Acquire::Check-Valid-Until=false",
            # The temporary folder is root's own: apt's download user could not write to it.
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip
        subprocess.run([*apt, "update"], check=True)
        subprocess.run([*apt, "download", "docker-compose"], check=True, cwd=work)
        (package,) = work.glob("docker-compose_*.deb")
        subprocess.run(["dpkg", "-x", str(package), str(work / "root")], check=True)
        plugin = work / "root" / "usr" / "libexec" / "docker" / "cli-plugins" / "docker-compose"
        PLUGINS.mkdir(parents=True, exist_ok=True)
        shutil.copy(plugin, PLUGINS / "docker-compose")
        (PLUGINS / "docker-compose").chmod(0o755)


def install() -> None:
    """Debian's engine and mmdebstrap (for the stand-ins' base), and Compose v2, as root."""
    needed = [
        package
        for package, command in [("docker.io", "dockerd"), ("mmdebstrap", "mmdebstrap")]
        if shutil.which(command) is None
    ]
    if needed:
        if os.geteuid() != 0:
            sys.exit(f"Install {' '.join(needed)} (apt-get, as root) and run this again.")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *needed], check=True, env=env)
    version = compose_version()
    if version is None or version < COMPOSE_MINIMUM:
        if os.geteuid() != 0:
            sys.exit(
                "Install Compose v2 (2.26 or later) as the docker CLI plugin, e.g. Debian "
                "trixie's docker-compose package, or run this again as root."
            )
        install_compose()
    compose()  # fails with a sentence if the plugin still does not run


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
    print(subprocess.run(["docker", "compose", "version"], capture_output=True, text=True).stdout)
