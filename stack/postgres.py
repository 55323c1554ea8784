"""A PostgreSQL server of our own on loopback, for the tests and the benchmarks: the machine's
server binaries (Debian's package), initialised into a temporary folder on a free port, with
password authentication; and the log store's database prepared in it as a deployment's is.
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

import psycopg

from monitoring.log_store import prepare
from stack.processes import free_port


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


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
        raise PostgresMissing(
            "PostgreSQL's server binaries are not installed: apt-get install postgresql"
        )
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
class LogDatabase:
    """A PostgreSQL log store prepared as a deployment's is (`monitoring.log_store.prepare`)."""

    server: Postgres
    writer: str  # the gateways' URI
    reader: str  # the monitoring job's

    def rows(self, sql: str, *params) -> list[tuple]:
        """As the server's administrator, in the log's database."""
        with psycopg.connect(
            host="127.0.0.1",
            port=self.server.port,
            user=self.server.user,
            password=self.server.password,
            dbname=prepare.DATABASE,
            autocommit=True,
        ) as db:
            return db.execute(sql, params).fetchall()


@contextmanager
def log_database() -> Iterator[LogDatabase]:
    """A PostgreSQL server of its own with the log store's database, tables and logins."""
    with postgres_server() as server:
        passwords = {prepare.WRITER: secrets.token_hex(8), prepare.READER: secrets.token_hex(8)}
        prepare.prepare(server.uri, prepare.DATABASE, passwords)
        writer, reader = (
            f"postgresql://{user}:{password}@127.0.0.1:{server.port}/{prepare.DATABASE}"
            for user, password in passwords.items()
        )
        yield LogDatabase(server, writer, reader)
