"""Alembic's entry point for the log store: run on the connection `migrate.upgrade` hands over,
never on a URL of its own (no alembic.ini)."""

from alembic import context

from monitoring.log_store.migrate import VERSION_TABLE
from monitoring.log_store.tables import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite alters a table by copying it: Alembic's batch mode does that.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
