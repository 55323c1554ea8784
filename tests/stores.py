"""Real shared stores for tests: a PostgreSQL server and an S3-compatible server, on loopback.

PostgreSQL is the machine's own server binaries (Debian's package; `.ci/run` installs it),
initialised into a temporary folder and listening on a free loopback port, with password
authentication. The object store is moto's S3 server (`moto_server`, from PyPI): MinIO,
which the compose file runs, has no package here. Both speak the real protocols to the
real clients (psycopg, boto3, MLflow).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
import pytest

from stack.tracking import tracking_server
from tests.servers import BIN, env, free_port, spawn, stop, wait_until_up

# The server binaries refuse to run as root: as root, they run as this user.
SERVER_USER = "postgres"


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's newest version, else whatever is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major(path: str) -> int:
    return int(Path(path).parts[-3])


@dataclass
class Postgres:
    """A PostgreSQL server of our own: one database, one user with a password."""

    bin: Path
    data: Path
    port: int
    user: str = "mlflow"
    password: str = ""
    database: str = "mlflow"

    @property
    def uri(self) -> str:
        """The store URI MLflow takes (password included: keep it out of argv and logs)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
            autocommit=True,
        )

    def pg_ctl(self, *args: str) -> None:
        """Run `pg_ctl` on this server (as the server user when we are root) and wait for it."""
        options = f"-p {self.port} -h 127.0.0.1 -k {self.data.parent}"
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args]
        if args[0] in ("start", "restart"):
            command += ["-o", options, "-l", str(self.data.parent / "postgres.log")]
        _run(command)

    def start(self) -> None:
        self.pg_ctl("start")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self.pg_ctl("restart", "-m", "fast")


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    result = subprocess.run(
        _as_server_user(command), capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """initdb into a temporary folder, start on a free loopback port, create the database;
    stopped and removed on the way out."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs postgresql)")
    # Not under pytest's tmp_path: the server user must be able to reach the folder.
    home = Path(tempfile.mkdtemp(prefix="mlflow-postgres-"))
    server = Postgres(binaries, home / "data", free_port(), password=secrets.token_hex(12))
    secret = home / "password"
    secret.write_text(server.password)
    if os.geteuid() == 0:
        shutil.chown(home, SERVER_USER)
        shutil.chown(secret, SERVER_USER)
    os.chmod(secret, 0o600)
    try:
        _run(
            [
                str(binaries / "initdb"), "-D", str(server.data), "-U", server.user,
                f"--pwfile={secret}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync",
            ]
        )  # fmt: skip
        secret.unlink()
        server.start()
        with psycopg.connect(
            host="127.0.0.1",
            port=server.port,
            user=server.user,
            password=server.password,
            dbname="postgres",
            autocommit=True,
        ) as admin:
            admin.execute(f'CREATE DATABASE "{server.database}"')
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class S3:
    """An S3-compatible server with one bucket, and what a server needs to reach it."""

    endpoint: str
    bucket: str
    access_key: str = "test-access-key"
    secret_key: str = "test-secret-key"

    @property
    def env(self) -> dict[str, str]:
        """The variables MLflow's S3 client reads (the tracking server's alone)."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextmanager
def s3_server(state: Path, bucket: str = "mlflow") -> Iterator[S3]:
    """moto's S3 server on a free loopback port, with ``bucket`` created."""
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], state / "moto.log")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until_up(f"{endpoint}/moto-api/", timeout=60, proc=proc)
        s3 = S3(endpoint, bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop(proc)


@dataclass
class SharedStores:
    """A tracking server on PostgreSQL and S3, as a team would run it."""

    postgres: Postgres
    s3: S3
    uri: str  # the tracking server
    artifacts: str  # its artifacts destination, s3://bucket/prefix
    state: Path


@pytest.fixture(scope="session")
def shared_stores(tmp_path_factory) -> Iterator[SharedStores]:
    """One PostgreSQL server, one S3 server and one tracking server on them, for the session.

    Only the tracking server gets the S3 endpoint and keys: every client (training, the
    gateway, its scoring servers) reads and writes artifacts through it."""
    state = tmp_path_factory.mktemp("shared-stores")
    with postgres_server() as postgres, s3_server(state / "s3") as s3:
        artifacts = f"s3://{s3.bucket}/mlflow-artifacts"
        with tracking_server(
            state / "tracking", env=env(**s3.env), stores=(postgres.uri, artifacts)
        ) as uri:
            yield SharedStores(postgres, s3, uri, artifacts, state)
