"""Local stand-ins for the images docker-compose.yml pulls, for machines that reach no image
registry (test fixtures only: with a registry, compose pulls the official images).

Each is built from Debian's package of the same software (s3rver stands in for MinIO, which
Debian lacks) on a Debian base made with mmdebstrap, which also stands in for the official
Python image our Dockerfile starts from. `make compose-images` builds them; the variables in
IMAGES point compose at them. One more is the alert test's webhook recorder, which has no
official image: the alerting override (tests/compose/alerting.yml) runs it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
BASE = "sentiment-standin/python:3.11"
# Compose's image variable -> the stand-in's tag and its build folder (None: the base).
IMAGES: dict[str, tuple[str, str | None]] = {
    "PYTHON_IMAGE": (BASE, None),
    "POSTGRES_IMAGE": ("sentiment-standin/postgres:15", "postgres"),
    "MINIO_IMAGE": ("sentiment-standin/s3:3.7.1", "s3"),
    "NGINX_IMAGE": ("sentiment-standin/nginx:1.30", "nginx"),
    "PROMETHEUS_IMAGE": ("sentiment-standin/prometheus:2.42", "prometheus"),
    "ALERTMANAGER_IMAGE": ("sentiment-standin/alertmanager:0.28", "alertmanager"),
    "WEBHOOK_RECORDER_IMAGE": ("sentiment-standin/webhook-recorder:1", "webhook"),
}
# Stand-ins whose package is newer in another Debian suite: their own base, with the package
# installed by mmdebstrap (folder -> suite, packages). deploy/nginx.conf re-resolves the
# gateways' addresses (`server ... resolve`), which open-source nginx has since 1.27.3;
# bookworm's is 1.22. The webhook's url_file (deploy/alertmanager) is in Alertmanager 0.26 and
# later; bookworm's is 0.25.
OWN_BASES = {
    "nginx": ("sid", "nginx"),
    "alertmanager": ("trixie", "prometheus-alertmanager,wget"),
}
# Debian 12 with Python 3.11, its venv module, TLS roots (pip) and useradd.
BASE_PACKAGES = "python3.11,python3.11-venv,ca-certificates,passwd"
# This machine's own certificate authorities. Where the network inspects TLS, builds reach
# the package registries only if the base trusts them, as the host does; pip and Node.js read
# the system's bundle through the variables below.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TRUST = f"""\
FROM {BASE}-bare
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV PIP_CERT={BUNDLE} REQUESTS_CA_BUNDLE={BUNDLE} NODE_EXTRA_CA_CERTS={BUNDLE}
"""


def variables() -> dict[str, str]:
    """The compose variables that select the stand-ins."""
    return {name: tag for name, (tag, _) in IMAGES.items()}


def exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def debian(suite: str, packages: str, tag: str) -> None:
    """A Debian ``suite`` (minbase) with ``packages``, imported as ``tag``: about 30 s, once.

    The mirror may be a snapshot older than a suite's Release file allows: its date is not
    checked (unstable's expires within days)."""
    debootstrap = subprocess.Popen(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={packages}",
         "--aptopt=Acquire::Check-Valid-Until \"false\"", suite, "-"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    subprocess.run(["docker", "import", "-", tag], stdin=debootstrap.stdout, check=True)
    if debootstrap.wait() != 0:
        raise SystemExit("mmdebstrap failed: see its output above")


def build_base() -> None:
    """Debian bookworm with Python, trusting this machine's certificate authorities."""
    debian("bookworm", BASE_PACKAGES, f"{BASE}-bare")
    with tempfile.TemporaryDirectory() as context:
        cas = Path(context, "ca-certificates")
        cas.mkdir()
        for ca in LOCAL_CAS.glob("*.crt"):
            shutil.copy(ca, cas)
        Path(context, "Dockerfile").write_text(TRUST)
        subprocess.run(["docker", "build", "--quiet", "-t", BASE, context], check=True)


def build() -> None:
    if not exists(BASE):
        build_base()
    for tag, folder in IMAGES.values():
        if folder is None:
            continue
        base = BASE
        if folder in OWN_BASES:
            suite, packages = OWN_BASES[folder]
            base = f"sentiment-standin/{folder}-base:{suite}"
            if not exists(base):
                debian(suite, packages, base)
        subprocess.run(
            ["docker", "build", "--quiet", "--build-arg", f"BASE={base}", "-t", tag,
             str(HERE / folder)],
            check=True,
        )  # fmt: skip
