"""Decide which scoring server is live, and keep it alive.

The supervisor pins the version the alias names (`mlflow models serve` resolves an alias
only once), copies its files to the local model cache, brings a server up from there beside
the live one, smoke-tests it, switches atomically, and drains and stops the old one in the
background. A version that fails never gets traffic.

A scoring server takes 10-15 s to start, most of it importing MLflow. So a second, smoke-tested
server of the live version waits idle as a standby: when the live one dies or hangs, traffic
moves to it at once and a new standby is started. Without a standby (or if it is gone too) the
dead server is restarted with back-off from the cache, so it comes back even while the
registry is down.

Three parts: the state machine here decides; each start runs as a task of its own (a launch,
gateway/serving/launcher.py) that reports back, so the loop never waits on one and a
promotion, a crash or a hang is acted on while a standby is still starting, and a server
that becomes ready is used for whatever is needed by then; the health watcher
(gateway/serving/health_watcher.py) reports servers that exit or hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from gateway.redact import scrub
from gateway.serving.health_watcher import HealthWatcher
from gateway.serving.launcher import Launch, Launcher, Smoke
from gateway.serving.model_cache import ModelCache
from gateway.serving.ports import warn_if_ephemeral
from gateway.serving.registry import Registry, RegistryUnavailable, VersionInfo
from gateway.serving.scoring import Upstream
from gateway.serving.scoring_server import Factory, ScoringServer, factory, ping
from gateway.settings import Settings

log = logging.getLogger("gateway.rollout")

Event = dict[str, Any]


def _event(version: str, kind: str, outcome: str, reason: str | None = None) -> Event:
    """One attempt to bring a version up, as /info shows it (a reason may quote a URL)."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    reason = scrub(reason) if reason else reason
    return {"version": version, "kind": kind, "outcome": outcome, "reason": reason, "at": at}


class Controller:
    """What the rest of the gateway reads: the live upstream and what happened lately."""

    def __init__(self, settings: Settings, registry: Registry):
        self.settings = settings
        self.registry = registry
        self.version_info: VersionInfo | None = None
        # The version the alias named at the last look (None: none yet, or never asked).
        self.alias_version: str | None = None
        self.last_rollout: Event | None = None
        self.rejected: dict[str, Event] = {}
        self.outcomes: Counter[tuple[str, str]] = Counter()
        # None until the registry has been asked once; then whether the last look worked.
        self.registry_reachable: bool | None = None
        self.registry_error: str | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    @property
    def live(self) -> Upstream | None:
        raise NotImplementedError

    @property
    def standby(self) -> Upstream | None:
        """A ready server of the same version that takes over if the live one dies."""
        return None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def lost(self, upstream: Upstream) -> None:
        """A connection to ``upstream`` was refused."""

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.pause())
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
        self.alias_version = version
        return version


class Supervisor(Controller):
    """Runs the scoring servers itself and follows the alias: the state machine.

    It decides what serves, what stands by and what to start; the launcher brings servers up
    and stops them, the health watcher says when one is gone. ``servers`` makes a server for
    (version, port, model directory) and ``smoke`` tests a ready one; both default to the
    real thing (tests pass fakes to drive `step()`)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        servers: Factory | None = None,
        smoke: Smoke | None = None,
    ):
        super().__init__(settings, registry)
        self.cache = ModelCache(settings, registry)
        self.health = HealthWatcher(
            settings, watched=self._watched, exited=self._exited, hung=self._hung
        )
        self.launcher = Launcher(
            settings,
            registry,
            self.cache,
            servers or factory(settings),
            smoke,
            describe_again=self._describe_again,
            started=self.health.follow,
            ready=self._launched,
            failed=self._failed,
            stopped=self._stopped,
        )
        # The one source of truth for what gets traffic: `live` is derived from it.
        self._serving: ScoringServer | None = None
        self._standby: ScoringServer | None = None
        self._previous: str | None = None  # the version served before the live one
        self._crashed: str | None = None  # the live version died and nothing serves yet
        self._failures = 0
        self._next_attempt = 0.0
        self._standby_after = 0.0
        self._client: aiohttp.ClientSession | None = None
        # Hands over a running server of a version, with its description (the challenger).
        self.donor: Callable[[str], tuple[ScoringServer, VersionInfo | None] | None] | None = None

    @property
    def live(self) -> Upstream | None:
        return self._serving.upstream if self._serving else None

    @property
    def standby(self) -> Upstream | None:
        return self._standby.upstream if self._standby else None

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=2.0),
            timeout=aiohttp.ClientTimeout(total=10.0),
        )
        self.launcher.client = self.health.client = self._client
        await super().start()
        self.health.start()

    async def close(self) -> None:
        await super().close()
        self.launcher.closing = True
        await self.health.close()
        self._serving = self._standby = None
        await self.launcher.close()
        if self._client is not None:
            await self._client.close()

    async def step(self) -> None:
        """Look at the alias and start whatever is missing. Never waits on a launch."""
        if self._serving is None and self._crashed and self._crashed not in self.rejected:
            # The live server just died: bring the same version back from the local copy
            # first, without waiting on the registry (down, or slow). The next poll follows
            # the alias as usual.
            self._ensure_launch(self._crashed, standby=False)
            return
        try:
            target = await self.resolve()
        except RegistryUnavailable as error:
            log.warning("registry unavailable: %s", error)
            target = self._serving.version if self._serving else self.alias_version
        if target is None:
            return
        # A refusal lasts until the alias moves.
        self.rejected = {v: e for v, e in self.rejected.items() if v == target}
        serving = self._serving
        if target in self.rejected:
            if serving is None:
                return
            target = serving.version  # keep serving what works, with its standby
        for launch in list(self.launcher.launches):
            if launch.version != target:
                # A standby of a version about to be replaced, or an older promotion.
                self.launcher.cancel(launch)
        if serving is None or serving.version != target:
            if not self._adopt(target):
                self._ensure_launch(target, standby=False)
        else:
            self._keep_standby()

    def pause(self) -> float:
        """A retry due before the next poll comes first. Once its time has passed (tried,
        or nothing left to retry), the alias is polled at the interval again."""
        due = self._next_attempt - time.monotonic()
        return min(due, super().pause()) if due > 0 else super().pause()

    async def check_health(self) -> None:
        """Ping the live server and the standby once; too many failures in a row: hung."""
        await self.health.check()

    def lost(self, upstream: Upstream) -> None:
        """A connection to the live server was refused. Act only if the server is really gone
        (its process exited, or its port refuses this probe too); a failure of the gateway's
        own (no file descriptor, no local port) leaves it to the pings."""
        server = self._serving
        if server is None or server.upstream is not upstream:
            return
        if server.exited or server.refuses():
            self._lose(server, "refuses connections")
            self.launcher.retire(server)
        else:
            log.warning("a call to v%s failed to connect, but it is running: kept", server.version)

    # What to start.

    def _adopt(self, version: str) -> bool:
        """Take over a ready, smoke-tested server of ``version`` from the donor (the
        challenger's), so the switch is immediate."""
        given = self.donor(version) if self.donor is not None else None
        if given is None:
            return False
        server, described = given
        if described is not None:
            self.launcher.described[version] = described
        self.launcher.adopt(server)
        event = self._go_live(server)
        event["reason"] = "the challenger's server, already smoke-tested"
        log.info("v%s: took over the challenger's server at %s", version, server.upstream.url)
        return True

    def _ensure_launch(self, version: str, standby: bool) -> None:
        if self.launcher.launching(version):
            return  # whichever of its launches is ready first is used for what is needed
        if not standby and time.monotonic() < self._next_attempt:
            return
        if not standby:
            kind = self._kind(version)
            self.last_rollout = _event(version, kind, "in progress")
            log.info("bringing up v%s (%s)", version, kind)
        self.launcher.launch(version, standby)

    def _keep_standby(self) -> None:
        """Have a ready standby of the live version (if standbys are on)."""
        if (
            self.settings.standby
            and self._serving is not None
            and self._standby is None
            and time.monotonic() >= self._standby_after
        ):
            self._ensure_launch(self._serving.version, standby=True)

    def _describe_again(self, launch: Launch) -> bool:
        """Whether a launch asks the registry for its version's description: not to restart
        the crashed live version (the registry may be down), nor for a standby."""
        return not launch.standby and self._crashed != launch.version

    # What the launcher reports.

    def _launched(self, launch: Launch, server: ScoringServer) -> None:
        self._ready(launch, server)
        self._wake.set()

    def _ready(self, launch: Launch, server: ScoringServer) -> None:
        """A ready, smoke-tested server: make it live, or the standby, or stop it."""
        serving, version = self._serving, server.version
        if serving is None or version == self.alias_version != serving.version:
            # Nothing serves (it may be the crashed version's standby, ready now), or the
            # version the alias names is ready.
            self._go_live(server)
        elif version == serving.version and self._standby is None and self.settings.standby:
            self._standby = server
            log.info("standby for v%s ready at %s", version, server.upstream.url)
        else:
            log.info("v%s at %s is not needed any more", version, server.upstream.url)
            self.launcher.retire(server)

    def _go_live(self, server: ScoringServer) -> Event:
        """Make ``server`` live; returns the rollout event recorded (``last_rollout``)."""
        version, old = server.version, self._serving
        kind = self._kind(version)
        self._serving = server
        self.version_info = self.launcher.described.get(version, VersionInfo(version))
        self._crashed, self._failures, self._next_attempt = None, 0, 0.0
        self.rejected.pop(version, None)
        event = self.last_rollout = _event(version, kind, "succeeded")
        self.outcomes[kind, "succeeded"] += 1
        log.info("v%s is live at %s", version, server.upstream.url)
        if self._standby is not None and self._standby.version != version:
            stale, self._standby = self._standby, None
            self.launcher.retire(stale)
        if old is not None:
            if old.version != version:
                self._previous = old.version
            self.launcher.retire(old, drain=True)  # in the background: nothing waits on it
        self.launcher.spawn(self._prune_cache())
        return event

    def _failed(self, launch: Launch, reason: str, broken: bool) -> None:
        """A broken version is refused until the alias moves; one that did not start is tried
        again after the back-off."""
        version = launch.version
        log.warning("v%s was not brought up: %s", version, reason)
        if launch.standby and self._serving is not None and self._serving.version == version:
            # The live version works: only its spare is missing. Try again later.
            self._standby_after = time.monotonic() + self.settings.restart_backoff_max
            return
        kind = self._kind(version)
        event = _event(version, kind, "failed", reason)
        self.last_rollout = event
        if broken:
            self.rejected[version] = event
        self.outcomes[kind, "failed"] += 1
        self._back_off()
        self._wake.set()

    def _stopped(self, server: ScoringServer) -> None:
        self.health.forget(server)
        self._wake.set()

    def _back_off(self) -> None:
        self._failures += 1
        delay = self.settings.restart_backoff * 2 ** (self._failures - 1)
        self._next_attempt = time.monotonic() + min(delay, self.settings.restart_backoff_max)

    # What the health watcher reports.

    def _watched(self) -> list[ScoringServer]:
        return [s for s in (self._serving, self._standby) if s is not None]

    def _hung(self, server: ScoringServer, why: str) -> None:
        if server is self._serving:
            self._lose(server, why)
        elif server is self._standby:
            log.error("standby v%s %s", server.version, why)
            self._standby = None
        else:
            return
        self.launcher.retire(server, kill=True)  # a hung process never handles SIGTERM

    def _exited(self, server: ScoringServer, code: int) -> None:
        if server is self._standby:
            log.warning("standby v%s exited with code %s", server.version, code)
            self._standby = None
            self._wake.set()
        elif server is self._serving:
            self._lose(server, f"exited with code {code}")
        self.launcher.retire(server)

    def _lose(self, server: ScoringServer, why: str) -> None:
        """The live server is gone: its standby takes over, or it restarts after the back-off
        (a launch of its version already under way is used as soon as it is ready)."""
        log.error("live scoring server v%s %s", server.version, why)
        self.outcomes["crash", "failed"] += 1
        self.health.forget(server)
        standby, self._standby = self._standby, None
        if standby is not None and not standby.exited:
            self._serving = standby
            self.last_rollout = _event(server.version, "failover", "succeeded", f"live {why}")
            self.outcomes["failover", "succeeded"] += 1
            log.warning("v%s moved to its standby at %s", server.version, standby.upstream.url)
        else:
            self._serving = None
            self._crashed = server.version
            self._failures = 0  # refused versions before do not slow this restart down
            self._back_off()
        self._wake.set()

    async def _prune_cache(self) -> None:
        keep = {server.version for server in self.launcher.servers} | {self._previous}
        keep |= {launch.version for launch in self.launcher.launches}
        await asyncio.to_thread(self.cache.prune, {v for v in keep if v})

    def _kind(self, version: str) -> str:
        if self._serving is None:
            return "restart" if version == self._crashed else "start"
        if not (version.isdigit() and self._serving.version.isdigit()):
            return "promotion"
        return "rollback" if int(version) < int(self._serving.version) else "promotion"


class External(Controller):
    """A scoring server run elsewhere: no supervision, only a readiness check each poll.

    MLflow's scoring server does not say which version it serves, so answers are labelled
    "unknown"; `alias_version` says what the alias names, which that server may or may not run.
    """

    def __init__(self, settings: Settings, registry: Registry):
        super().__init__(settings, registry)
        if not settings.scoring_url:
            raise ValueError("an external scoring server needs GATEWAY_SCORING_URL")
        self._upstream = Upstream(settings.scoring_url, "unknown")
        self._reachable = False
        self._client: aiohttp.ClientSession | None = None

    @property
    def live(self) -> Upstream | None:
        return self._upstream if self._reachable else None

    @property
    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            raise RuntimeError("External rollout used before start()")
        return self._client

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0))
        await super().start()

    async def close(self) -> None:
        await super().close()
        if self._client is not None:
            await self._client.close()

    def lost(self, upstream: Upstream) -> None:
        """Refused: that server is down; the next poll's ping says when it is back."""
        self._reachable = False
        self._wake.set()

    async def step(self) -> None:
        try:
            version = await self.resolve()
        except RegistryUnavailable:
            version = None
        if version and (self.version_info is None or self.version_info.version != version):
            self.version_info = await self.registry.describe(version)
        answered = await ping(self._session, self._upstream.url, self.settings.ping_timeout)
        self._reachable = bool(answered)


def controller(settings: Settings, registry: Registry) -> Controller:
    if settings.scoring_url:
        return External(settings, registry)
    warn_if_ephemeral(settings)  # once, for the scoring servers this gateway runs
    return Supervisor(settings, registry)
