"""Let the challenger answer a stable share of the traffic (GATEWAY_CANARY_FRACTION).

Design:
- The split is by a key: the client's `X-Canary-Key`, else the request's `X-Request-ID`.
  Its SHA-256 maps it to [0, 1); below the fraction the challenger answers. The same key
  always gets the same side, on any gateway replica.
- Its answers are labelled with its version (`model_version`, `X-Model-Version`).
- The challenger has a short deadline of its own (GATEWAY_CANARY_TIMEOUT, 2 s), not the
  request's: a slow challenger must not use up the time production needs to answer (nginx
  would then send the request again).
- A challenger that fails a call (an error, a 503, that deadline, an unusable answer, no
  server) drops out of the canary at once: that request and every later one are answered by
  production for GATEWAY_CANARY_BACKOFF seconds, or until the challenger has a new server.
- Canary answers are not mirrored by the shadow: there is no production answer to compare.
"""

from __future__ import annotations

import hashlib
import logging
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.errors import ApiError
from gateway.logs import REQUEST_ID
from gateway.serving.registry import label
from gateway.serving.rollout import Controller
from gateway.serving.scoring import Row, Scorer, Upstream
from gateway.settings import Settings

log = logging.getLogger("gateway.canary")


def share(key: str) -> float:
    """Where ``key`` falls in [0, 1): the same on every replica and after every restart."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


class Canary:
    def __init__(self, settings: Settings, challenger: Controller, scorer: Scorer | None = None):
        self.fraction = settings.canary_fraction
        self._challenger = challenger
        # Micro-batched like production, with the canary's deadline.
        budget = settings.model_copy(update={"request_timeout": settings.canary_timeout})
        self._scorer = scorer or Scorer(budget, challenger)
        self._backoff = settings.canary_backoff
        self._dropped: Upstream | None = None  # the challenger server that failed
        self._dropped_until = 0.0
        self.answered: dict[str, int] = {}  # by version label
        self.fallbacks = 0

    async def aclose(self) -> None:
        await self._scorer.aclose()

    def _chosen(self, key: str) -> Upstream | None:
        live = self._challenger.live
        if not self.fraction or live is None or self.dropped:
            return None
        return live if share(key) < self.fraction else None

    @property
    def dropped(self) -> bool:
        live = self._challenger.live
        return live is not None and live is self._dropped and time.monotonic() < self._dropped_until

    async def predict_many(
        self, key: str | None, texts: list[str], explain: bool = False, top: int = 5
    ) -> tuple[list[Row], str] | None:
        """The challenger's answer if ``key`` is in the canary and it answers; None: ask
        production."""
        upstream = self._chosen(key or REQUEST_ID.get())
        if upstream is None:
            return None
        try:
            if len(texts) == 1 and not explain:
                row, version = await self._scorer.predict(texts[0])
                rows = [row]
            else:
                rows, version = await self._scorer.predict_many(texts, explain, top)
        except ApiError as error:
            self._drop(upstream, error.detail)
            return None
        answered = label(version)
        self.answered[answered] = self.answered.get(answered, 0) + 1
        return rows, version

    @property
    def version(self) -> str | None:
        """The challenger's version while its server is up."""
        live = self._challenger.live
        return live.version if live is not None else None

    async def score(self, texts: list[str]) -> tuple[list[Row], str]:
        """The challenger's answer when a client names its version (the v2 protocol's
        versioned route): no fallback, its errors are the client's answer."""
        if len(texts) == 1:
            row, version = await self._scorer.predict(texts[0])
            return [row], version
        return await self._scorer.predict_many(texts)

    def _drop(self, upstream: Upstream, why: str) -> None:
        self.fallbacks += 1
        if not self.dropped:
            log.warning(
                "challenger v%s drops out of the canary for %g s: %s",
                upstream.version,
                self._backoff,
                why,
            )
        self._dropped, self._dropped_until = upstream, time.monotonic() + self._backoff

    def info(self) -> dict:
        live = self._challenger.live
        return {
            "canary_fraction": self.fraction,
            "canary_requests": self.answered.get(label(live.version), 0) if live else 0,
            "canary_dropped": self.dropped,
            "canary_fallbacks": self.fallbacks,
        }

    def collect(self):
        answered = CounterMetricFamily(
            "sentiment_canary_requests",
            "Requests the challenger answered in the canary.",
            labels=["version"],
        )
        for version, count in self.answered.items():
            answered.add_metric([version], count)
        yield answered
        yield CounterMetricFamily(
            "sentiment_canary_fallbacks",
            "Canary requests the challenger failed, answered by production instead.",
            value=self.fallbacks,
        )
        yield GaugeMetricFamily(
            "sentiment_canary_dropped",
            "1 while the challenger is out of the canary after a failure.",
            value=int(self.dropped),
        )
