"""The canary's split and its drop-out, with a fake challenger (pure logic)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from gateway.errors import ApiError
from gateway.experiments.canary import Canary, share
from gateway.logs import REQUEST_ID
from gateway.serving.scoring import Upstream
from gateway.settings import Settings
from tests.gateways import misbehaving_scoring_server


class FakeChallenger:
    """The challenger's controller as the scorer sees it (a Router): which server is live."""

    def __init__(self, version: str | None = "2"):
        self.live = Upstream("http://challenger.test", version) if version else None
        self.standby = None

    def lost(self, upstream):
        pass


class FakeScorer:
    def __init__(self, challenger: FakeChallenger):
        self.challenger, self.error, self.calls = challenger, None, 0

    async def predict(self, text):
        rows, version = await self.predict_many([text])
        return rows[0], version

    async def predict_many(self, texts, explain=False, top=5):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return [{"sentiment": "positive", "confidence": 0.7} for _ in texts], "2"

    async def aclose(self):
        pass


def make(fraction: float):
    challenger = FakeChallenger()
    scorer = FakeScorer(challenger)
    canary = Canary(Settings(_env_file=None, canary_fraction=fraction), challenger, scorer)
    return canary, scorer, challenger


def test_the_split_is_stable_and_close_to_the_fraction():
    keys = [f"client-{i}" for i in range(20_000)]
    inside = [share(key) < 0.2 for key in keys]
    assert abs(sum(inside) / len(keys) - 0.2) < 0.01
    assert inside == [share(key) < 0.2 for key in keys]  # same key, same side
    assert share("client-1") == 0.33991802320486025  # the same on every replica, every run


def test_keys_in_the_canary_are_answered_by_the_challenger():
    async def main():
        canary, scorer, _ = make(0.5)
        inside = next(f"k{i}" for i in range(100) if share(f"k{i}") < 0.5)
        outside = next(f"k{i}" for i in range(100) if share(f"k{i}") >= 0.5)
        assert await canary.predict_many(outside, ["a"]) is None
        rows, version = await canary.predict_many(inside, ["a", "b"])
        assert version == "2" and len(rows) == 2
        REQUEST_ID.set(inside)  # no X-Canary-Key: the request id decides
        assert await canary.predict_many(None, ["a"]) is not None
        assert canary.info()["canary_requests"] == 2

    asyncio.run(main())


def test_a_failing_challenger_drops_out_at_once_until_it_has_a_new_server():
    async def main():
        canary, scorer, challenger = make(1.0)
        registry = CollectorRegistry()
        registry.register(canary)
        scorer.error = ApiError(500, "Prediction failed: boom")
        assert await canary.predict_many("k", ["a"]) is None  # production answers it
        scorer.error = None
        assert await canary.predict_many("k", ["a"]) is None  # out: not even asked
        assert scorer.calls == 1
        assert canary.info()["canary_dropped"] and canary.fallbacks == 1
        text = generate_latest(registry).decode()
        assert "sentiment_canary_dropped 1.0" in text
        assert "sentiment_canary_fallbacks_total 1.0" in text

        challenger.live = Upstream("http://challenger.test:2", "2")  # restarted
        assert await canary.predict_many("k", ["a"]) is not None
        assert not canary.info()["canary_dropped"]

    asyncio.run(main())


def test_no_canary_without_a_challenger_or_at_fraction_zero():
    async def main():
        canary, scorer, challenger = make(0.0)
        assert await canary.predict_many("k", ["a"]) is None
        canary, scorer, challenger = make(1.0)
        challenger.live = None
        assert await canary.predict_many("k", ["a"]) is None
        assert scorer.calls == 0

    asyncio.run(main())


def test_a_slow_challenger_costs_one_short_wait_then_sits_out_its_backoff():
    """Its own deadline, not the request's: production still has its time to answer."""
    with misbehaving_scoring_server(delay=20) as url:
        challenger = FakeChallenger()
        challenger.live = Upstream(url, "2")
        settings = Settings(
            _env_file=None,
            canary_fraction=1.0,
            request_timeout=30,
            canary_timeout=0.5,
            canary_backoff=1.0,
        )
        canary = Canary(settings, challenger)

        async def main():
            began = time.monotonic()
            assert await canary.predict_many("k", ["stall"]) is None  # production answers
            waited = time.monotonic() - began
            assert waited < 10, f"waited {waited:.1f} s for the challenger"
            assert canary.dropped and canary.fallbacks == 1
            assert await canary.predict_many("k", ["stall"]) is None  # not asked again
            assert canary.fallbacks == 1
            await asyncio.sleep(1.1)
            assert not canary.dropped, "back in the canary after its back-off"
            await canary.aclose()

        asyncio.run(main())
