"""The prediction log: every prediction the gateway answers, in the log store the monitoring job
reads (monitoring/log_store: SQLite files, or PostgreSQL for gateways on many hosts).

Recording must never slow or fail an answer, so a request only puts what it already holds on
a bounded queue (no parsing, no database); one background thread parses, writes whole batches
in one transaction each, and expires what is past the retention. A full queue drops the
answer and counts it. A write that fails (the database restarts, the disk is full) loses
nothing: its rows wait in memory, up to a bound, and are written with the next batch once
the store answers again; only past the bound are the oldest dropped and counted. Review text
is kept only when asked for (GATEWAY_LOG_TEXTS).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.logs import REQUEST_ID
from gateway.observability.mlflow_formats import answer_rows, request_texts
from monitoring.log_store.store import LogStore
from monitoring.log_store.tables import Prediction, digest, iso, storable

log = logging.getLogger("gateway.prediction_log")

# How many queued answers the writer takes into one transaction at most.
BATCH = 512
# A failed write waits this long before the next, doubling up to the maximum (seconds): a
# database restart (a few seconds) is written out within about a second of its return.
BACKOFF, BACKOFF_MAX = 0.5, 4.0
# How often (seconds) what is past the retention is expired.
EXPIRE_EVERY = 60.0
# How long the writer waits for more answers after the first, so that a slow stream of
# requests is written a few transactions a second rather than one per request (each costs
# the gateway's CPU and the event loop the GIL). A flush or close cuts the wait short.
LINGER = 0.25


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
        store: LogStore,
        replica: str,
        *,
        keep_texts: bool = False,
        retention: float = 30 * 86_400.0,
        queue_size: int = 10_000,
        buffer: int = 100_000,
        linger: float = LINGER,
        listeners: Iterable[Callable[[list[Prediction]], None]] = (),
    ):
        self.store = store
        self.replica = replica
        self.keep_texts = keep_texts
        self.retention = retention
        self.buffer = buffer
        self.listeners = list(listeners)
        self.linger = linger
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._dropped = 0
        self._count = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        # Parsed answers not written yet (a failed write), oldest first: (answers, rows).
        self._pending: deque[tuple[int, list[Prediction]]] = deque()
        self._pending_answers = 0
        # After a failed write, the next try waits, doubling up to BACKOFF_MAX.
        self._retry_at, self._backoff = 0.0, 0.0
        self._next_expiry = 0.0

    @property
    def dropped(self) -> int:
        """Answers whose predictions were not logged (a full queue, or past the buffer)."""
        return self._dropped

    @property
    def buffered(self) -> int:
        """Answers waiting for the store to take them again (after a failed write)."""
        return self._pending_answers

    def start(self) -> None:
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
        """Wait until the writer has taken everything recorded so far: written, or held after
        a failed write (False if not within timeout)."""
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
            try:
                # With rows held after a failed write, wake for the next try even if no
                # answer comes.
                wait = max(self._retry_at - time.monotonic(), 0.05) if self._pending else None
                batch = [self._queue.get(timeout=wait)]
            except queue.Empty:
                self._write([])
                continue
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
            if answers or self._pending:
                self._write(answers, final=stopping)
            for entry in batch:
                if isinstance(entry, threading.Event):
                    entry.set()
        if self._pending_answers:
            log.error("prediction log: %d answers not written at stop", self._pending_answers)
            self._drop(self._pending_answers)
            self._pending.clear()  # counted as dropped now, no longer held
            self._pending_answers = 0
        self.store.close()

    def _write(self, answers: list[_Answer], final: bool = False) -> None:
        predictions: list[Prediction] = []
        for answer in answers:
            try:
                predictions.extend(self._parse(answer))
            except Exception:  # noqa: BLE001 - one odd answer must not stop the log
                log.warning("prediction log: could not read an answer", exc_info=True)
        if answers:
            self._hold(len(answers), predictions)
        self._expire(time.time())  # also while writes fail: expiring is what frees the disk
        if final or time.monotonic() >= self._retry_at:
            self._write_pending()
        # The live gauges describe the traffic even while the store refuses the log.
        for listener in self.listeners:
            try:
                listener(predictions)
            except Exception:  # noqa: BLE001
                log.exception("prediction log: a listener failed")

    def _hold(self, answers: int, predictions: list[Prediction]) -> None:
        """Queue rows to write; past the buffer, the oldest are dropped and counted."""
        self._pending.append((answers, predictions))
        self._pending_answers += answers
        while self._pending_answers > self.buffer and len(self._pending) > 1:
            lost, _ = self._pending.popleft()
            self._pending_answers -= lost
            self._drop(lost)

    def _write_pending(self) -> None:
        rows = [row for _, chunk in self._pending for row in chunk]
        try:
            if rows:
                self.store.write(rows)
        except Exception as error:  # noqa: BLE001 - the writer must outlive any failure
            self._backoff = min(max(2 * self._backoff, BACKOFF), BACKOFF_MAX)
            self._retry_at = time.monotonic() + self._backoff
            log.error(
                "prediction log: %d answers held in memory (next try in %g s): %s",
                self._pending_answers,
                self._backoff,
                error,
            )
            self.store.close()
            return
        if self._backoff:
            log.info("prediction log: %d held answers written", self._pending_answers)
        self._pending.clear()
        self._pending_answers, self._backoff = 0, 0.0

    def _expire(self, now: float) -> None:
        """At most once a minute: forget what is past the retention (predictions, and the
        texts of labels)."""
        if now < self._next_expiry:
            return
        self._next_expiry = now + EXPIRE_EVERY
        try:
            self.store.expire(now - self.retention)
        except Exception as error:  # noqa: BLE001 - the log goes on; the next minute retries
            log.warning("prediction log: expiring failed: %s", error)

    def _parse(self, answer: _Answer) -> list[Prediction]:
        at = iso(answer.at)
        if answer.rows is not None:
            rows, texts = list(answer.rows), list(answer.texts or [])
        else:
            rows = answer_rows(answer.answer or b"")
            texts = request_texts(answer.body or b"", answer.content_type)
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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
