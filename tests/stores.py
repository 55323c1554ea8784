"""Real shared stores for tests: a PostgreSQL server and an S3-compatible server, on loopback.

PostgreSQL is the machine's own server binaries (stack/postgres.py; `.ci/run` installs
them); a test that needs it is skipped where they are missing. The object store is moto's S3
server (`moto_server`, from PyPI): MinIO, which the compose file runs, has no package here.
Both speak the real protocols to the real clients (psycopg, boto3, MLflow).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from stack import postgres
from stack.postgres import LogDatabase, Postgres
from stack.tracking import tracking_server
from tests.servers import BIN, env, free_port, spawn, stop, wait_until_up

__all__ = ["LogDatabase", "Postgres", "log_database", "postgres_server", "s3_server"]


def _installed() -> None:
    if postgres.postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs postgresql)")


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """stack.postgres's server; the test is skipped where PostgreSQL is not installed."""
    _installed()
    with postgres.postgres_server() as server:
        yield server


@contextmanager
def log_database() -> Iterator[LogDatabase]:
    """A server of its own with the log store's database, tables and logins."""
    _installed()
    with postgres.log_database() as database:
        yield database


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
