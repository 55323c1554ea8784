"""Shared by the reliability suite: one registry that can be stopped and restarted, two good
model versions, and one gateway with API keys on, all on loopback ports.

At the end of the session a summary table (scenario, requests, non-2xx by status, longest
response, recovery time) is printed and written to benchmarks/results/reliability.md.
"""

from __future__ import annotations

import os
import platform
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.gateways import Gateway, gateway
from tests.load import REPORT, REVIEWS, Row
from tests.models import confidences, promote, register_version
from tests.servers import ROOT, free_port, tracking_server

KEY = "reliability-key-4c1f9a7e2b"
AUTH = {"X-API-Key": KEY}
RESULTS = ROOT / "benchmarks" / "results" / "reliability.md"


class Registry:
    """A tracking server that can be stopped and started again: same port, same store."""

    def __init__(self, state: Path):
        self.state, self.port = state, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._running: ExitStack | None = None

    def start(self) -> None:
        assert self._running is None
        stack = ExitStack()
        stack.enter_context(tracking_server(self.state, port=self.port))
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("reliability-tracking"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def versions(registry) -> tuple[str, str]:
    """Two good versions, fitted on different reviews; the first is production."""
    v1 = register_version(registry.uri, alias=True, tags={"test_accuracy": "0.84"})
    v2 = register_version(registry.uri, tags={"test_accuracy": "0.85"}, sample=1)
    return v1, v2


@pytest.fixture(scope="session")
def answers(registry, versions) -> dict[str, dict[str, float]]:
    """Each version's confidence for each review the load sends, asked in this process:
    an answer labelled with the wrong version shows up as the wrong confidence."""
    expected = {f"v{v}": confidences(registry.uri, v, REVIEWS) for v in versions}
    assert expected[f"v{versions[0]}"] != expected[f"v{versions[1]}"]
    return expected


@pytest.fixture(scope="session")
def gw(tmp_path_factory, registry, versions) -> Gateway:
    """The gateway under test, with API keys on (its client sends one), a 10 s timeout, and
    a standby scoring server as shipped."""
    with gateway(
        tmp_path_factory.mktemp("reliability-gateway"),
        registry.uri,
        GATEWAY_API_KEYS=f"{KEY},another-key-never-used",
        GATEWAY_REQUEST_TIMEOUT="10",
        GATEWAY_STANDBY="true",
    ) as gw:
        gw.http.headers.update(AUTH)
        gw.wait_for(lambda: gw.serving(f"v{versions[0]}"), timeout=120)
        yield gw


def serve(gw: Gateway, registry: Registry, version: str, timeout: float = 120) -> None:
    """Point production at ``version`` and wait until the gateway serves it."""
    if not gw.serving(f"v{version}"):
        promote(registry.uri, version)
        gw.wait_for(lambda: gw.serving(f"v{version}"), timeout=timeout)


def serving(gw: Gateway) -> str:
    return gw.health()["model_version"].removeprefix("v")


# The summary.


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| Scenario | Requests | Non-2xx by status | Longest response | Recovery |",
        "|---|---:|---|---:|---:|",
    ]
    for row in rows:
        recovery = "—" if row.recovery is None else f"{row.recovery:.1f} s"
        name = f"{row.scenario} ({row.note})" if row.note else row.scenario
        lines.append(
            f"| {name} | {row.sent:,} | {row.non_2xx()} | {row.longest * 1000:,.0f} ms "
            f"| {recovery} |"
        )
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not REPORT:
        return
    lines = table(REPORT)
    terminalreporter.section("reliability summary")
    for line in lines:
        terminalreporter.write_line(line)
    soak = "soak" in (config.option.markexpr or "") and "not soak" not in config.option.markexpr
    command = "make soak" if soak else "make test"
    outcome = "all passed" if exitstatus == 0 else f"pytest exit status {exitstatus}"
    header = [
        "# Reliability",
        "",
        (
            f"Latest run: `{command}` (`{' '.join(config.invocation_params.args) or 'pytest'}`), "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {outcome}; {os.cpu_count()} cores, "
            f"Python {platform.python_version()}. Load: 8 concurrent clients on loopback "
            "(batch, /invocations and single reviews), each pausing 100 ms between requests. "
            "Recovery: seconds from the fault to the first 200 after the last failure."
        ),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(header + lines) + "\n")
    terminalreporter.write_line(f"(written to {RESULTS.relative_to(ROOT)})")
