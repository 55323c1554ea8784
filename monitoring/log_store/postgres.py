"""The log store in one PostgreSQL database: for gateways on many hosts, which all write the
same tables (a label then finds an answer whichever replica gave it).

The tables are made and migrated by `prepare`, as their owner; the gateways' user may only
insert, read and expire, the monitoring job's only read. Connections are checked before use
(a restarted server's are dropped, not failed on), and every call is bounded in time.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, create_engine, delete, insert
from sqlalchemy.engine import make_url

from monitoring.log_store import statements
from monitoring.log_store.tables import Feedback, Prediction, iso, predictions

# Seconds to reach the server, the longest one statement may run, and how long sent data may
# go unacknowledged before the connection counts as lost.
CONNECT_TIMEOUT, STATEMENT_TIMEOUT, TCP_TIMEOUT = 5, 30, 10


def engine_for(uri: str, *, pool_size: int = 2) -> Engine:
    """An engine on ``uri`` through psycopg 3, whatever driver the URI names."""
    url = make_url(uri)
    if url.get_backend_name() in ("postgresql", "postgres"):
        # The URI the tracking server uses may name psycopg2; only psycopg 3 is installed.
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=2,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT,
            # A server that went away without a word (a container restarted at a new address)
            # fails a connection within seconds instead of blocking its thread for minutes:
            # unacknowledged data times out, and an idle connection is probed.
            "tcp_user_timeout": TCP_TIMEOUT * 1000,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT * 1000}",
            "application_name": "sentiment-log-store",
        },
    )


class PostgresStore:
    """One database for every replica; `store.LogStore`."""

    def __init__(self, uri: str, replica: str | None):
        self.replica = replica
        self.engine = engine_for(uri)

    def __repr__(self) -> str:
        return f"PostgreSQL at {self.engine.url.render_as_string(hide_password=True)}"

    def write(self, rows: list[Prediction]) -> None:
        with self.engine.begin() as connection:
            connection.execute(insert(predictions), [vars(row) for row in rows])

    def expire(self, cutoff: float) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(predictions).where(predictions.c.time < iso(cutoff)))
            statements.expire_texts(connection, cutoff)

    def find(self, request_id: str, item: int) -> Prediction | None:
        with self.engine.connect() as connection:
            return statements.find_in(connection, request_id, item)

    def add_label(self, record: Feedback) -> None:
        statements.insert_label(self.engine, record)

    def count_labels(self, after: int) -> tuple[list[tuple[str, int, int, int]], int]:
        with self.engine.connect() as connection:
            return statements.count_since(connection, after)

    def read_predictions(self, since: datetime | None, until: datetime) -> pd.DataFrame:
        with self.engine.connect() as connection:
            return statements.read_table(connection, "predictions", since, until)

    def read_feedback(self, since: datetime | None, until: datetime) -> pd.DataFrame:
        with self.engine.connect() as connection:
            return statements.read_table(connection, "feedback", since, until)

    def close(self) -> None:
        self.engine.dispose()
