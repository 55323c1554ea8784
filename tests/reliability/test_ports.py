"""A scoring port taken by something else while its server starts, under load.

`mlflow models serve` binds its port 10-15 s after the gateway chose it. Meanwhile any socket
on the machine can take it (most often a client connection given it as its local port, when
the port lies in the kernel's ephemeral range); the server then exits with "address already
in use". Here the port of a new standby is taken on purpose, by a socket bound and listening
on it, the moment its process shows; then the live server is SIGKILLed. The gateway has to
start that standby again at once on another port, so that the kill costs a failover of a
few seconds and not a cold start.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.gateways import Gateway, cmdline, gateway, kill_scoring_server, scoring_servers
from tests.load import REPORT, Load, Row

REQUEST_TIMEOUT = 10.0  # the gateway's GATEWAY_REQUEST_TIMEOUT here
# Seconds from the kill of the live server to answers again: a failover, not a cold start
# (9-17 s on two busy cores).
FAILOVER = 5.0
# Seconds for a standby to be ready again after its port was taken: the start that fails to
# bind and the one after it (each 10-20 s on two busy cores), not the restart back-off (60 s).
STANDBY_BACK = 60.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory, registry, versions) -> Iterator[Gateway]:
    """A gateway of its own (its ports are interfered with), with its standby as shipped."""
    with gateway(
        tmp_path_factory.mktemp("ports-gateway"),
        registry.uri,
        GATEWAY_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
        GATEWAY_STANDBY="true",
    ) as gw:
        gw.wait_for(lambda: gw.health()["model_version"], timeout=120)
        yield gw


def standby(gw: Gateway) -> str | None:
    return gw.http.get("/info").json()["standby_server"]


def ports(gw: Gateway) -> set[int]:
    """The ports the gateway's `mlflow models serve` processes were told."""
    found = (re.search(r"--port (\d+)", cmdline(pid)) for pid in scoring_servers(gw))
    return {int(match.group(1)) for match in found if match}


def within(seconds: float, condition: Callable[[], object], every: float = 0.2):
    """``condition()`` once truthy within ``seconds``, else None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(every)
    return None


def test_a_port_taken_while_the_standby_starts_costs_no_cold_start(gw):
    live = gw.health()["model_version"]
    spare = gw.wait_for(lambda: standby(gw), timeout=120)
    with Load(gw.url) as load:
        load.wait(2)
        # The standby dies: the gateway starts another one at once, on a port it names.
        before = ports(gw)
        kill_scoring_server(gw, "standby_server")
        new = gw.wait_for(lambda: ports(gw) - before, timeout=30, every=0.05)
        (taken,) = new
        # Something else takes that port before the new server binds it (SO_REUSEADDR: the
        # gateway holds a port it chose bound, not listening, and only a socket with it set
        # can take the port anyway).
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        try:
            held = time.monotonic()
            back = within(STANDBY_BACK, lambda: (s := standby(gw)) and s != spare and s)
            standby_after = time.monotonic() - held
            killed = time.monotonic()
            kill_scoring_server(gw)
            gw.wait_for(
                lambda: (
                    gw.health()["model_version"] == live and gw.predict("Fine.").status_code == 200
                ),
                timeout=90,
            )
            load.wait(3)
        finally:
            holder.close()
    after = [a for a in load.answers if a.ended >= killed]
    failed = [a for a in after if a.status != 200]
    down = max(a.ended for a in failed) - killed if failed else 0.0
    recovery = load.recovery(killed) or 0.0
    standby_note = f"a standby again {standby_after:.0f} s after" if back else "no standby"
    REPORT.append(
        Row.of(
            "scoring port taken while the standby started, then the live server SIGKILLed",
            after,
            recovery,
            note=f"port {taken} held; {standby_note}; {len(failed)} failed over {down:.1f} s",
        )
    )

    assert set(load.statuses(after)) <= {200, 503}, load.statuses(after)
    assert load.longest() < REQUEST_TIMEOUT
    assert recovery <= FAILOVER, (
        f"answers back {recovery:.1f} s after the kill ({load.statuses(after)}): "
        f"{len(failed)} failed over {down:.1f} s"
    )
    assert back is not None and f":{taken}" not in back, (
        f"no standby on another port {STANDBY_BACK:.0f} s after port {taken} was taken"
    )
    assert load.versions() == {live}
