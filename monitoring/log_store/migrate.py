"""Bring a log store's tables to the newest version (Alembic, `migrations/`).

PostgreSQL is migrated once, by `prepare` with the owner's rights (the gateways' user may not
change tables); a SQLite file by whoever opens it first. Concurrent upgrades wait for each
other: an advisory lock on PostgreSQL, a lock file beside a SQLite file.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

VERSION_TABLE = "log_store_version"
MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock's key: any constant no other client of the database uses.
LOCK_KEY = 0x5E471_106


def config() -> Config:
    settings = Config()
    settings.set_main_option("script_location", str(MIGRATIONS))
    return settings


def head() -> str:
    """The newest version the code knows."""
    return str(ScriptDirectory.from_config(config()).get_current_head())


def current(connection: Connection) -> str | None:
    """The version the store is at (None: never migrated)."""
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


def upgrade(engine: Engine, lock_file: Path | None = None) -> None:
    """Migrate to the newest version; nothing to do costs a read of the version table.
    ``lock_file``: held meanwhile, for a SQLite file that several processes open."""
    with _exclusive(lock_file), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        if current(connection) == head():
            return
        settings = config()
        settings.attributes["connection"] = connection
        command.upgrade(settings, "head")


@contextmanager
def _exclusive(lock_file: Path | None):
    if lock_file is None:
        yield
        return
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
