"""The statements both backends run, on a connection of theirs (apart from `store`, which
imports the backends: they import this, not it)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import Connection, Engine, case, func, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError

from monitoring.log_store.tables import (
    FEEDBACK_COLUMNS,
    PREDICTION_COLUMNS,
    Feedback,
    Prediction,
    feedback,
    iso,
    predictions,
)


class AlreadyLabelled(Exception):
    """The prediction has a label already."""


PREDICTION_READ = [c for c in PREDICTION_COLUMNS if c != "text"]
COUNT = select(
    feedback.c.model_version,
    func.count(),
    func.sum(case((feedback.c.label == feedback.c.sentiment, 1), else_=0)),
    func.max(feedback.c.id),
).group_by(feedback.c.model_version)


def find_in(connection: Connection, request_id: str, item: int) -> Prediction | None:
    present = set(_present(connection, "predictions"))
    columns = [c for c in PREDICTION_COLUMNS if c in present]  # older files lack some
    row = connection.execute(
        select(*[predictions.c[name] for name in columns])
        .where(predictions.c.request_id == request_id, predictions.c.item == item)
        .order_by(predictions.c.time.desc())
        .limit(1)
    ).first()
    return None if row is None else Prediction(**dict(zip(columns, row, strict=True)))


def insert_label(engine: Engine, record: Feedback) -> None:
    try:
        with engine.begin() as connection:
            connection.execute(insert(feedback), [vars(record)])
    except IntegrityError:
        raise AlreadyLabelled(record.request_id, record.item) from None


def count_since(connection: Connection, after: int) -> tuple[list[tuple[str, int, int, int]], int]:
    top = connection.execute(select(func.max(feedback.c.id))).scalar() or 0
    statement = COUNT.where(feedback.c.id > after)
    rows = [
        (str(version), int(total), int(right or 0), int(last))
        for version, total, right, last in connection.execute(statement)
    ]
    return rows, int(top)


def expire_texts(connection: Connection, cutoff: float) -> None:
    """Its WHERE repeats the index's (feedback_text_time), so that the database uses it."""
    connection.execute(
        update(feedback)
        .where(feedback.c.text.is_not(None), feedback.c.time < iso(cutoff))
        .values(text=None)
    )


def read_table(
    connection: Connection, table: str, since: datetime | None, until: datetime
) -> pd.DataFrame:
    """A period of ``table`` (in SQL, so a shared database sends only that period)."""
    source = predictions if table == "predictions" else feedback
    wanted = PREDICTION_READ if table == "predictions" else FEEDBACK_COLUMNS
    present = set(_present(connection, table))
    query = select(*[source.c[name] for name in wanted if name in present]).where(
        source.c.time <= iso(until)
    )
    if since is not None:
        query = query.where(source.c.time > iso(since))
    return pd.read_sql(query, connection)


def empty(table: str) -> pd.DataFrame:
    return pd.DataFrame(columns=PREDICTION_READ if table == "predictions" else FEEDBACK_COLUMNS)


def _present(connection: Connection, table: str) -> list[str]:
    cache = connection.info.setdefault("columns", {})
    if table not in cache:
        cache[table] = [column["name"] for column in inspect(connection).get_columns(table)]
    return cache[table]
