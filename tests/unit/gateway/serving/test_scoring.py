"""The scoring client's own logic: the one deadline per request, and which connection errors
count as a dead scoring server.

The deadline and the connection errors are driven with real sockets on loopback (an aiohttp
server that answers slowly, a port nobody listens on, and this process really out of file
descriptors).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import socket
from contextlib import asynccontextmanager, contextmanager

import pytest
from aiohttp import web

from gateway.errors import NOT_LOADED, ApiError
from gateway.serving.scoring import (
    OUT_OF_RESOURCES,
    Answer,
    Scorer,
    Upstream,
    without_stack_trace,
)
from gateway.settings import Settings


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


@asynccontextmanager
async def scoring_server(seconds: float, confidence: float = 0.75, received: list | None = None):
    """A stand-in `/invocations` that answers every row with ``confidence`` after ``seconds``
    and appends each call's row count to ``received``."""
    received = [] if received is None else received

    async def invocations(request: web.Request) -> web.Response:
        rows = (await request.json())["dataframe_split"]["data"]
        received.append(len(rows))
        await asyncio.sleep(seconds)
        predictions = [{"sentiment": "positive", "confidence": confidence} for _ in rows]
        return web.json_response({"predictions": predictions})

    app = web.Application()
    app.router.add_post("/invocations", invocations)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Router:
    def __init__(self, url: str, standby: str | None = None, standby_version: str = "7"):
        self.live: Upstream | None = Upstream(url, "7")
        self.standby = Upstream(standby, standby_version) if standby else None
        self.lost_calls: list[Upstream] = []

    def lost(self, upstream: Upstream) -> None:
        self.lost_calls.append(upstream)
        if upstream is self.live:  # as the supervisor: only the live server's loss counts
            self.live = None


class Failover(Router):
    """As the supervisor when the live server is lost: its standby takes over."""

    def lost(self, upstream: Upstream) -> None:
        self.lost_calls.append(upstream)
        if upstream is self.live:
            self.live, self.standby = self.standby, None


@asynccontextmanager
async def dying_server(drops: int):
    """A server killed mid-call: it drops ``drops`` connections unanswered, then nothing
    listens on its port any more (connections are refused)."""
    dropped = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dropped
        await reader.read(1)
        writer.transport.abort()
        dropped += 1
        if dropped == drops:
            server.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def test_calls_broken_by_a_dying_server_still_reach_the_standby_that_took_over():
    """Calls dropped by the live server as it dies use up tries on it before its port
    refuses and its standby takes over; the standby still gets a try of its own."""

    async def scenario():
        async with dying_server(drops=2) as dying, scoring_server(0.0, 0.25) as standby:
            router = Failover(dying, standby)
            scorer = Scorer(settings(batching=False), router)
            try:
                return await scorer.predict_many(["A fine film."]), router
            finally:
                await scorer.aclose()

    (rows, version), router = asyncio.run(scenario())
    assert (rows, version) == ([{"sentiment": "positive", "confidence": 0.25}], "7")
    assert len(router.lost_calls) == 1


def settings(**values) -> Settings:
    return Settings(tracking_uri="http://127.0.0.1:9", _env_file=None, **values)


def test_one_deadline_covers_the_wait_in_the_queue_and_the_call():
    """Each call takes 1 s, the deadline is 1.5 s: the first request makes it; the second,
    queued behind it, would need 2 s in all and gets 504 (its call alone would fit)."""

    async def scenario():
        async with scoring_server(1.0) as url:
            scorer = Scorer(settings(request_timeout=1.5, batch_max_calls=1), Router(url))
            try:
                first = asyncio.create_task(scorer.predict("first"))
                await until(lambda: scorer._batcher._in_flight == 1)
                second = asyncio.create_task(scorer.predict("second"))
                return await asyncio.gather(first, second, return_exceptions=True)
            finally:
                await scorer.aclose()

    first, second = asyncio.run(scenario())
    assert first == ({"sentiment": "positive", "confidence": 0.75}, "7")
    assert isinstance(second, ApiError)
    assert (second.status, second.detail) == (504, "Prediction timed out after 1.5s.")


def test_a_refused_connection_reports_the_server_lost():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        router = Router(f"http://127.0.0.1:{sock.getsockname()[1]}")
        upstream = router.live

        async def scenario():
            scorer = Scorer(settings(), router)
            try:
                with pytest.raises(ApiError) as error:
                    await scorer.predict("A fine film.")
                return error.value
            finally:
                await scorer.aclose()

        error = asyncio.run(scenario())
    assert (error.status, error.detail) == (503, NOT_LOADED)
    assert router.lost_calls == [upstream]


@contextmanager
def out_of_file_descriptors():
    """This process at its open-file limit, for real: every new socket fails with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 32, hard))
    held = []
    try:
        probe = os.open(os.devnull, os.O_RDONLY)
        try:
            while True:
                held.append(os.dup(probe))
        except OSError as error:
            assert error.errno == errno.EMFILE
        yield
    finally:
        for fd in [*held, probe]:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_gateways_own_exhaustion_is_a_503_that_touches_no_server():
    async def scenario():
        async with scoring_server(0.0) as url:
            router = Router(url)
            scorer = Scorer(settings(), router)
            try:
                # No pooled connection yet: the call needs a new socket, and cannot have one.
                with out_of_file_descriptors(), pytest.raises(ApiError) as error:
                    await scorer.predict("A fine film.")
                answer = await scorer.predict("A fine film.")  # descriptors are back
                return router, error.value, answer
            finally:
                await scorer.aclose()

    router, error, answer = asyncio.run(scenario())
    assert router.lost_calls == [] and router.live is not None, "a healthy server was dropped"
    assert error.status == 503
    assert error.detail == OUT_OF_RESOURCES.format(reason="EMFILE")
    assert error.headers == {"Retry-After": "1"}
    assert answer[1] == "7"


def test_an_upstream_error_body_loses_its_stack_trace_and_keeps_the_rest():
    body = {
        "error_code": "BAD_REQUEST",
        "message": "Failed to predict: no column text",
        "stack_trace": "Traceback (most recent call last):\n  File /srv/model.py ...",
    }
    cleaned = without_stack_trace(Answer(400, json.dumps(body).encode(), "application/json"))
    assert (cleaned.status, cleaned.json()) == (
        400,
        {"error_code": "BAD_REQUEST", "message": "Failed to predict: no column text"},
    )
    ok = Answer(200, b'{"predictions": []}', "application/json")
    assert without_stack_trace(ok) is ok
    csv = Answer(415, b"not json", "text/plain")
    assert without_stack_trace(csv) is csv


def split_batch(texts: int, standby_version: str = "7", standby_refuses: bool = False, **values):
    """Score ``texts`` texts with a live server (confidence 0.75) and a standby (0.25);
    return the confidences in order, the version, and the rows each server received."""

    async def scenario():
        live_rows, standby_rows = [], []
        async with (
            scoring_server(0.0, 0.75, live_rows) as live,
            scoring_server(0.0, 0.25, standby_rows) as standby,
        ):
            if standby_refuses:
                closed = socket.socket()
                closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
                standby = f"http://127.0.0.1:{closed.getsockname()[1]}"
            scorer = Scorer(settings(**values), Router(live, standby, standby_version))
            try:
                rows, version = await scorer.predict_many([f"review {i}" for i in range(texts)])
            finally:
                await scorer.aclose()
                if standby_refuses:
                    closed.close()
        return [row["confidence"] for row in rows], version, live_rows, standby_rows

    return asyncio.run(scenario())


def test_a_large_batch_is_split_between_the_live_server_and_its_standby_in_order():
    confidences, version, live_rows, standby_rows = split_batch(401, batch_split_rows=200)
    assert (live_rows, standby_rows, version) == ([200], [201], "7")
    assert confidences == [0.75] * 200 + [0.25] * 201


def test_a_smaller_batch_or_a_split_turned_off_goes_to_the_live_server_alone():
    assert split_batch(199, batch_split_rows=200)[2:] == ([199], [])
    assert split_batch(1000, batch_split_rows=0)[2:] == ([1000], [])


def test_a_standby_of_another_version_takes_no_part():
    confidences, version, live_rows, standby_rows = split_batch(
        400, standby_version="8", batch_split_rows=200
    )
    assert (live_rows, standby_rows, version, set(confidences)) == ([400], [], "7", {0.75})


def test_a_standby_that_refuses_leaves_its_half_to_the_live_server():
    confidences, version, live_rows, _ = split_batch(
        400, standby_refuses=True, batch_split_rows=200
    )
    assert (sorted(live_rows), version, confidences) == ([200, 200], "7", [0.75] * 400)
