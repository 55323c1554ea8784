"""A bounded, in-process load generator for reliability tests, and the rows of their report.

Eight asyncio workers (httpx, loopback only) keep /predict, /predict/batch and /invocations
busy from a background thread until stopped, or until a request count or a time limit is
reached. Every response is kept: when it started and ended, its status (or the transport
error), and which model version answered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit

import httpx

REVIEWS = [
    "A wonderful, moving film with a brilliant cast.",
    "Dull, far too long and badly acted.",
    "I loved every minute of it.",
    "The plot made no sense and the ending was awful.",
]
INVOCATION = {"dataframe_split": {"columns": ["text"], "data": [[REVIEWS[0]], [REVIEWS[1]]]}}


@dataclass(frozen=True)
class Answer:
    path: str
    started: float  # time.monotonic()
    ended: float
    status: int | str  # an HTTP status, or the name of the transport error
    version: str | None
    # For a single review answered 200: the review and the confidence it got.
    text: str | None = None
    confidence: float | None = None
    # The X-Gateway-Replica header: which of several gateways answered (None: no answer).
    replica: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Load:
    """``with Load(url) as load: ...``: traffic runs inside the block, and stops at its end."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        concurrency: int = 8,
        max_requests: int = 60_000,
        max_seconds: float = 300.0,
        pause: float = 0.1,
        timeout: float = 30.0,
    ):
        host = urlsplit(url).hostname
        assert host in ("127.0.0.1", "localhost", "::1"), f"load only goes to loopback, not {host}"
        self.url, self.headers = url, headers or {}
        self.concurrency, self.max_requests, self.max_seconds = (
            concurrency,
            max_requests,
            max_seconds,
        )
        # Each worker waits this long between requests, leaving the two cores some room.
        self.pause, self.timeout = pause, timeout
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.started = self.ended = 0.0

    def __enter__(self) -> Self:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 10)
        self.ended = time.monotonic()

    def wait(self, seconds: float) -> None:
        """Let traffic run for ``seconds`` more (less if a bound stops it first)."""
        self._stop.wait(seconds)

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.url, headers=self.headers, timeout=self.timeout, limits=limits
        ) as client:
            await asyncio.gather(*(self._worker(client, i) for i in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient, index: int) -> None:
        deadline = self.started + self.max_seconds
        i = index
        while not self._stop.is_set() and time.monotonic() < deadline:
            if len(self.answers) >= self.max_requests:
                self._stop.set()
                break
            # Worker 0 sends batches, worker 1 MLflow's own format, the others single reviews.
            if index == 0:
                path, body = "/predict/batch", {"texts": REVIEWS}
            elif index == 1:
                path, body = "/invocations", INVOCATION
            else:
                path, body = "/predict", {"text": REVIEWS[i % len(REVIEWS)]}
            started = time.monotonic()
            text = confidence = replica = None
            try:
                response = await client.post(path, json=body)
                status, version = response.status_code, _version(path, response)
                replica = response.headers.get("x-gateway-replica")
                if path == "/predict" and status == 200:
                    text, confidence = body["text"], response.json()["confidence"]
            except httpx.HTTPError as error:
                status, version = type(error).__name__, None
            ended = time.monotonic()
            self.answers.append(
                Answer(path, started, ended, status, version, text, confidence, replica)
            )
            i += 1
            await asyncio.sleep(self.pause)

    # What happened, for assertions and the report.

    def between(self, start: float = 0.0, end: float = float("inf")) -> list[Answer]:
        """Answers to requests sent in [start, end) (time.monotonic())."""
        return [a for a in self.answers if start <= a.started < end]

    def statuses(self, answers: list[Answer] | None = None) -> Counter:
        return Counter(a.status for a in (self.answers if answers is None else answers))

    def versions(self) -> set[str | None]:
        return {a.version for a in self.answers if a.status == 200}

    def mislabelled(self, expected: dict[str, dict[str, float]]) -> list[Answer]:
        """Single-review answers whose confidence is not what the version they name gives.

        ``expected`` maps a version label (`v3`) to that version's confidence per review.
        """
        return [
            a
            for a in self.answers
            if a.confidence is not None and abs(expected[a.version][a.text] - a.confidence) > 1e-9
        ]

    def longest(self) -> float:
        return max((a.seconds for a in self.answers), default=0.0)

    def recovery(self, since: float, until: float = float("inf")) -> float | None:
        """Seconds from ``since`` until the first 200 that came after the last failure
        among requests sent before ``until`` (the next fault, if any).

        None if nothing failed after ``since``.
        """
        after = sorted(self.between(since, until), key=lambda a: a.ended)
        failed = [a for a in after if a.status != 200]
        if not failed:
            return None
        last = failed[-1].ended
        recovered = [a.ended for a in after if a.status == 200 and a.started >= last]
        return (min(recovered) - since) if recovered else float("inf")


def _version(path: str, response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return None
    if path == "/invocations":
        return response.headers.get("x-model-version")
    try:
        return response.json().get("model_version")
    except ValueError:
        return None


@dataclass
class Row:
    """One line of the reliability summary."""

    scenario: str
    sent: int
    statuses: Counter = field(default_factory=Counter)
    longest: float = 0.0
    recovery: float | None = None
    note: str = ""

    @classmethod
    def of(cls, scenario: str, answers: list[Answer], recovery: float | None = None, note=""):
        return cls(
            scenario,
            len(answers),
            Counter(a.status for a in answers),
            max((a.seconds for a in answers), default=0.0),
            recovery,
            note,
        )

    def non_2xx(self) -> str:
        bad = {s: n for s, n in self.statuses.items() if not (isinstance(s, int) and s < 300)}
        return ", ".join(f"{s}: {n:,}" for s, n in sorted(bad.items(), key=str)) or "none"


# Rows collected during the session; tests/reliability/conftest.py prints and saves them.
REPORT: list[Row] = []
