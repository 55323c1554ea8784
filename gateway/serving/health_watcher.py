"""Evidence that a scoring server is gone: its process exits, or it stops answering.

Every started server's process is waited on, and the live server and its standby are pinged
every GATEWAY_PING_INTERVAL seconds; GATEWAY_PING_FAILURES unanswered pings in a row mean the
server hangs. A ping the gateway itself could not send (out of file descriptors, say) is no
evidence either way. What to do about a server that is gone is the state machine's call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from gateway.serving.scoring_server import ScoringServer
from gateway.settings import Settings

log = logging.getLogger("gateway.rollout")


class HealthWatcher:
    """Pings what ``watched`` names and waits on every server it is told to ``follow``;
    reports ``exited(server, code)`` and ``hung(server, why)``."""

    def __init__(
        self,
        settings: Settings,
        *,
        watched: Callable[[], list[ScoringServer]],
        exited: Callable[[ScoringServer, int], None],
        hung: Callable[[ScoringServer, str], None],
    ):
        self.settings = settings
        self._watched, self._exited, self._hung = watched, exited, hung
        self.client: aiohttp.ClientSession | None = None  # set when the rollout starts
        self._strikes: dict[ScoringServer, int] = {}  # pings in a row without an answer
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self._spawn(self._ping_loop())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def follow(self, server: ScoringServer) -> None:
        """Report the server's exit when its process ends."""
        self._spawn(self._wait_exit(server))

    def forget(self, server: ScoringServer) -> None:
        """Start counting the server's unanswered pings from zero."""
        self._strikes.pop(server, None)

    async def check(self) -> None:
        """Ping the watched servers once; report those that missed too many in a row."""
        servers = self._watched()
        answers = await asyncio.gather(
            *(s.ping(self.client, self.settings.ping_timeout) for s in servers)
        )
        for server, answered in zip(servers, answers, strict=True):
            if answered is None:
                continue  # the gateway could not ask: no evidence either way
            if answered:
                self._strikes.pop(server, None)
                continue
            strikes = self._strikes[server] = self._strikes.get(server, 0) + 1
            if strikes >= self.settings.ping_failures:
                self._hung(server, f"did not answer {strikes} pings in a row")

    async def _ping_loop(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")
            await asyncio.sleep(max(0.0, self.settings.ping_interval - (time.monotonic() - began)))

    async def _wait_exit(self, server: ScoringServer) -> None:
        code = await server.wait()
        self._exited(server, code)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
