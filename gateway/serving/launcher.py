"""Bring scoring servers up, and stop them, each as a task of its own.

A launch copies the version to the local model cache (if it is not there yet), starts
`mlflow models serve` on a free port (gateway/serving/ports.py), waits until it answers and
smoke-tests it; a server that exits because its port was taken meanwhile is started again at
once on another port, with no back-off. Then it is handed to the rollout's state machine,
which decides what the server is for; a failure is handed over the same way, with whether
the version is broken or only failed to start. The state machine never waits on a launch, so
it can act on a promotion, a crash or a hang meanwhile. Stopping runs in the background too,
after the server's open calls drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from gateway.serving.model_cache import ModelCache
from gateway.serving.ports import Ports
from gateway.serving.registry import Registry, RegistryUnavailable, VersionInfo
from gateway.serving.scoring_server import (
    Factory,
    PortTaken,
    ScoringServer,
    StartFailed,
    require_client,
)
from gateway.serving.smoke_test import SmokeFailed, smoke_test
from gateway.settings import Settings

log = logging.getLogger("gateway.rollout")

Smoke = Callable[[aiohttp.ClientSession | None, ScoringServer], Awaitable[None]]
# Failures a broken version is expected to cause: logged without a traceback.
_EXPECTED = (aiohttp.ClientError, SmokeFailed)
# Starts in a row, each on another port, of a server whose port was taken before it bound it.
PORT_TRIES = 5


@dataclass(eq=False)
class Launch:
    """One server being brought up, as a task of its own."""

    version: str
    standby: bool  # started as a standby of the live version (not reported in last_rollout)
    task: asyncio.Task = field(init=False)  # set by Launcher.launch() as soon as it is made
    server: ScoringServer | None = None  # once it is being started


class Launcher:
    """The launches under way and the servers started and not stopped yet.

    What becomes of a launch is told to the state machine through the callbacks: ``ready``
    (a smoke-tested server), ``failed`` (why, and whether the version is broken),
    ``started`` (a process to watch), ``stopped`` (a server gone for good). It is asked
    ``describe_again`` whether a launch needs the registry's current description of its
    version, or may use the one it has."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        cache: ModelCache,
        servers: Factory,
        smoke: Smoke | None,
        *,
        describe_again: Callable[[Launch], bool],
        started: Callable[[ScoringServer], None],
        ready: Callable[[Launch, ScoringServer], None],
        failed: Callable[[Launch, str, bool], None],
        stopped: Callable[[ScoringServer], None],
    ):
        self.settings, self.registry, self.cache = settings, registry, cache
        self._new_server = servers
        self._smoke: Smoke = smoke or self._smoke_test
        self._describe_again, self._started = describe_again, started
        self._on_ready, self._on_failed, self._on_stopped = ready, failed, stopped
        self._ports = Ports(settings)
        self.client: aiohttp.ClientSession | None = None  # set when the rollout starts
        self.described: dict[str, VersionInfo] = {}
        self.launches: list[Launch] = []
        self.servers: set[ScoringServer] = set()  # started and not stopped yet
        self._stopping: set[ScoringServer] = set()
        self._tasks: set[asyncio.Task] = set()
        self.closing = False

    def launching(self, version: str) -> bool:
        return any(launch.version == version for launch in self.launches)

    def launch(self, version: str, standby: bool) -> Launch:
        launch = Launch(version, standby)
        launch.task = self.spawn(self._bring_up(launch))
        self.launches.append(launch)
        return launch

    def cancel(self, launch: Launch) -> None:
        log.info("start of v%s abandoned: not needed any more", launch.version)
        self.launches.remove(launch)
        launch.task.cancel()

    def adopt(self, server: ScoringServer) -> None:
        """Take over a running server started elsewhere (the challenger's)."""
        self.servers.add(server)
        self._started(server)

    def release(self, server: ScoringServer) -> None:
        """Give a running server away: it is no longer this launcher's to stop."""
        self.servers.discard(server)

    def retire(self, server: ScoringServer, drain: bool = False, kill: bool = False) -> None:
        """Stop a server in the background (after its open calls finish, with ``drain``)."""
        if self.closing or server in self._stopping or server not in self.servers:
            return
        self._stopping.add(server)
        self.spawn(self._stop(server, drain, kill))

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Cancel what is under way and stop every server."""
        self.closing = True
        servers = list(self.servers)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(server.stop() for server in servers))
        self.servers.clear()

    async def _bring_up(self, launch: Launch) -> None:
        """Start, wait ready, smoke-test; then hand the server over, or say why not."""
        version = launch.version
        try:
            server = await self._start(launch)
            await self._smoke(self.client, server)
        except asyncio.CancelledError:
            if launch.server is not None:
                self.retire(launch.server, kill=True)
            raise
        except (StartFailed, RegistryUnavailable, TimeoutError) as error:
            self._failed(launch, f"failed to start: {error}", broken=False)
        except Exception as error:  # whatever else goes wrong, the version is refused
            reason = str(error) or type(error).__name__
            log.warning("v%s is broken", version, exc_info=not isinstance(error, _EXPECTED))
            self._failed(launch, reason, broken=True)
        else:
            self.launches.remove(launch)
            self._on_ready(launch, server)

    async def _start(self, launch: Launch) -> ScoringServer:
        """A server of the version that answers /ping; one whose port was taken before it
        could bind it is replaced at once by one on another port."""
        version = launch.version
        described = self.described.get(version)
        if described is None or self._describe_again(launch):
            described = await self.registry.describe(version) or described
        if described is not None:
            self.described[version] = described
        path = await self.cache.local_copy(version, described)
        for attempt in range(1, PORT_TRIES + 1):
            port = await self._ports.take()
            server = launch.server = self._new_server(version, port, path)
            self.servers.add(server)
            try:
                await server.start()
                self._started(server)
                await server.wait_ready(self.client)
            except PortTaken as error:
                self._ports.avoid(port)
                if attempt == PORT_TRIES:
                    raise
                log.warning("v%s: %s; starting it again at once on another port", version, error)
                launch.server = None
                self.retire(server, kill=True)
                continue
            finally:
                self._ports.bound(port)
            return server
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _failed(self, launch: Launch, reason: str, broken: bool) -> None:
        """Stop what was started, then tell the state machine."""
        self.launches.remove(launch)
        if launch.server is not None:
            self.retire(launch.server, kill=True)
        self._on_failed(launch, reason, broken)

    async def _stop(self, server: ScoringServer, drain: bool, kill: bool) -> None:
        try:
            if drain and not await server.upstream.drained(self.settings.drain_timeout):
                log.warning("v%s still had calls open after the drain timeout", server.version)
            await server.stop(kill=kill)
        finally:
            self.servers.discard(server)
            self._stopping.discard(server)
            self._ports.release(server.port)
            self._on_stopped(server)

    async def _smoke_test(
        self, client: aiohttp.ClientSession | None, server: ScoringServer
    ) -> None:
        await smoke_test(
            require_client(client),
            server.upstream.url,
            server.input_example(),
            self.settings.smoke_positive,
            self.settings.smoke_negative,
        )
