"""The log store's one interface, and `open_store`, which picks the backend: PostgreSQL when a
URI is given, else SQLite files in a folder. The statements both backends share are in
`statements`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

import pandas as pd

# AlreadyLabelled is raised by the shared statements (`statements`), which the backends import
# instead of this module: `open_store` imports the backends.
from monitoring.log_store import statements
from monitoring.log_store.statements import AlreadyLabelled
from monitoring.log_store.tables import Feedback, Prediction

__all__ = ["AlreadyLabelled", "Discard", "LogStore", "open_store"]


class LogStore(Protocol):
    """What the gateways and the monitoring job do with the log, whatever keeps it. Every
    method blocks on the database: call it from a thread, never from the event loop."""

    def write(self, rows: list[Prediction]) -> None:
        """Insert ``rows`` in one transaction (the writer thread's job)."""

    def expire(self, cutoff: float) -> None:
        """Forget predictions logged before ``cutoff`` (a Unix time), and the texts of labels
        given before it; the labels themselves stay, for the accuracy."""

    def find(self, request_id: str, item: int) -> Prediction | None:
        """The latest prediction logged for (request id, item), by any replica."""

    def add_label(self, record: Feedback) -> None:
        """Store a label; AlreadyLabelled if the prediction has one."""

    def count_labels(self, after: int) -> tuple[list[tuple[str, int, int, int]], int]:
        """Per model version, the labels stored after label id ``after``: (version, labels,
        right, last id); and the store's highest id (lower than ``after``: a new store)."""

    def read_predictions(self, since: datetime | None, until: datetime) -> pd.DataFrame:
        """The predictions logged in (since, until], without their text."""

    def read_feedback(self, since: datetime | None, until: datetime) -> pd.DataFrame:
        """The labels given in (since, until], with their text where kept."""

    def close(self) -> None:
        """Release connections and files (a later call opens them again)."""


def open_store(
    uri: str | None,
    folder: Path,
    replica: str | None = None,
    *,
    max_bytes: int = 50_000_000,
    max_age: float = 86_400.0,
) -> LogStore:
    """PostgreSQL at ``uri`` if given, else the SQLite files under ``folder``. ``replica``:
    the name this process writes predictions as (None: it only reads and labels)."""
    if uri:
        from monitoring.log_store.postgres import PostgresStore

        return PostgresStore(uri, replica)
    from monitoring.log_store.files import SQLiteFiles

    return SQLiteFiles(folder, replica, max_bytes=max_bytes, max_age=max_age)


class Discard:
    """Keeps nothing (GATEWAY_PREDICTION_LOG=false): no answer is recorded, so no label can
    name one; the live gauges still see the traffic."""

    def write(self, rows: list[Prediction]) -> None:
        pass

    def expire(self, cutoff: float) -> None:
        pass

    def find(self, request_id: str, item: int) -> Prediction | None:
        return None

    def add_label(self, record: Feedback) -> None:
        raise AlreadyLabelled(record.request_id, record.item)  # unreachable: nothing is found

    def count_labels(self, after: int) -> tuple[list[tuple[str, int, int, int]], int]:
        return [], 0

    def read_predictions(self, since: datetime | None, until: datetime) -> pd.DataFrame:
        return statements.empty("predictions")

    def read_feedback(self, since: datetime | None, until: datetime) -> pd.DataFrame:
        return statements.empty("feedback")

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "nothing (the prediction log is off)"
