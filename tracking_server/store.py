"""The tracking server's store: its address as it may be shown, its schema brought up to date.

Every deployment runs this before the server (`make up` through `stack.tracking`, Compose and
Kubernetes through `python -m tracking_server.prepare`), so a database password never appears
on a command line, and anywhere an address is shown, it is shown without the password.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Seconds to wait for a database server that is still starting.
CONNECT_TIMEOUT = 60.0


def shown(uri: str) -> str:
    """``uri`` as it may be printed: any password replaced by ***."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any("password" in key.lower() for key, _ in query):
        return uri
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = [(key, "***" if "password" in key.lower() else value) for key, value in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def wait_for(uri: str) -> None:
    """Return once the database at ``uri`` accepts a connection; SystemExit, naming it without
    its password, if it does not within CONNECT_TIMEOUT."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while (error := _connect_error(uri)) is not None:
        if time.monotonic() > deadline:
            # The driver's message names the host, port and user, never the password.
            cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise SystemExit(
                f"The backend store {shown(uri)} did not answer within "
                f"{CONNECT_TIMEOUT:.0f}s: {type(error).__name__}: {cause}"
            )
        time.sleep(1)


def create_database(uri: str) -> None:
    """Create the PostgreSQL database ``uri`` names if it is missing (the registry's user store
    lives next to the tracking store, on the same server); other stores create themselves."""
    parts = urlsplit(uri)
    name = parts.path.lstrip("/")
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres") or not name:
        return
    if _connect_error(uri) is None:
        return
    import psycopg
    from psycopg import sql

    # Missing, or the server is not up yet: ask the server's own database.
    server = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    wait_for(server)
    try:
        with psycopg.connect(server, autocommit=True) as connection:
            found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                print(f"Creating the database {shown(uri)}", flush=True)
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        raise SystemExit(f"Could not create the database {shown(uri)}: {error}") from None


def _connect_error(uri: str) -> Exception | None:
    """None when the database at ``uri`` accepts a connection now; else why it did not."""
    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(uri)
    try:
        with engine.connect():
            return None
    except Exception as error:
        return error
    finally:
        engine.dispose()


def upgrade_schema(uri: str) -> None:
    """`mlflow db upgrade` (creating the tables of an empty database), once the database
    answers. A SQLite file that does not exist yet is left to the server to create."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return
    from mlflow.db import upgrade

    wait_for(uri)
    print(f"Upgrading the schema of {shown(uri)} (mlflow db upgrade)", flush=True)
    upgrade.main(args=[uri], prog_name="mlflow db upgrade", standalone_mode=False)
