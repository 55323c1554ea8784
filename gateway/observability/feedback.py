"""True labels for earlier answers, and the accuracy measured from them.

One SQLite file (`<monitor dir>/feedback.sqlite`) is shared by every replica: a label may
come to another gateway than the one that answered, so the prediction it is about is looked
up in every replica's log. One label per prediction: the primary key refuses a second one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.observability import prediction_store
from gateway.observability.prediction_log import PredictionLog

log = logging.getLogger("gateway.feedback")

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    label TEXT NOT NULL,
    text TEXT,
    time TEXT NOT NULL,
    model_version TEXT NOT NULL,
    sentiment TEXT NOT NULL,
    confidence REAL NOT NULL,
    replica TEXT NOT NULL,
    PRIMARY KEY (request_id, item)
);
-- The texts still kept, by time: expiry (every minute) reads only those past retention,
-- not the whole table (100 ms at a million labels).
CREATE INDEX IF NOT EXISTS feedback_text_time ON feedback (time) WHERE text IS NOT NULL;
"""
# Several gateways write the file; a writer waits this long for another's transaction.
BUSY_TIMEOUT = 5.0
# How long a label waits for this replica's log to write what it has queued (a label sent
# right after its answer).
FLUSH_TIMEOUT = 2.0
# Labels being looked up and stored at once (each may wait FLUSH_TIMEOUT and BUSY_TIMEOUT, on
# threads of their own); more get 503 at once rather than queueing without bound.
THREADS, IN_FLIGHT = 2, 32
# The labels since the last count, per version: a range of the table's rowid B-tree, so a
# count costs what arrived since, not the whole table (320 ms at 300,000 labels).
COUNT_SINCE = (
    "SELECT model_version, COUNT(*), SUM(label = sentiment), MAX(rowid) "
    "FROM feedback WHERE rowid > ? GROUP BY model_version"
)

# Its WHERE repeats the index's, so that SQLite uses it.
EXPIRE = "UPDATE feedback SET text = NULL WHERE text IS NOT NULL AND time < ?"


class NotInLog(LookupError):
    """No prediction log file holds the request id (and item)."""


class AlreadyLabelled(Exception):
    """The prediction has a label already."""


class NotTheAnsweredText(ValueError):
    """The text sent with a label is not the review that was answered."""


class Busy(Exception):
    """IN_FLIGHT labels are being stored already."""


@dataclass(frozen=True)
class Feedback:
    request_id: str
    item: int
    label: str
    text: str | None
    time: str
    model_version: str
    sentiment: str
    confidence: float
    replica: str

    @property
    def correct(self) -> bool:
        return self.label == self.sentiment


class FeedbackStore:
    def __init__(self, monitor_dir: Path, log: PredictionLog | None = None):
        self.monitor_dir = monitor_dir
        self.path = monitor_dir / "feedback.sqlite"
        self._log = log
        self._ready = False
        self._threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="feedback")
        self._in_flight = 0
        # Per version: [labels, right], and the last rowid counted (every replica's rows).
        self._counts: dict[str, list[int]] = {}
        self._counted = 0
        self._counting = threading.Lock()

    async def label(self, request_id: str, item: int, label: str, text: str | None) -> Feedback:
        """``submit`` on the store's own threads; Busy when IN_FLIGHT labels are under way."""
        if self._in_flight >= IN_FLIGHT:
            raise Busy
        self._in_flight += 1
        try:
            call = functools.partial(self.submit, request_id, item, label, text)
            return await asyncio.get_running_loop().run_in_executor(self._threads, call)
        finally:
            self._in_flight -= 1

    def submit(self, request_id: str, item: int, label: str, text: str | None) -> Feedback:
        """Record the true ``label`` of a logged prediction.

        Raises NotInLog for a prediction no log file holds, AlreadyLabelled for a second
        label, NotTheAnsweredText for a ``text`` that is not the review answered (its digest
        differs from the logged one). A label can only ever be about the text the model saw:
        what retraining learns from is what was answered. The text kept is the one sent
        (to have it kept, for retraining) or else the logged one (GATEWAY_LOG_TEXTS).
        """
        if self._log is not None:
            self._log.flush(FLUSH_TIMEOUT)
        found = prediction_store.find(self.monitor_dir, request_id, item)
        if found is None:
            raise NotInLog(request_id, item)
        if text is not None and (
            found.text_digest is None or prediction_store.digest(text) != found.text_digest
        ):
            raise NotTheAnsweredText(request_id, item)
        record = Feedback(
            request_id=request_id,
            item=item,
            label=label,
            text=prediction_store.storable(text) if text is not None else found.text,
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            model_version=found.model_version,
            sentiment=found.sentiment,
            confidence=found.confidence,
            replica=found.replica,
        )
        values = asdict(record)
        with self._connect() as db:
            try:
                db.execute(
                    f"INSERT INTO feedback ({', '.join(values)}) "
                    f"VALUES ({', '.join('?' * len(values))})",
                    list(values.values()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyLabelled(request_id, item) from None
        return record

    def accuracy(self) -> dict[str, tuple[int, int]]:
        """Per model version: (labels received, of them where the model was right), counted
        from where the last call stopped."""
        if not self.path.exists():
            return {}
        if not self._counting.acquire(blocking=False):
            return self._snapshot()  # the first count is under way (start): what it has so far
        try:
            with self._connect() as db:
                (top,) = db.execute("SELECT MAX(rowid) FROM feedback").fetchone()
                if (top or 0) < self._counted:  # a new file: count again
                    self._counts, self._counted = {}, 0
                for version, total, right, last in db.execute(COUNT_SINCE, (self._counted,)):
                    counts = self._counts.setdefault(version, [0, 0])
                    counts[0] += int(total)
                    counts[1] += int(right or 0)
                    self._counted = max(self._counted, int(last))
        finally:
            self._counting.release()
        return self._snapshot()

    def expire(self, cutoff: float) -> None:
        """Forget the texts of labels given before ``cutoff`` (a Unix time): the prediction
        log's retention applies to every text kept. The labels stay for the accuracy."""
        if not self.path.exists():
            return
        before = datetime.fromtimestamp(cutoff, UTC).isoformat(timespec="milliseconds")
        with self._connect() as db:
            db.execute(EXPIRE, (before,))

    def start(self) -> None:
        """Count what the store holds already on a thread, not in the first /info or scrape
        (about a second at a million labels)."""
        threading.Thread(target=self._first_count, name="feedback-count", daemon=True).start()

    def _first_count(self) -> None:
        try:
            self.accuracy()
        except Exception as error:  # noqa: BLE001 - the next scrape tries again, and says why
            log.warning("feedback store unreadable: %s", error)

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        return {version: (total, right) for version, (total, right) in list(self._counts.items())}

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.monitor_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            if not self._ready:
                # Readers (scrapes, the monitor job) then never wait for a writer.
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                self._ready = True
            yield db
        finally:
            db.close()
