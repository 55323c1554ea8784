"""True labels for earlier answers, and the accuracy measured from them.

Labels go to the log store every replica shares (feedback.sqlite beside the prediction files,
or the PostgreSQL database): a label may come to another gateway than the one that answered,
so the prediction it is about is looked up in every replica's log. One label per prediction:
the store refuses a second one. Every database call runs on the store's own threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import SQLAlchemyError

from gateway.observability.prediction_log import PredictionLog
from monitoring.log_store.store import AlreadyLabelled, LogStore
from monitoring.log_store.tables import Feedback, digest, iso, storable

__all__ = [
    "AlreadyLabelled",
    "Busy",
    "FeedbackStore",
    "NotInLog",
    "NotTheAnsweredText",
    "StoreUnavailable",
]

log = logging.getLogger("gateway.feedback")

# How long a label waits for this replica's log to write what it has queued (a label sent
# right after its answer).
FLUSH_TIMEOUT = 2.0
# Labels being looked up and stored at once (each may wait FLUSH_TIMEOUT and the database, on
# threads of their own); more get 503 at once rather than queueing without bound.
THREADS, IN_FLIGHT = 2, 32
# Seconds between counts of the labels other replicas stored (a scrape reads the last count),
# and between full counts: on PostgreSQL a label may commit after one with a higher id was
# counted, and only a full count sees it.
COUNT_EVERY, RECOUNT_EVERY = 5.0, 600.0


class NotInLog(LookupError):
    """No replica's log holds the request id (and item)."""


class NotTheAnsweredText(ValueError):
    """The text sent with a label is not the review that was answered."""


class Busy(Exception):
    """IN_FLIGHT labels are being stored already."""


class StoreUnavailable(Exception):
    """The log store did not answer (a database restarting); nothing was stored."""


class FeedbackStore:
    def __init__(self, store: LogStore, log: PredictionLog | None = None):
        self.store = store
        self._log = log
        self._threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="feedback")
        self._in_flight = 0
        # Per version: [labels, right], and the last label id counted (every replica's).
        self._counts: dict[str, list[int]] = {}
        self._counted = 0
        self._counting = threading.Lock()
        self._stop = threading.Event()

    async def label(self, request_id: str, item: int, label: str, text: str | None) -> Feedback:
        """``submit`` on the store's own threads; Busy when IN_FLIGHT labels are under way."""
        if self._in_flight >= IN_FLIGHT:
            raise Busy
        self._in_flight += 1
        try:
            call = functools.partial(self.submit, request_id, item, label, text)
            return await asyncio.get_running_loop().run_in_executor(self._threads, call)
        except SQLAlchemyError as error:
            log.warning("feedback store: %s", error)
            raise StoreUnavailable from None
        finally:
            self._in_flight -= 1

    def submit(self, request_id: str, item: int, label: str, text: str | None) -> Feedback:
        """Record the true ``label`` of a logged prediction.

        Raises NotInLog for a prediction no replica logged, AlreadyLabelled for a second
        label, NotTheAnsweredText for a ``text`` that is not the review answered (its digest
        differs from the logged one). A label can only ever be about the text the model saw:
        what retraining learns from is what was answered. The text kept is the one sent
        (to have it kept, for retraining) or else the logged one (GATEWAY_LOG_TEXTS).
        """
        if self._log is not None:
            self._log.flush(FLUSH_TIMEOUT)
        found = self.store.find(storable(request_id), item)
        if found is None:
            raise NotInLog(request_id, item)
        if text is not None and (found.text_digest is None or digest(text) != found.text_digest):
            raise NotTheAnsweredText(request_id, item)
        record = Feedback(
            request_id=found.request_id,
            item=item,
            label=label,
            text=storable(text) if text is not None else found.text,
            time=iso(time.time()),
            model_version=found.model_version,
            sentiment=found.sentiment,
            confidence=found.confidence,
            replica=found.replica,
        )
        self.store.add_label(record)
        try:
            self._count()  # this replica's own label shows at once
        except Exception as error:  # noqa: BLE001 - stored all the same; the next count sees it
            log.warning("feedback store: counting failed: %s", error)
        return record

    def accuracy(self) -> dict[str, tuple[int, int]]:
        """Per model version: (labels received, of them where the model was right), as last
        counted (no database call: a scrape and /info read it on the event loop)."""
        return {version: (total, right) for version, (total, right) in list(self._counts.items())}

    def start(self) -> None:
        """Count what the store holds already, then what other replicas add, on a thread."""
        threading.Thread(target=self._keep_counting, name="feedback-count", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._threads.shutdown(wait=False)

    def _keep_counting(self) -> None:
        recount_at = time.monotonic() + RECOUNT_EVERY
        while True:
            try:
                if time.monotonic() >= recount_at:
                    recount_at = time.monotonic() + RECOUNT_EVERY
                    self._count(full=True)
                else:
                    self._count()
            except Exception as error:  # noqa: BLE001 - the next count tries again, and says why
                log.warning("feedback store unreadable: %s", error)
            if self._stop.wait(COUNT_EVERY):
                return

    def _count(self, full: bool = False) -> None:
        """Add the labels stored since the last count (any replica's), or count them all."""
        with self._counting:
            rows, top = self.store.count_labels(0 if full else self._counted)
            if not full and top < self._counted:  # a new store: count again
                full, (rows, top) = True, self.store.count_labels(0)
            counted = {} if full else {v: list(c) for v, c in self._counts.items()}
            last_id = 0 if full else self._counted
            for version, total, right, last in rows:
                counts = counted.setdefault(version, [0, 0])
                counts[0] += total
                counts[1] += right
                last_id = max(last_id, last)
            self._counts, self._counted = counted, last_id
