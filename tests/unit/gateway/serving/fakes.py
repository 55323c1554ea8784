"""Fakes of what the rollout supervisor drives, for the serving and experiments tests: a
registry, scoring servers that start and exit when told, and the world they share."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.serving.registry import RegistryUnavailable, VersionInfo
from gateway.serving.rollout import Supervisor
from gateway.serving.scoring import Upstream


class FakeRegistry:
    def __init__(self, alias: str | None = "1"):
        self.alias, self.down = alias, False

    async def resolve(self) -> str | None:
        if self.down:
            raise RegistryUnavailable("connection refused")
        return self.alias

    async def describe(self, version: str) -> VersionInfo | None:
        return None if self.down else VersionInfo(version, source=f"models:/m-{version}")

    async def download(self, version: str, into: Path) -> Path:
        if self.down:
            raise RegistryUnavailable("connection refused")
        (into / "model").mkdir()
        (into / "model" / "MLmodel").write_text(version)
        return into / "model"


class FakeServer:
    """Ready when its gate opens (at once unless the test holds it), exits when told."""

    def __init__(self, world: World, version: str, port: int, path: Path):
        self.world, self.version, self.port, self.model_path = world, version, port, path
        self.upstream = Upstream(f"http://scoring.test:{port}", version)
        self.gate = asyncio.Event()
        if not world.hold.get(version):
            self.gate.set()
        self.start_error = (
            world.start_errors.get(version, []).pop(0) if world.start_errors.get(version) else None
        )
        self._exit: asyncio.Future = asyncio.get_running_loop().create_future()
        self.stopped: str | None = None
        self.answers: bool | None = True  # what a ping gets
        self.refusing = False

    @property
    def exited(self) -> bool:
        return self._exit.done()

    async def start(self) -> None:
        self.world.started.append(self)

    async def wait_ready(self, client) -> None:
        await self.gate.wait()
        if self.start_error is not None:
            raise self.start_error

    async def ping(self, client, timeout: float) -> bool | None:
        return self.answers

    def refuses(self) -> bool:
        return self.refusing

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    async def stop(self, kill: bool = False) -> None:
        self.stopped = "SIGKILL" if kill else "SIGTERM"
        self.exit(-9 if kill else 0)

    def exit(self, code: int = -9) -> None:
        if not self._exit.done():
            self._exit.set_result(code)


class World:
    """Everything the fakes share: what was started, and how each version behaves."""

    def __init__(self):
        self.started: list[FakeServer] = []
        self.hold: dict[str, bool] = {}  # version -> its next servers wait for the gate
        self.start_errors: dict[str, list[Exception]] = {}  # version -> errors, one per start
        self.broken: dict[str, Exception] = {}  # version -> what its smoke test raises

    def servers(self, version: str | None = None) -> list[FakeServer]:
        return [s for s in self.started if version is None or s.version == version]

    def running(self, version: str | None = None) -> list[FakeServer]:
        return [s for s in self.servers(version) if not s.exited]

    def server(self, version: str, port: int, path: Path) -> FakeServer:
        """What the supervisor starts in place of `mlflow models serve`."""
        return FakeServer(self, version, port, path)

    async def smoke(self, client, server) -> None:
        """The smoke test: fails for the versions in ``broken``."""
        if server.version in self.broken:
            raise self.broken[server.version]


async def settle() -> None:
    """Let every task that can run, run (launches, watchers, stops, cache pruning)."""
    for _ in range(5):
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.005)


async def serving(sup: Supervisor, version: str, standby: bool = True) -> None:
    """Step until ``version`` is live (and has its standby)."""
    for _ in range(10):
        await sup.step()
        await settle()
        if sup.live and sup.live.version == version and (sup.standby or not standby):
            return
    raise AssertionError(f"v{version} not served: live {sup.live}, standby {sup.standby}")
