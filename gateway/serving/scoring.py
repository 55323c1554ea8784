"""Talk to the live scoring server's `/invocations`: one pooled client, one deadline per
request, single texts micro-batched (gateway/serving/micro_batcher.py)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from gateway import jsonio
from gateway.errors import ApiError, not_loaded
from gateway.serving.micro_batcher import MicroBatcher, Row
from gateway.settings import Settings
from model.names import LABELS

log = logging.getLogger("gateway.scoring")

OUT_OF_RESOURCES = (
    "The gateway is short of resources ({reason}) and could not reach the model. "
    "Please try again shortly."
)
# A connection refused or reset while connecting: nobody listens there any more.
GONE = {errno.ECONNREFUSED, errno.ECONNRESET}
# The gateway's own exhaustion (file descriptors, memory, local ports): says nothing about
# the scoring server.
EXHAUSTED = {
    errno.EMFILE,
    errno.ENFILE,
    errno.ENOBUFS,
    errno.ENOMEM,
    errno.EADDRNOTAVAIL,
    errno.EADDRINUSE,
}


@dataclass(frozen=True)
class Answer:
    """A scoring server's complete response."""

    status: int
    content: bytes
    content_type: str

    def json(self) -> Any:
        return jsonio.loads(self.content)


class Upstream:
    """One scoring server: where it is, which version it serves, and how many calls it has open."""

    def __init__(self, url: str, version: str):
        self.url = url.rstrip("/")
        self.version = version
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def lease(self):
        self.in_flight += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no call is open on this server (so it can be stopped without losses)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


class Rollout(Protocol):
    """Which server is live (and its standby), and where to report one that refuses."""

    @property
    def live(self) -> Upstream | None: ...

    @property
    def standby(self) -> Upstream | None: ...

    def lost(self, upstream: Upstream) -> None: ...


class Scorer:
    """Every call the gateway makes to the live scoring server goes through here.

    Each request has one deadline (`GATEWAY_REQUEST_TIMEOUT`) for all of it: the wait in the
    batching queue, the call and its retries; past it the answer is 504.
    """

    def __init__(self, settings: Settings, rollout: Rollout):
        self._rollout = rollout
        # aiohttp rather than httpx on this path: a call costs 0.9 ms of gateway CPU against
        # 2.4 ms (measured on 2 cores), and that is most of what the extra hop adds.
        self._session: aiohttp.ClientSession | None = None
        self._max_connections = settings.max_connections
        self._timeout = settings.request_timeout
        self._split_rows = settings.batch_split_rows
        self._batcher = (
            MicroBatcher(
                self.predict_many,
                settings.batch_max_rows,
                settings.batch_calls,
                settings.max_queue,
            )
            if settings.batching
            else None
        )
        self.calls = 0
        self.rows = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: it belongs to the running loop
            self._session = aiohttp.ClientSession(
                # Idle connections are dropped before uvicorn's 5 s keep-alive closes them.
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=2.0),
                # Each request's deadline bounds its calls (see _deadline).
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def waiting(self) -> int:
        """Texts in the batching queue, waiting for a call slot."""
        return self._batcher.waiting if self._batcher is not None else 0

    async def predict(self, text: str, explain: bool = False, top: int = 5) -> tuple[Row, str]:
        async with self._deadline():
            if self._batcher is not None and not explain:
                return await self._batcher.submit(text)
            rows, version = await self._score([text], explain, top)
            return rows[0], version

    async def predict_many(
        self, texts: list[str], explain: bool = False, top: int = 5
    ) -> tuple[list[Row], str]:
        """Score all texts; return the rows and who answered.

        One `/invocations` call, or, for a batch of at least `batch_split_rows` texts while
        the live server has a ready standby, two: half each, so that the idle standby's core
        works too (one scoring server uses one core, and the gateway's own work on a batch
        would otherwise only add to it).
        """
        async with self._deadline():
            helper = self._helper()
            if helper is None or len(texts) < self._split_rows:
                return await self._score(texts, explain, top)
            half = len(texts) // 2
            (first, version), (second, other) = await asyncio.gather(
                self._score(texts[:half], explain, top),
                self._score(texts[half:], explain, top, first_try=helper),
            )
            if other != version:  # promoted between the two calls: one version answers all
                return await self._score(texts, explain, top)
            return first + second, version

    async def invoke(self, content: bytes, content_type: str) -> tuple[Answer, str]:
        """POST to the live server's `/invocations` as is; see `_post`."""
        async with self._deadline():
            return await self._post(content, content_type)

    @asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError:
            raise self._timed_out() from None

    def _timed_out(self) -> ApiError:
        return ApiError(504, f"Prediction timed out after {self._timeout:g}s.")

    def _helper(self) -> Upstream | None:
        """The standby, when batches may be split and it serves the live version."""
        live, standby = self._rollout.live, self._rollout.standby
        if not self._split_rows or live is None or standby is None:
            return None
        return standby if standby.version == live.version else None

    async def _score(
        self, texts: list[str], explain: bool, top: int = 5, first_try: Upstream | None = None
    ) -> tuple[list[Row], str]:
        body: dict[str, Any] = {
            "dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}
        }
        if explain:
            body["params"] = {"explain": True, "top_terms": top}
        response, version = await self._post(jsonio.dumps(body), "application/json", first_try)
        self.calls += 1
        self.rows += len(texts)
        if response.status == 504:
            raise self._timed_out()
        if response.status != 200:
            raise ApiError(500, f"Prediction failed: {_reason(response)}")
        try:
            return predictions(response, len(texts)), version
        except BadPredictions as error:
            raise ApiError(
                500, f"Prediction failed: the scoring server's answer is unusable: {error}"
            ) from None

    async def _post(
        self, content: bytes, content_type: str, first_try: Upstream | None = None
    ) -> tuple[Answer, str]:
        """POST to the live server's `/invocations` (the first try to ``first_try`` if given).

        A refused connection means the live server is gone: the call goes to its standby if
        one took over, else the caller gets a 503 at once. A connection the gateway itself
        cannot open (out of file descriptors, memory or local ports) is a 503 that touches
        no server. Any other broken connection (a stale keep-alive, a server retired by a
        promotion or just killed) is tried again on whichever server is live by then. Three
        tries at most, and a server that takes over after a refusal gets one of its own even
        if the dying one used them all (calls it dropped as it died, then the refusal).
        """
        tries, spare = 3, 1
        while tries:
            tries -= 1
            upstream, first_try = first_try or self._rollout.live, None
            if upstream is None:
                raise not_loaded()
            with upstream.lease():
                try:
                    async with self._client().post(
                        f"{upstream.url}/invocations",
                        data=content,
                        headers={"Content-Type": content_type},
                    ) as response:
                        answer = Answer(
                            response.status,
                            await response.read(),
                            response.headers.get("Content-Type", "application/json"),
                        )
                    return answer, upstream.version
                except aiohttp.ClientConnectorError as error:
                    code = getattr(error.os_error, "errno", None)
                    if code in EXHAUSTED:
                        log.error("cannot open a connection to the scoring server: %s", error)
                        reason = errno.errorcode.get(code, str(code))
                        raise ApiError(
                            503, OUT_OF_RESOURCES.format(reason=reason), {"Retry-After": "1"}
                        ) from None
                    if code in GONE:
                        self._rollout.lost(upstream)
                        if not tries and spare and self._rollout.live not in (None, upstream):
                            tries, spare = 1, 0
                except aiohttp.ClientError:
                    pass
        raise not_loaded()


class BadPredictions(ValueError):
    """A scoring server's 200 answer that is not one prediction per text."""


def predictions(response: Answer, expected: int) -> list[Row]:
    """The rows of a 200 answer, checked: one per text, each a known label and a confidence
    in [0, 1]. Raises BadPredictions saying what is wrong (a broken model can answer
    anything: a dict, a scalar, other columns)."""
    try:
        body = response.json()
    except ValueError:
        raise BadPredictions("the answer is not JSON") from None
    rows = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise BadPredictions(f"the answer has no list of predictions: {_shape(body)}")
    if len(rows) != expected:
        raise BadPredictions(f"{len(rows)} predictions for {expected} texts")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadPredictions(f"prediction {index} is {_shape(row)}, not a row")
        if row.get("sentiment") not in LABELS:
            shown = sorted(row) if "sentiment" not in row else repr(row["sentiment"])[:40]
            raise BadPredictions(f"prediction {index} has no known sentiment: {shown}")
        confidence = row.get("confidence")
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise BadPredictions(f"prediction {index} has no numeric confidence")
        if not 0.0 <= confidence <= 1.0:
            raise BadPredictions(f"prediction {index} has confidence {confidence} outside [0, 1]")
    return rows


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:5]}"
    return f"a {type(value).__name__}"


def _reason(response: Answer) -> str:
    """A one-line reason from MLflow's error body, never its stack trace."""
    try:
        message = str(response.json().get("message", ""))
    except (ValueError, AttributeError):
        message = ""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return (first or f"the scoring server answered {response.status}")[:200]


def without_stack_trace(response: Answer) -> Answer:
    """MLflow's error body for clients: its `error_code` and `message`, never its
    `stack_trace` (which shows the server's code and paths)."""
    if response.status < 400:
        return response
    try:
        body = response.json()
    except ValueError:
        return response
    if not isinstance(body, dict) or "stack_trace" not in body:
        return response
    kept = {key: value for key, value in body.items() if key != "stack_trace"}
    return Answer(response.status, json.dumps(kept).encode(), "application/json")
