"""The prediction log: every prediction the gateway answers, in SQLite files the monitor job reads.

Recording must never slow or fail an answer, so a request only puts what it already holds on
a bounded queue (no parsing, no disk); one background thread parses, writes whole batches in
one transaction each, rotates the file by size or age, and deletes files past the retention.
A full queue drops the answer and counts it. Each replica writes its own folder, and each
start begins a new file, so restarts and gateways side by side never write over each other.
Review text is kept only when asked for (GATEWAY_LOG_TEXTS).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import operator
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.logs import REQUEST_ID

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
# How many queued answers the writer takes into one transaction at most.
BATCH = 512
# A failed write waits this long before the next, doubling up to the maximum (seconds).
BACKOFF, BACKOFF_MAX = 1.0, 30.0
# How often (seconds) files past the retention are looked for.
EXPIRE_EVERY = 60.0
# How long the writer waits for more answers after the first, so that a slow stream of
# requests is written a few transactions a second rather than one per request (each costs
# the gateway's CPU and the event loop the GIL). A flush or close cuts the wait short.
LINGER = 0.25
# Readers (the feedback route, the monitor job) hold a file only briefly.
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


@dataclass(frozen=True)
class _Answer:
    """What a request hands over: cheap references, parsed later by the writer."""

    at: float
    request_id: str
    route: str
    version: str
    rows: Sequence[Any] | None = None  # the rows /predict and /predict/batch answered
    texts: Sequence[Any] | None = None
    body: bytes | None = None  # /invocations: the request as sent, and the answer
    content_type: str = ""
    answer: bytes | None = None


class PredictionLog:
    """One replica's log: `record` from request handlers, a thread that writes."""

    def __init__(
        self,
        folder: Path,
        replica: str,
        *,
        keep_texts: bool = False,
        max_bytes: int = 50_000_000,
        max_age: float = 86_400.0,
        retention: float = 30 * 86_400.0,
        queue_size: int = 10_000,
        linger: float = LINGER,
        listeners: Iterable[Callable[[list[Prediction]], None]] = (),
        expiring: Iterable[Callable[[float], None]] = (),
    ):
        self.folder = folder / "predictions" / replica_folder(replica)
        self.replica = replica
        self.keep_texts = keep_texts
        self.max_bytes, self.max_age, self.retention = max_bytes, max_age, retention
        self.listeners = list(listeners)
        # Told the retention's cutoff (a Unix time) whenever files expire: whatever else
        # keeps text (the feedback store) applies the same retention.
        self.expiring = list(expiring)
        self.linger = linger
        self.path: Path | None = None  # the file being written
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._dropped = 0
        self._count = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._db: sqlite3.Connection | None = None
        self._opened = 0.0
        # After a failed write (a full disk), the next try waits, doubling up to BACKOFF_MAX;
        # answers meanwhile are dropped and counted.
        self._retry_at, self._backoff = 0.0, 0.0
        self._next_expiry = 0.0

    @property
    def dropped(self) -> int:
        """Answers whose predictions were not logged (a full queue, or a failed write)."""
        return self._dropped

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._expire(time.time())
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread and close the file."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    def record(self, route: str, version: str, rows: Sequence[Any], texts: Sequence[Any]) -> None:
        """Log the rows answered to ``texts`` (in order). Never raises, never waits."""
        self._put(_Answer(time.time(), REQUEST_ID.get(), route, version, rows=rows, texts=texts))

    def record_invocation(
        self, version: str, body: bytes, content_type: str, answer: bytes
    ) -> None:
        """Log an `/invocations` call: the request and the scoring server's 200 answer."""
        self._put(
            _Answer(
                time.time(),
                REQUEST_ID.get(),
                "/invocations",
                version,
                body=body,
                content_type=content_type,
                answer=answer,
            )
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is written (False if not within timeout)."""
        if self._thread is None:
            return False
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        self._wake.set()
        return done.wait(timeout)

    def _put(self, answer: _Answer) -> None:
        try:
            self._queue.put_nowait(answer)
        except queue.Full:
            self._drop(1)

    def _drop(self, answers: int) -> None:
        with self._count:
            self._dropped += answers

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            if isinstance(batch[0], _Answer):
                self._wake.wait(self.linger)
            self._wake.clear()
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            answers = [entry for entry in batch if isinstance(entry, _Answer)]
            stopping = _STOP in batch
            if answers:
                self._write(answers)
            for entry in batch:
                if isinstance(entry, threading.Event):
                    entry.set()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _write(self, answers: list[_Answer]) -> None:
        predictions: list[Prediction] = []
        for answer in answers:
            try:
                predictions.extend(self._parse(answer))
            except Exception:  # noqa: BLE001 - one odd answer must not stop the log
                log.warning("prediction log: could not read an answer", exc_info=True)
        now = time.time()
        self._expire(now)  # also while writes fail: expiring is what frees the disk
        if time.monotonic() < self._retry_at:
            self._drop(len(answers))
        else:
            try:
                self._insert(self._file(), predictions)
                self._backoff = 0.0
            except Exception as error:  # noqa: BLE001 - the writer must outlive any failure
                self._backoff = min(max(2 * self._backoff, BACKOFF), BACKOFF_MAX)
                self._retry_at = time.monotonic() + self._backoff
                log.error(
                    "prediction log: %d answers not written (next try in %g s): %s",
                    len(answers),
                    self._backoff,
                    error,
                )
                self._drop(len(answers))
                self._close_file()
        # The live gauges describe the traffic even while the disk refuses the log.
        for listener in self.listeners:
            try:
                listener(predictions)
            except Exception:  # noqa: BLE001
                log.exception("prediction log: a listener failed")

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

    def _expire(self, now: float) -> None:
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

    def _parse(self, answer: _Answer) -> list[Prediction]:
        at = datetime.fromtimestamp(answer.at, UTC).isoformat(timespec="milliseconds")
        if answer.rows is not None:
            rows, texts = list(answer.rows), list(answer.texts or [])
        else:
            rows = _answer_rows(answer.answer or b"")
            texts = _request_texts(answer.body or b"", answer.content_type)
            if len(texts) != len(rows):
                texts = []  # a format not read right: lengths unknown rather than wrong
        predictions = []
        for item, row in enumerate(rows):
            if not isinstance(row, dict):
                continue
            sentiment, confidence = row.get("sentiment"), _number(row.get("confidence"))
            if not isinstance(sentiment, str) or confidence is None:
                continue
            text = texts[item] if item < len(texts) and isinstance(texts[item], str) else None
            predictions.append(
                Prediction(
                    time=at,
                    request_id=answer.request_id,
                    item=item,
                    route=answer.route,
                    replica=self.replica,
                    model_version=answer.version,
                    sentiment=sentiment,
                    confidence=confidence,
                    text_length=len(text) if text is not None else None,
                    known_term_ratio=_number(row.get("known_term_ratio")),
                    text=storable(text) if self.keep_texts and text is not None else None,
                    text_digest=digest(text) if text is not None else None,
                )
            )
        return predictions


_STOP = object()


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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _answer_rows(answer: bytes) -> list[Any]:
    try:
        body = json.loads(answer)
    except ValueError:
        return []
    rows = body.get("predictions") if isinstance(body, dict) else None
    return rows if isinstance(rows, list) else []


def _request_texts(body: bytes, content_type: str) -> list[Any]:
    """The `text` column of an `/invocations` request in any of MLflow's input formats; []
    when it cannot be read (the rows are logged without their lengths)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "text/csv":
        try:
            reader = csv.DictReader(io.StringIO(body.decode("utf-8")))
            return [row.get("text") for row in reader]
        except (UnicodeDecodeError, csv.Error):
            return []
    try:
        request = json.loads(body)
    except ValueError:
        return []
    if not isinstance(request, dict):
        return []
    split = request.get("dataframe_split")
    if isinstance(split, dict):
        columns, data = split.get("columns"), split.get("data")
        if isinstance(columns, list) and "text" in columns and isinstance(data, list):
            at = columns.index("text")
            return [row[at] if isinstance(row, list) and len(row) > at else None for row in data]
        return []
    for key in ("dataframe_records", "instances", "inputs"):
        value = request.get(key)
        if isinstance(value, dict) and isinstance(value.get("text"), list):
            return value["text"]
        if isinstance(value, list):
            return [row.get("text") if isinstance(row, dict) else row for row in value]
    return []
