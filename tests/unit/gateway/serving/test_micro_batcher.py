"""The bounded batching queue, driven with a fake call function."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ApiError
from gateway.serving.micro_batcher import QUEUE_FULL, MicroBatcher


class Gate:
    """A fake call function that holds every call until released, and records them."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.open = asyncio.Event()

    async def __call__(self, texts: list[str]):
        self.calls.append(texts)
        await self.open.wait()
        return [{"sentiment": "positive", "confidence": 0.9, "text": t} for t in texts], "1"


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def test_the_queue_is_bounded_and_a_full_queue_answers_503_at_once():
    async def scenario():
        gate = Gate()
        batcher = MicroBatcher(gate, max_rows=64, max_calls=1, max_waiting=3)
        first = asyncio.create_task(batcher.submit("t0"))  # takes the only call slot
        await until(lambda: gate.calls)
        waiting = [asyncio.create_task(batcher.submit(f"t{i}")) for i in (1, 2, 3)]
        await until(lambda: batcher.waiting == 3)
        with pytest.raises(ApiError) as refused:
            await batcher.submit("one too many")
        gate.open.set()
        answers = await asyncio.gather(first, *waiting)
        return refused.value, answers, gate.calls

    refused, answers, calls = asyncio.run(scenario())
    assert (refused.status, refused.detail) == (503, QUEUE_FULL)
    assert refused.headers == {"Retry-After": "1"}
    assert [row["text"] for row, _ in answers] == ["t0", "t1", "t2", "t3"]
    assert calls == [["t0"], ["t1", "t2", "t3"]], "the waiting texts went together"


def test_the_next_batch_is_sent_before_the_last_one_is_answered():
    """Answering a batch wakes a handler per row and each writes its answer; the scoring
    server gets the next batch first instead of idling through those writes."""

    async def scenario():
        events: list[tuple[str, object]] = []
        releases: list[asyncio.Event] = []

        async def call(texts: list[str]):
            events.append(("call", texts))
            releases.append(asyncio.Event())
            await releases[-1].wait()
            return [{"sentiment": "positive", "confidence": 0.9} for _ in texts], "1"

        async def ask(text: str):
            await batcher.submit(text)
            events.append(("answered", text))

        batcher = MicroBatcher(call, max_rows=64, max_calls=1, max_waiting=10)
        first = asyncio.create_task(ask("t0"))  # takes the only call slot
        await until(lambda: len(releases) == 1)
        tasks = [first, *(asyncio.create_task(ask(t)) for t in ("t1", "t2"))]
        await until(lambda: batcher.waiting == 2)
        releases[0].set()
        await until(lambda: len(releases) == 2)  # t1 and t2 went in one call
        tasks += [asyncio.create_task(ask(t)) for t in ("t3", "t4")]
        await until(lambda: batcher.waiting == 2)
        releases[1].set()
        await until(lambda: len(releases) == 3)
        releases[2].set()
        await asyncio.gather(*tasks)
        return events

    events = asyncio.run(scenario())
    assert [e for e in events if e[0] == "call"] == [
        ("call", ["t0"]),
        ("call", ["t1", "t2"]),
        ("call", ["t3", "t4"]),
    ]
    # After a lone request's own call, and after a batch's.
    assert events.index(("call", ["t1", "t2"])) < events.index(("answered", "t0"))
    assert events.index(("call", ["t3", "t4"])) < events.index(("answered", "t1"))


def test_a_waiter_that_gives_up_frees_its_place():
    async def scenario():
        gate = Gate()
        batcher = MicroBatcher(gate, max_rows=64, max_calls=1, max_waiting=2)
        first = asyncio.create_task(batcher.submit("t0"))
        await until(lambda: gate.calls)
        impatient = asyncio.create_task(batcher.submit("gives up"))
        patient = asyncio.create_task(batcher.submit("waits"))
        await until(lambda: batcher.waiting == 2)
        impatient.cancel()
        await until(lambda: batcher.waiting == 1)
        late = asyncio.create_task(batcher.submit("late"))  # fits: the place was freed
        await until(lambda: batcher.waiting == 2)
        gate.open.set()
        await asyncio.gather(first, patient, late)
        return gate.calls

    assert asyncio.run(scenario()) == [["t0"], ["waits", "late"]]
