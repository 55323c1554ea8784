"""The prediction log's and the feedback's tables.

A feedback.sqlite written before the log store had versions holds `feedback` keyed by
(request_id, item), without `id`: it is copied into the new table, in the order it was written.
Prediction files of that time are read as they are and never written again.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from monitoring.log_store.tables import feedback, predictions

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    if "predictions" not in existing:
        predictions.create(bind)
    if "feedback" in existing:
        op.execute("DROP INDEX IF EXISTS feedback_text_time")  # index names are per database
        op.rename_table("feedback", "feedback_unversioned")
    feedback.create(bind)
    if "feedback" in existing:
        columns = ", ".join(c.name for c in feedback.columns if c.name != "id")
        op.execute(
            f"INSERT INTO feedback ({columns}) SELECT {columns} FROM feedback_unversioned "
            "ORDER BY rowid"
        )
        op.drop_table("feedback_unversioned")
