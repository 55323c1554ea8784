"""Coalesce concurrent single texts into one scoring call.

Most of the time a one-review call takes is fixed cost (HTTP, JSON, a DataFrame, the schema
check), so concurrent `/predict` calls are coalesced into one call. Batching is adaptive: a
request that finds a call slot free is sent at once; requests that arrive while every slot is
busy wait for the next free one and then go together (up to the row cap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import ApiError

# One row of a scoring server's answer (its columns: model/signature.py).
Row = dict[str, Any]

QUEUE_FULL = "Too many requests are waiting for the model. Please try again shortly."


class MicroBatcher:
    """Coalesce single texts into batches: sent at once while a call slot is free, and
    gathered into the next call while every slot is busy.

    One call in flight per scoring worker keeps the server busy without making it split its
    CPU between calls, so batches grow with the load and each row's share of a call's fixed
    cost shrinks. At most ``max_waiting`` texts wait; past that a request gets 503 at once
    (with `Retry-After`) instead of a place in a queue it could not leave in time.
    """

    def __init__(
        self,
        call: Callable[[list[str]], Awaitable[tuple[list[Row], str]]],
        max_rows: int,
        max_calls: int,
        max_waiting: int,
    ):
        self._call = call
        self._max_rows = max_rows
        self._max_calls = max_calls
        self._max_waiting = max_waiting
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()

    @property
    def waiting(self) -> int:
        return len(self._pending)

    async def submit(self, text: str) -> tuple[Row, str]:
        if not self._pending and self._in_flight < self._max_calls:
            # A free slot and nobody waiting: this request's own task makes the call.
            self._in_flight += 1
            try:
                rows, version = await self._call([text])
            except BaseException:
                self._in_flight -= 1
                self._flush()
                raise
            await self._hand_over()
            return rows[0], version
        if len(self._pending) >= self._max_waiting:
            raise ApiError(503, QUEUE_FULL, {"Retry-After": "1"})
        entry = (text, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        self._flush()
        try:
            return await entry[1]
        except asyncio.CancelledError:
            # The request's deadline passed, or its client left: it gives up its place.
            if entry in self._pending:
                self._pending.remove(entry)
            raise

    def _flush(self) -> None:
        while self._pending and self._in_flight < self._max_calls:
            batch = self._pending[: self._max_rows]
            del self._pending[: self._max_rows]
            batch = [(text, future) for text, future in batch if not future.done()]
            if batch:
                self._in_flight += 1
                task = asyncio.create_task(self._send(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        try:
            rows, version = await self._call([text for text, _ in batch])
        except Exception as error:  # noqa: BLE001 - every waiter must hear of any failure
            await self._hand_over()
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        except BaseException:
            self._in_flight -= 1
            self._flush()
            raise
        else:
            await self._hand_over()
            for (_, future), row in zip(batch, rows, strict=True):
                if not future.done():
                    future.set_result((row, version))

    async def _hand_over(self) -> None:
        """Free a finished call's slot, and send the texts waiting for it before its answers
        are written: each answer wakes a handler whose write would keep the scoring server
        idle. Two turns of the loop let the new call's task send its request."""
        self._in_flight -= 1
        if self._pending:
            self._flush()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
