"""The log store in SQLite files: the embedded default, for gateways on one host.

Predictions: one folder per replica (`predictions/<replica>/<start>.sqlite`), and each start
begins a new file, so restarts and gateways side by side never write over each other. A file
is rotated by size or age; files last written before the retention are deleted, any
replica's (one that no longer runs leaves its own). Labels: one file, `feedback.sqlite`,
shared by the replicas (a label may come to another gateway than the one that answered).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, Engine, create_engine, event, insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from monitoring.log_store import migrate, statements
from monitoring.log_store.tables import Feedback, Prediction, predictions

log = logging.getLogger("gateway.prediction_log")

FILE_TIME = "%Y%m%dT%H%M%SZ"
# Several processes write feedback.sqlite; a writer waits this long for another's transaction.
BUSY_TIMEOUT = 5.0
SUFFIXES = ("", "-wal", "-shm", ".lock")


class SQLiteFiles:
    """A folder of SQLite files (see the module docstring); `store.LogStore`."""

    def __init__(
        self, folder: Path, replica: str | None, *, max_bytes: int, max_age: float
    ) -> None:
        self.root = folder
        self.replica = replica
        self.folder = folder / "predictions" / replica_folder(replica or "")
        self.feedback_path = folder / "feedback.sqlite"
        self.max_bytes, self.max_age = max_bytes, max_age
        self.path: Path | None = None  # the predictions file being written
        self._writer: Engine | None = None
        self._connection: Connection | None = None
        self._opened = 0.0
        self._feedback: Engine | None = None
        self._opening = threading.Lock()  # the label threads and the writer's expiry
        self._feedback_file: int | None = None  # the inode its connections have open

    def __repr__(self) -> str:
        return f"SQLite files in {self.root}"

    # ---- Predictions

    def write(self, rows: list[Prediction]) -> None:
        if self.replica is None:
            raise RuntimeError("a store opened without a replica name only reads")
        connection = self._file()
        with connection.begin():
            connection.execute(insert(predictions), [vars(row) for row in rows])

    def _file(self) -> Connection:
        """The open file; the same file again after a failure; a new one when it is too big
        or too old (or there is none yet)."""
        now = time.time()
        if self.path is not None:
            size = sum(_size(self.path.with_name(self.path.name + s)) for s in ("", "-wal"))
            if size < self.max_bytes and now - self._opened < self.max_age:
                if self._connection is None:  # a write failed: reuse it rather than add files
                    self._connection = self._open(self.path)
                return self._connection
            self._close_file()
        self.folder.mkdir(parents=True, exist_ok=True)
        start = int(now)
        path = self.folder / f"{time.strftime(FILE_TIME, time.gmtime(start))}.sqlite"
        while path.exists():  # a restart or a rotation within the same second
            start += 1
            path = self.folder / f"{time.strftime(FILE_TIME, time.gmtime(start))}.sqlite"
        self.path, self._opened = path, now
        self._connection = self._open(path)
        log.info("prediction log: writing %s", path)
        return self._connection

    def _open(self, path: Path) -> Connection:
        self._writer = _engine(path, pooled=False)
        migrate.upgrade(self._writer)  # one writer per file: no lock
        return self._writer.connect()

    def _close_file(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.close()
        if self._writer is not None:
            self._writer.dispose()
        self._connection, self._writer = None, None

    def expire(self, cutoff: float) -> None:
        for path in self.root.glob("predictions/*/*.sqlite"):
            if path == self.path:
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    for suffix in SUFFIXES:
                        path.with_name(path.name + suffix).unlink(missing_ok=True)
                    log.info("prediction log: deleted %s (past the retention)", path)
        with contextlib.suppress(OSError):
            for folder in (self.root / "predictions").iterdir():
                if folder != self.folder and folder.is_dir():
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only if empty
        if self.feedback_path.exists():
            with self._labels().begin() as connection:
                statements.expire_texts(connection, cutoff)

    def find(self, request_id: str, item: int) -> Prediction | None:
        found = []
        for path in self.root.glob("predictions/*/*.sqlite"):
            try:
                with _reader(path).connect() as connection:
                    row = statements.find_in(connection, request_id, item)
            except SQLAlchemyError:
                continue  # a file being created, or not a log
            if row is not None:
                found.append(row)
        return max(found, key=lambda p: p.time, default=None)

    def read_predictions(self, since: datetime | None, until: datetime) -> pd.DataFrame:
        frames = [
            _read(path, "predictions", since, until)
            for path in sorted(self.root.glob("predictions/*/*.sqlite"))
        ]
        frames = [frame for frame in frames if frame is not None and len(frame)]
        return pd.concat(frames, ignore_index=True) if frames else statements.empty("predictions")

    # ---- Labels

    def add_label(self, record: Feedback) -> None:
        statements.insert_label(self._labels(), record)

    def count_labels(self, after: int) -> tuple[list[tuple[str, int, int, int]], int]:
        if not self.feedback_path.exists():
            return [], 0
        with self._labels().connect() as connection:
            return statements.count_since(connection, after)

    def read_feedback(self, since: datetime | None, until: datetime) -> pd.DataFrame:
        found = _read(self.feedback_path, "feedback", since, until)
        return statements.empty("feedback") if found is None else found

    def _labels(self) -> Engine:
        """feedback.sqlite, brought to the newest version by the first to open it."""
        with self._opening:
            return self._open_labels()

    def _open_labels(self) -> Engine:
        if self._feedback is not None and _inode(self.feedback_path) != self._feedback_file:
            # Replaced or removed: the pooled connections still hold the old file, whose labels
            # no other process sees.
            self._feedback.dispose()
            self._feedback = None
        if self._feedback is None:
            self.root.mkdir(parents=True, exist_ok=True)
            engine = _engine(self.feedback_path, pooled=True)
            lock = self.feedback_path.with_name(self.feedback_path.name + ".lock")
            migrate.upgrade(engine, lock_file=lock)
            self._feedback, self._feedback_file = engine, _inode(self.feedback_path)
        return self._feedback

    def close(self) -> None:
        self._close_file()
        if self._feedback is not None:
            self._feedback.dispose()
            self._feedback = None


def replica_folder(replica: str) -> str:
    """The replica's folder name: anything but [A-Za-z0-9._-] becomes `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", replica) or "_"


def _engine(path: Path, *, pooled: bool) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False},
        **({} if pooled else {"poolclass": NullPool}),
    )

    @event.listens_for(engine, "connect")
    def _wal(connection, _record) -> None:
        # Readers (the feedback route, the monitoring job) then never wait for a writer.
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _reader(path: Path) -> Engine:
    return create_engine(
        f"sqlite:///file:{path.resolve()}?mode=ro&uri=true",
        connect_args={"timeout": BUSY_TIMEOUT},
        poolclass=NullPool,
    )


def _read(path: Path, table: str, since: datetime | None, until: datetime) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        with _reader(path).connect() as connection:
            return statements.read_table(connection, table, since, until)
    except (SQLAlchemyError, pd.errors.DatabaseError) as error:
        print(f"  skipping {path}: {error}", file=sys.stderr)
        return None


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
