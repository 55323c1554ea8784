"""Mirror a share of the traffic to the challenger and compare its answers with production's.

Design:
- `mirror()` is called after the user's answer is known and never waits: it puts the texts
  and production's rows in a bounded queue (GATEWAY_SHADOW_QUEUE texts) and returns. When
  the queue is full the new work is shed and counted: under saturation the shadow gives way
  first, the user's traffic never waits for it.
- One worker empties the queue, sending what waits (up to GATEWAY_BATCH_MAX_ROWS texts) in
  one `/invocations` call to the challenger, so the shadow has at most one call in flight and
  takes at most the CPU of one scoring call at a time.
- GATEWAY_SHADOW_FRACTION of /predict and /predict/batch requests are mirrored (a random
  draw per request). Requests asking for an explanation are mirrored without it.
- Per request: whether the labels agree (for a batch, row by row), the difference between
  the two probabilities of `positive`, the challenger's latency, and its errors. Figures are
  kept per challenger version (a new version starts from zero) and shown in /metrics and in
  /info under `challenger`, with the request ids of the latest disagreements, never texts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.errors import ApiError
from gateway.logs import REQUEST_ID
from gateway.serving.registry import label
from gateway.serving.rollout import Controller
from gateway.serving.scoring import Row, Scorer
from gateway.settings import Settings

log = logging.getLogger("gateway.shadow")

LATEST_DISAGREEMENTS = 10


@dataclass
class Mirrored:
    request_id: str
    texts: list[str]
    rows: list[Row]  # production's answers
    challenger: str  # the version it was meant for (its server may be gone by the call)


@dataclass
class Figures:
    """What the shadow learnt about one challenger version."""

    version: str
    requests: int = 0  # compared
    rows: int = 0  # compared
    agreeing_rows: int = 0
    difference_sum: float = 0.0  # of |P(positive) challenger - P(positive) production|
    errors: int = 0  # requests the challenger failed
    disagreements: deque[str] = field(default_factory=lambda: deque(maxlen=LATEST_DISAGREEMENTS))

    @property
    def agreement(self) -> float | None:
        return self.agreeing_rows / self.rows if self.rows else None

    @property
    def mean_difference(self) -> float | None:
        return self.difference_sum / self.rows if self.rows else None


def positive_probability(row: Row) -> float:
    confidence = float(row["confidence"])
    return confidence if row["sentiment"] == "positive" else 1.0 - confidence


class Shadow:
    """The mirror queue, its worker, and the comparison figures (a Prometheus collector)."""

    def __init__(
        self,
        settings: Settings,
        challenger: Controller,
        registry: CollectorRegistry | None = None,
        scorer: Scorer | None = None,
    ):
        self._challenger = challenger
        self._fraction = settings.shadow_fraction
        self._max_waiting = settings.shadow_queue
        self._max_rows = settings.batch_max_rows
        # Its own pool and no batcher: the worker batches already.
        self._scorer = scorer or Scorer(settings.model_copy(update={"batching": False}), challenger)
        self._queue: deque[Mirrored] = deque()
        self._waiting = 0  # texts in the queue
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.shed = 0  # texts
        self.figures: dict[str, Figures] = {}
        self.latency = Histogram(
            "sentiment_shadow_latency_seconds",
            "Time the challenger took to answer a mirrored call.",
            ["version"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        if registry is not None:
            registry.register(self)

    def start(self) -> None:
        self._task = asyncio.create_task(self._work())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._scorer.aclose()

    @property
    def waiting(self) -> int:
        return self._waiting

    def mirror(self, texts: list[str], rows: list[Row], version: str) -> None:
        """Queue a copy of an answered request for the challenger, if one runs; never waits."""
        challenger = self._challenger.live
        if challenger is None or challenger.version == version or not self._fraction:
            return
        if self._fraction < 1.0 and random.random() >= self._fraction:
            return
        if self._waiting + len(texts) > self._max_waiting:
            self.shed += len(texts)
            return
        self._queue.append(Mirrored(REQUEST_ID.get(), list(texts), list(rows), challenger.version))
        self._waiting += len(texts)
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take()
                try:
                    await self._compare(batch)
                except Exception:
                    log.exception("shadow comparison failed")

    def _take(self) -> list[Mirrored]:
        """The oldest requests, whole, up to the row cap (at least one request)."""
        batch: list[Mirrored] = []
        rows = 0
        while self._queue and (not batch or rows + len(self._queue[0].texts) <= self._max_rows):
            item = self._queue.popleft()
            batch.append(item)
            rows += len(item.texts)
        self._waiting -= rows
        return batch

    async def _compare(self, batch: list[Mirrored]) -> None:
        texts = [text for item in batch for text in item.texts]
        began = time.perf_counter()
        try:
            answers, version = await self._scorer.predict_many(texts)
        except ApiError as error:
            # Counted for the version asked, which keeps its figures: a crash and restart of
            # its server is no new challenger.
            self._figures(batch[-1].challenger).errors += len(batch)
            log.warning("challenger failed a mirrored call: %s", error.detail)
            return
        self.latency.labels(label(version)).observe(time.perf_counter() - began)
        figures = self._figures(version)
        position = 0
        for item in batch:
            theirs = answers[position : position + len(item.texts)]
            position += len(item.texts)
            agreeing = 0
            for ours, other in zip(item.rows, theirs, strict=True):
                agreeing += ours["sentiment"] == other["sentiment"]
                figures.difference_sum += abs(
                    positive_probability(other) - positive_probability(ours)
                )
            figures.requests += 1
            figures.rows += len(item.texts)
            figures.agreeing_rows += agreeing
            if agreeing < len(item.texts):
                figures.disagreements.append(item.request_id)

    def _figures(self, version: str) -> Figures:
        if version not in self.figures:
            self.figures = {version: Figures(version)}  # a new challenger starts from zero
        return self.figures[version]

    def current(self) -> Figures | None:
        live = self._challenger.live
        if live is None:
            return None
        return self.figures.get(live.version) or Figures(live.version)

    def info(self) -> dict | None:
        """What /info shows under `challenger` (null while none runs)."""
        figures, live = self.current(), self._challenger.live
        if figures is None or live is None:
            return None
        return {
            "model_version": label(figures.version),
            "scoring_server": live.url,
            "shadow_fraction": self._fraction,
            "requests_compared": figures.requests,
            "rows_compared": figures.rows,
            "agreement": figures.agreement,
            "mean_confidence_difference": figures.mean_difference,
            "errors": figures.errors,
            "shed": self.shed,
            "latest_disagreements": list(figures.disagreements),
        }

    def collect(self):
        requests = CounterMetricFamily(
            "sentiment_shadow_requests",
            "Requests mirrored to the challenger and compared.",
            labels=["version"],
        )
        errors = CounterMetricFamily(
            "sentiment_shadow_errors",
            "Mirrored requests the challenger failed.",
            labels=["version"],
        )
        agreement = GaugeMetricFamily(
            "sentiment_shadow_agreement_ratio",
            "Share of compared reviews the challenger labels as production does.",
            labels=["version"],
        )
        difference = GaugeMetricFamily(
            "sentiment_shadow_confidence_difference",
            "Mean absolute difference of P(positive), challenger against production.",
            labels=["version"],
        )
        for figures in self.figures.values():
            version = [label(figures.version)]
            requests.add_metric(version, figures.requests)
            errors.add_metric(version, figures.errors)
            # Both None until a row is compared.
            if (agreeing := figures.agreement) is not None:
                agreement.add_metric(version, agreeing)
            if (mean_difference := figures.mean_difference) is not None:
                difference.add_metric(version, mean_difference)
        yield from (requests, errors, agreement, difference)
        yield CounterMetricFamily(
            "sentiment_shadow_shed",
            "Reviews not mirrored because the shadow queue was full.",
            value=self.shed,
        )
        yield GaugeMetricFamily(
            "sentiment_shadow_waiting", "Reviews waiting to be mirrored.", value=self._waiting
        )
