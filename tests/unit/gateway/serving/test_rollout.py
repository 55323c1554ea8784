"""The supervisor's state machine, driven step by step with fake scoring servers and a fake
registry: no processes, no network. What a real `mlflow models serve` does is covered by
tests/integration and tests/reliability."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from gateway.serving.ports import Ports
from gateway.serving.rollout import Supervisor
from gateway.serving.scoring_server import OutputLog, StartFailed
from gateway.serving.smoke_test import SmokeFailed
from gateway.settings import Settings
from tests.unit.gateway.serving.fakes import FakeRegistry, World, serving, settle


def make(tmp_path: Path, registry: FakeRegistry, **settings) -> tuple[Supervisor, World]:
    world = World()
    config = Settings(
        _env_file=None,
        model_cache_dir=tmp_path / "models",
        scoring_log_dir=tmp_path / "logs",
        standby=settings.pop("standby", True),
        restart_backoff=settings.pop("restart_backoff", 0.01),
        ping_failures=3,
        drain_timeout=30,
        **settings,
    )
    return Supervisor(config, registry, servers=world.server, smoke=world.smoke), world


async def standby_starting(sup: Supervisor, world: World, version: str):
    """``version`` live without a standby, then its standby started and held before ready:
    returns (live, starting)."""
    await serving(sup, version, standby=False)
    world.hold[version] = True
    await sup.step()
    await settle()
    live, starting = world.servers(version)
    return live, starting


def run(test):
    """Run an async test body on a fresh loop, and stop everything it left running."""

    def wrapper(tmp_path):
        async def main():
            sup, world = make(tmp_path, FakeRegistry())
            try:
                await test(sup, world)
            finally:
                await sup.close()

        asyncio.run(main())

    wrapper.__name__ = test.__name__
    return wrapper


@run
async def test_serves_the_alias_version_with_a_standby(sup, world):
    await serving(sup, "1")
    assert sup.live is world.servers("1")[0].upstream
    assert sup.last_rollout["kind"] == "start" and sup.last_rollout["outcome"] == "succeeded"
    assert len(world.running("1")) == 2
    assert sup.alias_version == "1"


@run
async def test_a_crash_while_the_standby_starts_promotes_it_when_ready(sup, world):
    live, starting = await standby_starting(sup, world, "1")
    assert sup.standby is None

    live.exit(-9)
    await settle()
    assert sup.live is None
    for _ in range(3):  # polls while the standby is still starting: no cold start beside it
        await sup.step()
        await settle()
    assert world.servers("1") == [live, starting]

    starting.gate.set()
    await settle()
    assert sup.live is starting.upstream
    assert sup.last_rollout["kind"] == "restart"
    assert sup.outcomes["crash", "failed"] == 1
    assert sup.outcomes["restart", "succeeded"] == 1


@run
async def test_a_crash_during_the_drain_does_not_block_or_disturb_the_switch(sup, world):
    await serving(sup, "1")
    old = world.servers("1")[0]
    lease = old.upstream.lease()
    lease.__enter__()  # a call still open on the old server
    sup.registry.alias = "2"
    await serving(sup, "2", standby=False)
    assert sup.live.version == "2"
    assert old.stopped is None, "drained in the background, not stopped under an open call"

    old.exit(-9)
    await settle()
    assert sup.live.version == "2"
    assert sup.outcomes["crash", "failed"] == 0
    assert sup.last_rollout["kind"] == "promotion"
    lease.__exit__(None, None, None)
    await serving(sup, "2")
    assert world.running("1") == []


@run
async def test_a_promotion_does_not_wait_for_a_standby_that_is_starting(sup, world):
    _, starting = await standby_starting(sup, world, "1")

    sup.registry.alias = "2"
    await sup.step()
    await settle()
    assert world.servers("2"), "the new version starts at once"
    assert starting.stopped == "SIGKILL", "the old version's standby is abandoned"
    assert sup.live.version == "2"
    assert sup.last_rollout["kind"] == "promotion"


@pytest.mark.parametrize(
    "error",
    [
        SmokeFailed("smoke test expected ['positive', 'negative'], got ['positive', 'positive']"),
        KeyError(0),  # what checking a dict prediction by index raised
        TypeError("'float' object is not subscriptable"),  # a scalar prediction
        RuntimeError(""),
    ],
    ids=["smoke", "dict", "scalar", "no message"],
)
def test_a_broken_version_is_stopped_refused_and_not_retried(tmp_path, error):
    async def main():
        sup, world = make(tmp_path, FakeRegistry())
        try:
            await serving(sup, "1")
            world.broken["2"] = error
            sup.registry.alias = "2"
            for _ in range(5):
                await sup.step()
                await settle()
            (candidate,) = world.servers("2")
            assert candidate.stopped, "the broken version's server was left running"
            assert sup.live.version == "1" and sup.standby is not None
            assert set(sup.rejected) == {"2"}
            rejected = sup.rejected["2"]
            assert rejected["outcome"] == "failed" and rejected["reason"]
            assert sup.last_rollout == rejected
            assert len(world.running()) == 2

            sup.registry.alias = "1"
            await sup.step()
            assert sup.rejected == {}
        finally:
            await sup.close()

    asyncio.run(main())


@run
async def test_the_registry_down_keeps_serving_and_a_crash_restarts_from_the_cache(sup, world):
    await serving(sup, "1", standby=False)
    sup.settings.standby = False
    await settle()
    for server in world.servers("1")[1:]:
        server.exit(0)
    sup.registry.down = True
    await sup.step()
    assert sup.live.version == "1"
    assert sup.registry_reachable is False and "refused" in sup.registry_error

    world.servers("1")[0].exit(-9)
    await settle()
    assert sup.live is None
    await asyncio.sleep(0.02)  # the restart back-off
    await serving(sup, "1", standby=False)
    assert sup.last_rollout["kind"] == "restart"


@run
async def test_a_transient_start_failure_is_retried_not_refused(sup, world):
    world.start_errors["1"] = [StartFailed("scoring server not ready after 120s")]
    await sup.step()
    await settle()
    assert sup.live is None
    assert sup.rejected == {}
    assert sup.last_rollout["outcome"] == "failed"
    assert sup.last_rollout["reason"].startswith("failed to start: ")
    assert world.servers("1")[0].stopped
    await asyncio.sleep(0.02)  # the back-off
    await serving(sup, "1")
    assert sup.last_rollout["outcome"] == "succeeded"


@run
async def test_a_hung_live_server_is_killed_and_its_standby_takes_over(sup, world):
    await serving(sup, "1")
    live, spare = world.servers("1")
    live.answers = None  # the gateway could not even ask: no evidence
    for _ in range(5):
        await sup.check_health()
    assert sup.live is live.upstream

    live.answers = False
    for _ in range(2):
        await sup.check_health()
    assert sup.live is live.upstream, "two missed pings are not enough"
    await sup.check_health()
    await settle()
    assert sup.live is spare.upstream
    assert live.stopped == "SIGKILL"
    assert sup.last_rollout["kind"] == "failover"
    await serving(sup, "1")  # and a new standby follows


@run
async def test_a_hung_server_without_standby_is_restarted(sup, world):
    sup.settings.standby = False
    await serving(sup, "1", standby=False)
    (live,) = world.servers("1")
    live.answers = False
    for _ in range(3):
        await sup.check_health()
    await settle()
    assert live.stopped == "SIGKILL" and sup.live is None
    await asyncio.sleep(0.02)
    await serving(sup, "1", standby=False)
    assert sup.live is world.servers("1")[1].upstream


def test_a_refused_version_leaves_the_poll_at_its_interval(tmp_path):
    """The back-off after a refusal shortens one wait, until its retry is due; once past,
    the alias is polled at the interval again (it was polled in a busy loop, 30 a second)."""

    async def main():
        sup, world = make(tmp_path, FakeRegistry(), restart_backoff=0.3)
        try:
            await serving(sup, "1")
            world.broken["2"] = SmokeFailed("answers nonsense")
            sup.registry.alias = "2"
            for _ in range(3):
                await sup.step()
                await settle()
            assert set(sup.rejected) == {"2"} and sup.live.version == "1"
            assert 0 < sup.pause() <= 0.3
            await asyncio.sleep(0.3)
            sup.registry.alias = "1"  # promoted back: nothing to retry
            await sup.step()
            assert sup.pause() == sup.settings.poll_interval
        finally:
            await sup.close()

    asyncio.run(main())


@run
async def test_a_failed_connection_is_no_evidence_while_the_server_runs(sup, world):
    await serving(sup, "1")
    live, spare = world.servers("1")
    sup.lost(live.upstream)  # e.g. the gateway is out of file descriptors
    assert sup.live is live.upstream and live.stopped is None

    live.refusing = True  # its port refuses a probe too: nothing listens any more
    sup.lost(live.upstream)
    assert sup.live is spare.upstream
    await settle()
    assert live.stopped == "SIGTERM"


def test_a_fixed_port_range_waits_for_a_port_still_held(tmp_path):
    async def main():
        first = _free_range(3)
        ports = Ports(Settings(_env_file=None, scoring_port=first))
        taken = [await ports.take() for _ in range(3)]
        assert sorted(taken) == [first, first + 1, first + 2]
        waiting = asyncio.create_task(ports.take())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        ports.release(first + 1)
        assert await asyncio.wait_for(waiting, 2) == first + 1

    asyncio.run(main())


def test_a_port_held_by_another_process_is_skipped(tmp_path):
    async def main():
        first = _free_range(3)
        with socket.socket() as other:
            other.bind(("127.0.0.1", first))
            other.listen()
            ports = Ports(Settings(_env_file=None, scoring_port=first))
            assert await ports.take() == first + 1

    asyncio.run(main())


@run
async def test_the_cache_keeps_only_the_live_and_previous_versions(sup, world):
    for version in ("1", "2", "3"):
        sup.registry.alias = version
        await serving(sup, version)
    await settle()
    cached = {p.name.split("-")[0] for p in sup.cache.root.iterdir() if not p.name.startswith(".")}
    assert cached == {"2", "3"}


def test_scoring_server_output_is_rotated(tmp_path):
    output = OutputLog(tmp_path, max_bytes=1000, backups=2)
    for i in range(200):
        output.write("v1:5001", f"line {i} " + "x" * 40)
    output.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["scoring.log", "scoring.log.1", "scoring.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    assert "[v1:5001] line 199" in (tmp_path / "scoring.log").read_text()


def _free_range(size: int) -> int:
    """The first of ``size`` consecutive free loopback ports, below the kernel's ephemeral
    range (32768 and up by default), where no client connection is given one meanwhile."""
    for _ in range(50):
        first = random.randint(20000, 32767 - size)
        if all(_free(first + i) for i in range(size)):
            return first
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
