"""Decide which scoring server is live, and keep it alive.

The supervisor pins the version the alias names (`mlflow models serve` resolves an alias
only once), copies its files to the local model cache, brings a server up from there beside
the live one, smoke-tests it, switches atomically, drains the old one and stops it. A version
that fails never gets traffic.

A scoring server takes 10-15 s to start, most of it importing MLflow. So a second, smoke-tested
server of the live version waits idle as a standby: when the live one dies, traffic moves to
it at once and a new standby is started. Without a standby (or if it is gone too) the dead
server is restarted with back-off from the cache, so it comes back even while the registry
is down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from gateway.cache import ModelCache
from gateway.registry import Registry, RegistryUnavailable, VersionInfo
from gateway.scoring import Answer, Upstream
from model.names import LABELS
from gateway.settings import Settings

log = logging.getLogger("gateway.rollout")


class RolloutFailed(Exception):
    """A scoring server did not start, or failed its smoke test."""


Event = dict[str, Any]


def _event(version: str, kind: str, outcome: str, reason: str | None = None) -> Event:
    """One attempt to bring a version up, as /info shows it."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    return {"version": version, "kind": kind, "outcome": outcome, "reason": reason, "at": at}


class Controller:
    """What the rest of the gateway reads: the live upstream and what happened lately."""

    def __init__(self, settings: Settings, registry: Registry):
        self.settings = settings
        self.registry = registry
        self.live: Upstream | None = None
        self.version_info: VersionInfo | None = None
        self.last_rollout: Event | None = None
        self.rejected: dict[str, Event] = {}
        self.outcomes: Counter[tuple[str, str]] = Counter()
        # None until the registry has been asked once; then whether the last look worked.
        self.registry_reachable: bool | None = None
        self.registry_error: str | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    @property
    def standby(self) -> Upstream | None:
        """A ready server of the live version that takes over if the live one dies."""
        return None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def lost(self, upstream: Upstream) -> None:
        """Nobody answers at ``upstream``: stop sending traffic there at once."""
        if self.live is upstream:
            self.live = None
            self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("rollout step failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.pause())
            except TimeoutError:
                pass
            self._wake.clear()

    def pause(self) -> float:
        """Seconds until the next step."""
        return self.settings.poll_interval

    async def step(self) -> None:
        raise NotImplementedError

    async def resolve(self) -> str | None:
        """The version the alias names; remembers whether the registry answered."""
        try:
            version = await self.registry.resolve()
        except RegistryUnavailable as error:
            self.registry_reachable, self.registry_error = False, str(error)
            raise
        self.registry_reachable, self.registry_error = True, None
        return version


class ScoringServer:
    """One `mlflow models serve` child, in its own process group so all of it can be stopped."""

    def __init__(self, settings: Settings, version: str, port: int, model_path: Path):
        self.settings = settings
        self.version = version
        self.port = port
        self.model_path = model_path
        host = "127.0.0.1" if settings.scoring_host in ("0.0.0.0", "") else settings.scoring_host
        self.upstream = Upstream(f"http://{host}:{port}", version)
        self.log_path = settings.scoring_log_dir / f"scoring-v{version}-{port}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                str(self.model_path),
                "--env-manager",
                "local",
                "--host",
                self.settings.scoring_host,
                "--port",
                str(self.port),
                "--workers",
                str(self.settings.scoring_workers),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=self.settings.child_env(),
                start_new_session=True,
            )

    async def wait_ready(self, client: aiohttp.ClientSession) -> None:
        """Poll GET /ping (HEAD gets 405) until 200, the process exits, or time runs out."""
        deadline = time.monotonic() + self.settings.start_timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RolloutFailed(
                    f"scoring server exited with code {self.process.returncode}: "
                    f"{self.last_log_line()}"
                )
            if await _pings(client, self.upstream.url):
                return
            await asyncio.sleep(0.25)
        raise RolloutFailed(f"scoring server not ready after {self.settings.start_timeout:g}s")

    def input_example(self) -> dict[str, Any] | None:
        """The version's `serving_input_example.json`, or None if it has none."""
        try:
            return json.loads((self.model_path / "serving_input_example.json").read_text())
        except (OSError, ValueError):
            return None

    async def wait(self) -> int:
        return await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM the whole group, SIGKILL what is left after 10 s."""
        if self.process is None:
            return
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                continue
            if not _group_alive(self.process.pid):
                return

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][:200] if lines else "no output"


class Supervisor(Controller):
    """Runs the scoring servers itself and follows the alias."""

    def __init__(self, settings: Settings, registry: Registry):
        super().__init__(settings, registry)
        self.cache = ModelCache(settings, registry)
        self._described: dict[str, VersionInfo] = {}
        self._servers: set[ScoringServer] = set()
        self._serving: ScoringServer | None = None
        self._standby: ScoringServer | None = None
        self._standby_after = 0.0
        self._crashed: str | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._tasks: set[asyncio.Task] = set()
        self._client: aiohttp.ClientSession | None = None

    @property
    def standby(self) -> Upstream | None:
        return self._standby.upstream if self._standby else None

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0))
        await super().start()

    async def close(self) -> None:
        await super().close()
        self.live = self._serving = self._standby = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*(server.stop() for server in list(self._servers)))
        self._servers.clear()
        if self._client is not None:
            await self._client.close()

    async def step(self) -> None:
        crashed = self._crashed
        if self._serving is None and crashed is not None and crashed not in self.rejected:
            # The live server just died: bring the same version back from the local copy
            # first, without waiting on the registry (down, or slow). The next poll follows
            # the alias as usual.
            if time.monotonic() >= self._next_attempt:
                await self._bring_up(crashed)
            return
        try:
            target = await self.resolve()
        except RegistryUnavailable as error:
            log.warning("registry unavailable: %s", error)
            target = self._serving.version if self._serving else self._crashed
        if target is None:
            return
        self.rejected = {v: e for v, e in self.rejected.items() if v == target}
        if target in self.rejected:
            if self._serving is not None:
                return
            # Nothing serves: the last version that worked beats one that was refused.
            target = self._crashed or target
        if self._serving is not None and self._serving.version == target:
            await self._keep_standby()
            return
        if time.monotonic() < self._next_attempt:
            return
        await self._bring_up(target)

    async def _bring_up(self, version: str) -> None:
        kind = self._kind(version)
        self.last_rollout = _event(version, kind, "in progress")
        log.info("bringing up v%s (%s)", version, kind)
        described = self._described.get(version) if kind == "restart" else None
        if described is None:
            described = await self.registry.describe(version)
        if described is not None:
            self._described[version] = described
        try:
            path = await self.cache.local_copy(version, described)
        except RegistryUnavailable as error:
            # Not the version's fault: no refusal, only another try after the back-off.
            log.warning("v%s could not be fetched: %s", version, error)
            self.last_rollout = _event(version, kind, "failed", f"model not fetched: {error}")
            self.outcomes[kind, "failed"] += 1
            self._back_off()
            return
        try:
            server = await self._launch(version, path)
        except RolloutFailed as error:
            self._failed(version, kind, str(error))
            return
        self.version_info = self._described.get(version, VersionInfo(version))
        old, self._serving, self.live = self._serving, server, server.upstream
        self._crashed, self._failures, self._next_attempt = None, 0, 0.0
        self.rejected.pop(version, None)
        self.last_rollout = _event(version, kind, "succeeded")
        self.outcomes[kind, "succeeded"] += 1
        log.info("v%s is live at %s", version, server.upstream.url)
        self._spawn(self._watch(server))
        if self._standby is not None and self._standby.version != version:
            stale, self._standby = self._standby, None
            await self._retire(stale)
        if old is not None:
            if not await old.upstream.drained(self.settings.drain_timeout):
                log.warning("v%s still had calls open after the drain timeout", old.version)
            await self._retire(old)
        self._wake.set()  # the next step starts a standby

    async def _keep_standby(self) -> None:
        """Have a ready standby of the live version (if standbys are on)."""
        live = self._serving
        if (
            not self.settings.standby
            or live is None
            or self._standby is not None
            or time.monotonic() < self._standby_after
        ):
            return
        try:
            server = await self._launch(live.version, live.model_path)
        except RolloutFailed as error:
            log.warning("standby for v%s not started: %s", live.version, error)
            self._standby_after = time.monotonic() + self.settings.restart_backoff_max
            return
        if self._serving is not live:  # promoted, or died, meanwhile: the next step decides
            await self._retire(server)
            return
        self._standby = server
        self._spawn(self._watch(server))
        log.info("standby for v%s ready at %s", live.version, server.upstream.url)

    async def _launch(self, version: str, path: Path) -> ScoringServer:
        """A started, ready, smoke-tested server for ``version``; RolloutFailed otherwise."""
        server = ScoringServer(self.settings, version, self._port(), path)
        self._servers.add(server)
        try:
            await server.start()
            await server.wait_ready(self._client)
            await self._smoke(server)
        except (RolloutFailed, aiohttp.ClientError, TimeoutError, OSError) as error:
            await self._retire(server)
            raise RolloutFailed(str(error)) from error
        return server

    async def _retire(self, server: ScoringServer) -> None:
        await server.stop()
        self._servers.discard(server)

    def _failed(self, version: str, kind: str, reason: str) -> None:
        log.warning("v%s was not brought up: %s", version, reason)
        self.last_rollout = self.rejected[version] = _event(version, kind, "failed", reason)
        self.outcomes[kind, "failed"] += 1
        self._back_off()

    def pause(self) -> float:
        """A restart that is due comes before the next poll."""
        if self._serving is None and self._next_attempt:
            return max(0.0, min(self._next_attempt - time.monotonic(), super().pause()))
        return super().pause()

    def _back_off(self) -> None:
        self._failures += 1
        delay = self.settings.restart_backoff * 2 ** (self._failures - 1)
        self._next_attempt = time.monotonic() + min(delay, self.settings.restart_backoff_max)

    def lost(self, upstream: Upstream) -> None:
        """Connections to the live server are refused: hand over now, and stop it."""
        server = self._serving
        if server is not None and server.upstream is upstream and self.live is upstream:
            log.error("live scoring server v%s refuses connections", server.version)
            self._lose(server)
            self._spawn(server.stop())

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, server: ScoringServer) -> None:
        code = await server.wait()
        if server is self._standby:
            log.warning("standby v%s exited with code %s", server.version, code)
            self._standby = None
        elif server is self._serving:
            log.error("live scoring server v%s exited with code %s", server.version, code)
            self._lose(server)
        await self._retire(server)

    def _lose(self, server: ScoringServer) -> None:
        """The live server is gone: its standby takes over, or it restarts after the back-off."""
        self.outcomes["crash", "failed"] += 1
        standby, self._standby = self._standby, None
        if standby is not None and standby.process.returncode is None:
            self._serving, self.live = standby, standby.upstream
            self.last_rollout = _event(server.version, "failover", "succeeded")
            self.outcomes["failover", "succeeded"] += 1
            log.warning("v%s moved to its standby at %s", server.version, standby.upstream.url)
        else:
            self.live = self._serving = None
            self._crashed = server.version
            self._failures = 0  # refused versions before do not slow this restart down
            self._back_off()
        self._wake.set()

    async def _smoke(self, server: ScoringServer) -> None:
        """The input example must score, and a clear positive and negative must come back right."""
        url = f"{server.upstream.url}/invocations"
        example = server.input_example()
        if example is not None:
            _check(await _post(self._client, url, example), None)
        reviews = [self.settings.smoke_positive, self.settings.smoke_negative]
        body = {"dataframe_split": {"columns": ["text"], "data": [[r] for r in reviews]}}
        _check(await _post(self._client, url, body), ["positive", "negative"])

    def _kind(self, version: str) -> str:
        if self._serving is None:
            return "restart" if version == self._crashed else "start"
        return "rollback" if int(version) < int(self._serving.version) else "promotion"

    def _port(self) -> int:
        if self.settings.scoring_port:
            # The live server, its standby and a new version's server: three ports at most.
            taken = {server.port for server in self._servers}
            first = self.settings.scoring_port
            return next(p for p in range(first, first + 3) if p not in taken)
        with socket.socket() as sock:
            sock.bind((self.settings.scoring_host, 0))
            return sock.getsockname()[1]


class External(Controller):
    """A scoring server run elsewhere: no supervision, only a readiness check each poll."""

    def __init__(self, settings: Settings, registry: Registry):
        super().__init__(settings, registry)
        self._upstream = Upstream(settings.scoring_url, "unknown")
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0))
        await super().start()

    async def close(self) -> None:
        await super().close()
        if self._client is not None:
            await self._client.close()

    async def step(self) -> None:
        try:
            version = await self.resolve()
        except RegistryUnavailable:
            version = None
        if version and version != self._upstream.version:
            self._upstream.version = version
            self.version_info = await self.registry.describe(version)
        self.live = self._upstream if await _pings(self._client, self._upstream.url) else None


def controller(settings: Settings, registry: Registry) -> Controller:
    return External(settings, registry) if settings.scoring_url else Supervisor(settings, registry)


async def _pings(client: aiohttp.ClientSession, url: str) -> bool:
    """GET /ping answers 200 (HEAD gets 405 from MLflow's scoring server)."""
    try:
        async with client.get(f"{url}/ping") as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _post(client: aiohttp.ClientSession, url: str, body: Any) -> Answer:
    async with client.post(url, json=body) as response:
        return Answer(response.status, await response.read(), response.content_type)


def _check(response: Answer, expected: list[str] | None) -> None:
    if response.status != 200:
        text = response.content.decode("utf-8", "replace")[:150]
        raise RolloutFailed(f"smoke test got HTTP {response.status}: {text}")
    try:
        rows = response.json()["predictions"]
    except (ValueError, KeyError, TypeError):
        raise RolloutFailed("smoke test got no predictions") from None
    try:
        got = [row["sentiment"] for row in rows]
    except (KeyError, TypeError):
        shown = sorted(rows[0]) if rows and isinstance(rows[0], dict) else type(rows).__name__
        raise RolloutFailed(f"smoke test got no sentiment column: {shown}"[:200]) from None
    if expected is not None and got != expected:
        raise RolloutFailed(f"smoke test expected {expected}, got {got}")
    if not got or any(label not in LABELS for label in got):
        raise RolloutFailed(f"smoke test got labels {got}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
