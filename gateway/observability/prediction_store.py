"""The prediction log's files: SQLite, one folder per replica, read by the feedback route
and the monitoring job.

Each replica writes its own folder, and each start begins a new file, so restarts and
gateways side by side never write over each other. A file is rotated by size or age; files
past the retention are deleted (any replica's: one that no longer runs leaves its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import operator
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

log = logging.getLogger("gateway.prediction_log")

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    time TEXT NOT NULL,
    request_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    route TEXT NOT NULL,
    replica TEXT NOT NULL,
    model_version TEXT NOT NULL,
    sentiment TEXT NOT NULL,
    confidence REAL NOT NULL,
    text_length INTEGER,
    known_term_ratio REAL,
    text TEXT,
    text_digest TEXT
);
CREATE INDEX IF NOT EXISTS predictions_request_id ON predictions (request_id);
"""
FILE_TIME = "%Y%m%dT%H%M%SZ"
# How often (seconds) files past the retention are looked for.
EXPIRE_EVERY = 60.0
# Readers (the feedback route, the monitoring job) hold a file only briefly.
BUSY_TIMEOUT = 5.0


@dataclass(frozen=True)
class Prediction:
    """One row of the log (one prediction; a batch answer is several)."""

    time: str
    request_id: str
    item: int
    route: str
    replica: str
    model_version: str
    sentiment: str
    confidence: float
    text_length: int | None
    known_term_ratio: float | None
    text: str | None = None
    # SHA-256 of the review, kept even when its text is not: feedback may then send the text
    # it labels, and only the text that was answered is accepted.
    text_digest: str | None = None


COLUMNS = [field.name for field in fields(Prediction)]
# A row's values in column order (`dataclasses.astuple` deep-copies each: 20x slower).
_VALUES = operator.attrgetter(*COLUMNS)


class PredictionFiles:
    """One replica's files, written by the log's writer thread (and only by it)."""

    def __init__(
        self,
        folder: Path,
        replica: str,
        *,
        max_bytes: int,
        max_age: float,
        retention: float,
        expiring: Iterable[Callable[[float], None]] = (),
    ):
        self.folder = folder / "predictions" / replica_folder(replica)
        self.max_bytes, self.max_age, self.retention = max_bytes, max_age, retention
        # Told the retention's cutoff (a Unix time) whenever files expire: whatever else
        # keeps text (the feedback store) applies the same retention.
        self.expiring = list(expiring)
        self.path: Path | None = None  # the file being written
        self._db: sqlite3.Connection | None = None
        self._opened = 0.0
        self._next_expiry = 0.0

    def write(self, predictions: list[Prediction]) -> None:
        """Insert ``predictions`` in one transaction, into the current file."""
        self._insert(self._file(), predictions)

    def close(self) -> None:
        """Close the file being written (the next write opens it again)."""
        self._close_file()

    def _insert(self, db: sqlite3.Connection, predictions: list[Prediction]) -> None:
        with db:
            db.executemany(
                f"INSERT INTO predictions ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                [_VALUES(p) for p in predictions],
            )

    def _file(self) -> sqlite3.Connection:
        """The open file; the same file again after a failure; a new one when it is too big
        or too old (or this log has none yet)."""
        now = time.time()
        if self.path is not None:
            size = sum(_size(self.path.with_name(self.path.name + s)) for s in ("", "-wal"))
            if size < self.max_bytes and now - self._opened < self.max_age:
                if self._db is None:  # a write failed: reuse it rather than add files
                    self._db = self._open(self.path)
                return self._db
            self._close_file()
        self.folder.mkdir(parents=True, exist_ok=True)
        start = int(now)
        path = self.folder / f"{time.strftime(FILE_TIME, time.gmtime(start))}.sqlite"
        while path.exists():  # a restart or a rotation within the same second
            start += 1
            path = self.folder / f"{time.strftime(FILE_TIME, time.gmtime(start))}.sqlite"
        self.path, self._opened = path, now
        self._db = self._open(path)
        log.info("prediction log: writing %s", path)
        return self._db

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _close_file(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None

    def expire(self, now: float) -> None:
        """At most once a minute: delete every replica's files last written before the
        retention period (a replica that no longer runs leaves its own), then folders left
        empty, and tell ``expiring`` the cutoff."""
        if now < self._next_expiry:
            return
        self._next_expiry = now + EXPIRE_EVERY
        root = self.folder.parent
        for path in root.glob("*/*.sqlite"):
            if path == self.path:
                continue
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > self.retention:
                    for suffix in ("", "-wal", "-shm"):
                        path.with_name(path.name + suffix).unlink(missing_ok=True)
                    log.info("prediction log: deleted %s (past the retention)", path)
        with contextlib.suppress(OSError):
            for folder in root.iterdir():
                if folder != self.folder and folder.is_dir():
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only if empty
        for expire in self.expiring:
            try:
                expire(now - self.retention)
            except Exception as error:  # noqa: BLE001 - the log goes on; the next minute retries
                log.warning("prediction log: expiring failed: %s", error)


def replica_folder(replica: str) -> str:
    """The replica's folder name: anything but [A-Za-z0-9._-] becomes `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", replica) or "_"


def storable(text: str) -> str:
    """``text`` as SQLite can store it: a lone surrogate (valid JSON) becomes "?"."""
    return text.encode("utf-8", "replace").decode("utf-8")


def digest(text: str) -> str:
    """The review's SHA-256, as the log keeps it."""
    return hashlib.sha256(storable(text).encode("utf-8")).hexdigest()


def find(folder: Path, request_id: str, item: int = 0) -> Prediction | None:
    """The latest logged prediction for (request id, item) by its time, from every replica's
    files under ``folder`` (the monitor dir), or None if no file still holds it."""
    found = []
    for path in (folder / "predictions").glob("*/*.sqlite"):
        try:
            db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        except sqlite3.Error:
            continue
        try:
            # Files written before a column existed lack it.
            present = {row[1] for row in db.execute("PRAGMA table_info(predictions)")}
            columns = [c for c in COLUMNS if c in present]
            row = db.execute(
                f"SELECT {', '.join(columns)} FROM predictions "
                "WHERE request_id = ? AND item = ? ORDER BY time DESC LIMIT 1",
                (storable(request_id), item),
            ).fetchone()
        except sqlite3.Error:
            row = None  # a file being created, or not a log
        finally:
            db.close()
        if row is not None:
            found.append(Prediction(**dict(zip(columns, row, strict=True))))
    return max(found, key=lambda p: p.time, default=None)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
