"""The challenger's supervisor beside production's, driven step by step with the fakes of
test_rollout: no processes, no network."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.experiments.challenger import Challenger
from gateway.serving.rollout import Supervisor
from gateway.serving.smoke_test import SmokeFailed
from gateway.settings import Settings
from tests.unit.gateway.serving.fakes import FakeRegistry, World, serving, settle


def pair(tmp_path: Path, production: str | None = "1", challenger: str | None = "2"):
    world = World()
    config = Settings(
        _env_file=None,
        model_cache_dir=tmp_path / "models",
        scoring_log_dir=tmp_path / "logs",
        restart_backoff=0.01,
        drain_timeout=30,
    )

    prod_registry, chal_registry = FakeRegistry(production), FakeRegistry(challenger)
    prod = Supervisor(config, prod_registry, servers=world.server, smoke=world.smoke)
    chal = Challenger(config, chal_registry, prod, servers=world.server, smoke=world.smoke)
    return prod, chal, prod_registry, chal_registry, world


def run(test):
    def wrapper(tmp_path):
        async def main():
            prod, chal, prod_registry, chal_registry, world = pair(tmp_path)
            try:
                await test(prod, chal, prod_registry, chal_registry, world)
            finally:
                await chal.close()
                await prod.close()

        asyncio.run(main())

    wrapper.__name__ = test.__name__
    return wrapper


async def steps(*supervisors, times: int = 3) -> None:
    for _ in range(times):
        for sup in supervisors:
            await sup.step()
        await settle()


@run
async def test_the_challenger_gets_one_server_of_its_own_without_standby(
    prod, chal, prod_registry, chal_registry, world
):
    await serving(prod, "1")
    await steps(chal)
    assert chal.live is world.servers("2")[0].upstream
    assert len(world.servers("2")) == 1 and chal.standby is None
    assert chal.settings.model_cache_dir == prod.settings.model_cache_dir / "challenger"
    assert prod.live.version == "1" and len(world.running("1")) == 2


@run
async def test_removing_the_alias_stops_the_challenger(
    prod, chal, prod_registry, chal_registry, world
):
    await serving(prod, "1")
    await steps(chal)
    server = world.servers("2")[0]
    chal_registry.alias = None
    await steps(chal)
    assert chal.live is None and chal.idle
    assert server.stopped == "SIGTERM"


@run
async def test_a_challenger_naming_the_production_version_runs_nothing(
    prod, chal, prod_registry, chal_registry, world
):
    chal_registry.alias = "1"
    await serving(prod, "1")
    await steps(chal)
    assert chal.live is None and chal.idle
    assert len(world.servers("1")) == 2  # production's live server and its standby only
    chal_registry.down = True  # it remembers nothing to start
    await steps(chal)
    assert chal.live is None and chal.last_rollout is None  # not even tried


@run
async def test_production_moving_to_the_challenger_takes_its_running_server(
    prod, chal, prod_registry, chal_registry, world
):
    await serving(prod, "1")
    await steps(chal)
    server = world.servers("2")[0]

    prod_registry.alias = "2"
    await prod.step()  # one poll: no start, no wait
    assert prod.live is server.upstream
    assert prod.last_rollout["outcome"] == "succeeded"
    assert "challenger" in prod.last_rollout["reason"]
    assert chal.live is None

    await steps(chal, prod)
    assert server.stopped is None, "production serves from it"
    assert chal.live is None and chal.idle
    assert prod.live is server.upstream and prod.standby is not None  # a new standby of v2
    assert len(world.servers("2")) == 2


@run
async def test_a_broken_challenger_is_refused_and_production_is_untouched(
    prod, chal, prod_registry, chal_registry, world
):
    world.broken["2"] = SmokeFailed("says negative to a positive review")
    await serving(prod, "1")
    await steps(chal)
    assert chal.live is None
    assert set(chal.rejected) == {"2"}
    assert all(server.exited for server in world.servers("2"))
    assert prod.live.version == "1" and prod.rejected == {}


@run
async def test_a_crashed_challenger_is_restarted(prod, chal, prod_registry, chal_registry, world):
    await serving(prod, "1")
    await steps(chal)
    first = world.servers("2")[0]
    first.exit(-9)
    await settle()
    assert chal.live is None
    for _ in range(20):
        await chal.step()
        await settle()
        if chal.live is not None:
            break
    assert chal.live is world.servers("2")[1].upstream
    assert prod.live.version == "1"
