"""`python -m monitoring.log_store.prepare`: make a PostgreSQL log store ready, once per
deployment and again on every upgrade (each step does nothing when already done).

With an administrator's connection (PREDICTION_LOG_ADMIN_URI, any database of the server;
libpq's PGPASSWORD works): the database (PREDICTION_LOG_DATABASE, default `prediction_log`),
its tables at the newest version (owned by the administrator), and two logins with their
passwords (PREDICTION_LOG_WRITER_PASSWORD, PREDICTION_LOG_READER_PASSWORD):

- `prediction_log_writer`, the gateways': insert and read both tables, delete expired
  predictions, forget expired label texts; nothing else;
- `prediction_log_reader`, the monitoring job's: read both tables.

Neither is the tracking server's user, and neither can change a table.
"""

from __future__ import annotations

import os
import sys

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from monitoring.log_store import migrate
from monitoring.log_store.postgres import CONNECT_TIMEOUT, engine_for

WRITER, READER = "prediction_log_writer", "prediction_log_reader"
DATABASE = "prediction_log"
# What each login may do: the tables' privileges, nothing on the database but to connect.
GRANTS = [
    "REVOKE ALL ON DATABASE {database} FROM PUBLIC",
    "GRANT CONNECT ON DATABASE {database} TO {writer}, {reader}",
    "GRANT USAGE ON SCHEMA public TO {writer}, {reader}",
    "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {writer}, {reader}",
    "GRANT SELECT, INSERT, DELETE ON predictions TO {writer}",
    "GRANT SELECT, INSERT, UPDATE (text) ON feedback TO {writer}",
    "GRANT SELECT ON predictions, feedback TO {reader}",
]
LOGIN = "{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {password}"


def prepare(admin_uri: str, database: str, passwords: dict[str, str]) -> list[str]:
    """Do what is not done yet; returns what was created (empty on a later run)."""
    created = []
    with _connect(admin_uri, "") as admin:
        if not admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            created.append(f"database {database}")
        for role, password in passwords.items():
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            login = sql.SQL(LOGIN).format(
                verb=sql.SQL("ALTER" if exists else "CREATE"),
                role=sql.Identifier(role),
                password=sql.Literal(password),
            )
            admin.execute(login)
            if not exists:
                created.append(f"role {role}")
    engine = engine_for(_in_database(admin_uri, database))
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    with _connect(admin_uri, database) as admin:
        names = {
            "database": sql.Identifier(database),
            "writer": sql.Identifier(WRITER),
            "reader": sql.Identifier(READER),
        }
        for grant in GRANTS:
            admin.execute(sql.SQL(grant).format(**names))
    return created


def _in_database(uri: str, database: str) -> str:
    return make_url(uri).set(database=database).render_as_string(hide_password=False)


def _connect(uri: str, database: str) -> psycopg.Connection:
    url = make_url(uri)
    return psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=database or url.database or "postgres",
        connect_timeout=CONNECT_TIMEOUT,
        autocommit=True,
    )


def main() -> int:
    missing = [
        name
        for name in (
            "PREDICTION_LOG_ADMIN_URI",
            "PREDICTION_LOG_WRITER_PASSWORD",
            "PREDICTION_LOG_READER_PASSWORD",
        )
        if not os.environ.get(name)
    ]
    if missing:
        print(f"Set {', '.join(missing)}.", file=sys.stderr)
        return 2
    created = prepare(
        os.environ["PREDICTION_LOG_ADMIN_URI"],
        os.environ.get("PREDICTION_LOG_DATABASE", DATABASE),
        {
            WRITER: os.environ["PREDICTION_LOG_WRITER_PASSWORD"],
            READER: os.environ["PREDICTION_LOG_READER_PASSWORD"],
        },
    )
    print(f"log store ready; created: {', '.join(created) or 'nothing (all there)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
