"""The shadow's queue, shedding and comparison, with a fake challenger (pure logic); a real
challenger is in tests/integration/test_gateway_shadow.py."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from gateway.errors import ApiError
from gateway.experiments.shadow import Shadow
from gateway.logs import REQUEST_ID
from gateway.serving.scoring import Upstream
from gateway.settings import Settings


class FakeChallenger:
    def __init__(self, version: str | None = "2"):
        self.live = Upstream("http://challenger.test", version) if version else None

    def lost(self, upstream) -> None:
        pass


class FakeScorer:
    """Answers `negative` to texts containing "bad", else `positive`; can be held or fail."""

    def __init__(self, challenger: FakeChallenger):
        self.challenger = challenger
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: ApiError | None = None

    async def predict_many(self, texts):
        self.calls.append(list(texts))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        rows = [
            {"sentiment": "negative" if "bad" in t else "positive", "confidence": 0.8}
            for t in texts
        ]
        return rows, self.challenger.live.version

    async def aclose(self) -> None:
        pass


def positive(confidence: float = 0.9) -> dict:
    return {"sentiment": "positive", "confidence": confidence}


def make(**settings):
    challenger = FakeChallenger(settings.pop("challenger", "2"))
    scorer = FakeScorer(challenger)
    registry = CollectorRegistry()
    config = Settings(_env_file=None, **settings)
    shadow = Shadow(config, challenger, registry, scorer=scorer)
    return shadow, scorer, challenger, registry


async def drained(shadow: Shadow) -> None:
    for _ in range(100):
        await asyncio.sleep(0)
        if not shadow.waiting:
            await asyncio.sleep(0)
            return
    raise AssertionError("the shadow queue did not empty")


def test_mirrored_requests_are_compared_per_row():
    async def main():
        shadow, scorer, _, registry = make()
        shadow.start()
        try:
            REQUEST_ID.set("req-agree")
            shadow.mirror(["good film"], [positive(0.9)], "1")
            REQUEST_ID.set("req-differ")
            shadow.mirror(["good film", "bad film"], [positive(0.6), positive(0.7)], "1")
            assert shadow.waiting == 3  # queued, not sent: mirror() never waits
            await drained(shadow)
        finally:
            await shadow.close()
        assert scorer.calls == [["good film", "good film", "bad film"]]  # one call
        info = shadow.info()
        assert info["model_version"] == "v2"
        assert info["requests_compared"] == 2 and info["rows_compared"] == 3
        assert info["agreement"] == 2 / 3
        # |0.8-0.9|, |0.8-0.6|, |0.2-0.7|
        assert abs(info["mean_confidence_difference"] - (0.1 + 0.2 + 0.5) / 3) < 1e-9
        assert info["latest_disagreements"] == ["req-differ"]
        text = generate_latest(registry).decode()
        assert 'sentiment_shadow_requests_total{version="v2"} 2.0' in text
        assert 'sentiment_shadow_agreement_ratio{version="v2"} 0.666' in text
        assert 'sentiment_shadow_latency_seconds_count{version="v2"} 1.0' in text

    asyncio.run(main())


def test_a_full_queue_sheds_the_shadow_work_and_counts_it():
    async def main():
        shadow, scorer, _, registry = make(shadow_queue=3)
        scorer.gate.clear()  # the challenger is slow: its call stays open
        shadow.start()
        try:
            shadow.mirror(["a"], [positive()], "1")
            await asyncio.sleep(0)  # the worker takes it and waits on the challenger
            for _ in range(5):
                shadow.mirror(["b"], [positive()], "1")
            assert shadow.waiting == 3 and shadow.shed == 2
            scorer.gate.set()
            await drained(shadow)
        finally:
            await shadow.close()
        assert shadow.info()["requests_compared"] == 4
        assert "sentiment_shadow_shed_total 2.0" in generate_latest(registry).decode()

    asyncio.run(main())


def test_challenger_errors_are_counted_and_never_raised():
    async def main():
        shadow, scorer, _, registry = make()
        scorer.error = ApiError(503, "The model is not loaded.")
        shadow.start()
        try:
            shadow.mirror(["a"], [positive()], "1")
            await drained(shadow)
        finally:
            await shadow.close()
        assert shadow.info()["errors"] == 1 and shadow.info()["requests_compared"] == 0
        assert (
            'sentiment_shadow_errors_total{version="v2"} 1.0' in generate_latest(registry).decode()
        )

    asyncio.run(main())


def test_nothing_is_mirrored_without_a_challenger_or_to_the_answering_version():
    async def main():
        shadow, _, challenger, _ = make()
        shadow.mirror(["a"], [positive()], "2")  # production answered with v2 itself
        assert shadow.waiting == 0
        challenger.live = None
        shadow.mirror(["a"], [positive()], "1")
        assert shadow.waiting == 0 and shadow.info() is None

        shadow, _, _, _ = make(shadow_fraction=0.0)
        shadow.mirror(["a"], [positive()], "1")
        assert shadow.waiting == 0

    asyncio.run(main())


def test_a_new_challenger_version_starts_from_zero():
    async def main():
        shadow, _, challenger, registry = make()
        shadow.start()
        try:
            shadow.mirror(["bad"], [positive()], "1")
            await drained(shadow)
            assert shadow.info()["agreement"] == 0.0
            challenger.live = Upstream("http://challenger.test", "3")
            assert shadow.info()["requests_compared"] == 0
            shadow.mirror(["good"], [positive()], "1")
            await drained(shadow)
        finally:
            await shadow.close()
        assert shadow.info()["model_version"] == "v3" and shadow.info()["agreement"] == 1.0
        assert (
            'sentiment_shadow_requests_total{version="v2"}'
            not in generate_latest(registry).decode()
        )

    asyncio.run(main())


def test_a_challenger_crash_keeps_its_figures():
    async def main():
        shadow, scorer, challenger, _ = make()
        shadow.start()
        try:
            shadow.mirror(["bad"], [positive()], "1")
            await drained(shadow)
            shadow.mirror(["good"], [positive()], "1")
            challenger.live = None  # its server died before the call
            scorer.error = ApiError(503, "The model is not loaded.")
            await drained(shadow)
            challenger.live = Upstream("http://challenger.test:2", "2")  # restarted
        finally:
            await shadow.close()
        info = shadow.info()
        assert info["errors"] == 1 and info["rows_compared"] == 1 and info["agreement"] == 0.0

    asyncio.run(main())
