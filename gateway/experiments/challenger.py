"""Follow a second alias, `challenger`, with a scoring server of its own for the shadow.

Design:
- The challenger is run by the same state machine as a rollout (`Supervisor`): the same
  download, start, smoke test and refusal rules, but with no standby (it answers nobody, so a
  cold restart after a crash costs nothing a user sees), any free port, and a model cache of
  its own (so the production supervisor's pruning never deletes its files).
- While the alias names nothing, or names the version production serves, no challenger server
  runs: removing the alias stops it.
- When `production` moves to the challenger's version, the production supervisor takes the
  challenger's running, smoke-tested server over (`hand_over`) and the switch is immediate.
- The shadow (gateway/experiments/shadow.py) mirrors traffic to whatever `live` is here.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.serving.launcher import Smoke
from gateway.serving.registry import Registry, VersionInfo
from gateway.serving.rollout import Supervisor
from gateway.serving.scoring_server import Factory, ScoringServer
from gateway.settings import Settings

log = logging.getLogger("gateway.challenger")


def challenger_settings(settings: Settings) -> Settings:
    """The production settings, changed where the challenger differs."""
    return settings.model_copy(
        update={
            "model_alias": settings.challenger_alias,
            "standby": False,
            "scoring_port": 0,
            "model_cache_dir": settings.model_cache_dir / "challenger",
        }
    )


class Challenger(Supervisor):
    """The supervisor of the challenger alias, which gives its server to ``production`` when
    production moves to its version."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        production: Supervisor,
        servers: Factory | None = None,
        smoke: Smoke | None = None,
    ):
        super().__init__(challenger_settings(settings), registry, servers, smoke)
        self._production = production
        production.donor = self.hand_over
        self.idle = True  # nothing to shadow: the alias names nothing, or production's version

    def _production_version(self) -> str | None:
        live = self._production.live
        return live.version if live is not None else None

    async def resolve(self) -> str | None:
        version = await super().resolve()
        if version is not None and version == self._production_version():
            # Production serves it already: nothing to compare, and nothing to start even
            # while the registry is down later.
            version = self.alias_version = None
        return version

    async def step(self) -> None:
        await super().step()
        self.idle = self.alias_version is None
        if self.registry_reachable and self.idle:
            self._stand_down()

    def _stand_down(self) -> None:
        """Stop whatever runs or starts for the challenger."""
        for launch in list(self.launcher.launches):
            self.launcher.cancel(launch)
        self._crashed = None
        server, self._serving = self._serving, None
        if server is not None:
            log.info("challenger v%s stopped: the alias no longer asks for it", server.version)
            self.launcher.retire(server, drain=True)

    def hand_over(self, version: str) -> tuple[ScoringServer, VersionInfo | None] | None:
        """Give the ready server of ``version`` away (it is no longer this supervisor's)."""
        server = self._serving
        if server is None or server.version != version or server.exited:
            return None
        self._serving = None
        self.launcher.release(server)
        self.health.forget(server)
        log.info("challenger v%s handed over to production", version)
        return server, self.launcher.described.get(version)

    async def _prune_cache(self) -> None:
        keep: set[str | None] = {server.version for server in self.launcher.servers}
        keep |= {launch.version for launch in self.launcher.launches}
        keep.add(self._production_version())  # a handed-over server may still run from here
        await asyncio.to_thread(self.cache.prune, {v for v in keep if v})


def challenger_for(settings: Settings, production) -> Challenger | None:
    """The challenger's supervisor, when there is an alias to follow and production is run by
    this gateway (an external scoring server has no supervisor to hand a server to)."""
    if not settings.challenger_alias or not isinstance(production, Supervisor):
        return None
    return Challenger(settings, Registry(challenger_settings(settings)), production)
