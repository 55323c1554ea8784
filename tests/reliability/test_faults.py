"""Faults under load: eight clients keep the gateway busy throughout, and every answer counts.

Each scenario has a default variant (part of `make test`) and, where length matters, a
heavier one marked `soak` (`make soak`).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.gateways import alive, kill_scoring_server, scoring_servers, signal_scoring_server
from tests.load import REPORT, Load, Row
from tests.models import promote, register_broken_version
from tests.reliability.conftest import AUTH, serve, serving

REQUEST_TIMEOUT = 10.0  # the gateway's GATEWAY_REQUEST_TIMEOUT in these tests
RECOVERY = 15.0  # seconds a killed scoring server may take to serve again, unaided
# Live server and standby both killed: a cold start of `mlflow models serve` (10-17 s
# measured on 2 busy cores), after the restart back-off.
COLD_RECOVERY = 40.0

DEFAULT, SOAK = "default", pytest.param("soak", marks=pytest.mark.soak)


def recovered(gw, version: str) -> bool:
    return gw.serving(f"v{version}") and gw.predict("A fine film.").status_code == 200


def standby(gw) -> str | None:
    """The standby's URL once it is ready (a new one follows every rollout and failover)."""
    info = gw.http.get("/info")
    return info.json()["standby_server"] if info.status_code == 200 else None


@pytest.mark.parametrize("mode", [DEFAULT, SOAK])
def test_promotions_under_load_lose_nothing(gw, registry, versions, answers, mode):
    v1, v2 = versions
    serve(gw, registry, v1)
    soak = mode == "soak"
    plan = [v2, v1] * (3 if soak else 1) + [v2]  # v1→v2→v1→v2, or three rounds and back
    least, dwell = (60.0, 5.0) if soak else (10.0, 1.0)
    with Load(gw.url, AUTH) as load:
        load.wait(1)
        for version in plan:
            promote(registry.uri, version)
            gw.wait_for(lambda v=version: gw.serving(f"v{v}"), timeout=120)
            load.wait(dwell)
        load.wait(least - (time.monotonic() - load.started))
    seconds = load.ended - load.started
    path = " → ".join(f"v{v}" for v in [v1, *plan])
    REPORT.append(Row.of(f"promotions {path}", load.answers, note=f"{seconds:.0f} s"))

    assert seconds >= least
    assert load.statuses() == {200: len(load.answers)}
    assert load.versions() == {f"v{v1}", f"v{v2}"}
    assert load.mislabelled(answers) == []
    assert {a.path for a in load.answers} == {"/predict", "/predict/batch", "/invocations"}
    assert len(load.answers) >= 100


@pytest.mark.parametrize("mode", [DEFAULT, SOAK])
def test_killed_scoring_server_fails_over_to_its_standby(gw, registry, versions, mode):
    live = serving(gw)
    kills = 3 if mode == "soak" else 1
    killed_at: list[float] = []
    with Load(gw.url, AUTH) as load:
        load.wait(2)
        for _ in range(kills):
            spare = gw.wait_for(lambda: standby(gw), timeout=120)
            killed_at.append(time.monotonic())
            kill_scoring_server(gw)
            gw.wait_for(lambda: recovered(gw, live), timeout=90)
            took_over = gw.http.get("/info").json()
            load.wait(3)
    # Requests in flight when the server died count as "after": they may get 503 too.
    before = [a for a in load.answers if a.ended < killed_at[0]]
    after = [a for a in load.answers if a.ended >= killed_at[0]]
    # None: nothing failed at all, the standby took every request over.
    recoveries = [
        load.recovery(at, until) or 0.0
        for at, until in zip(killed_at, [*killed_at[1:], 1e12], strict=True)
    ]
    worst = max(recoveries)
    REPORT.append(
        Row.of(f"scoring server SIGKILLed ×{kills}", load.answers, worst, note="worst recovery")
    )

    assert load.statuses(before) == {200: len(before)}
    assert set(load.statuses(after)) <= {200, 503}, load.statuses(after)
    assert load.longest() < REQUEST_TIMEOUT
    assert all(r <= RECOVERY for r in recoveries), recoveries
    assert load.versions() == {f"v{live}"}
    assert took_over["scoring_server"] == spare
    assert took_over["last_rollout"]["kind"] == "failover"
    replacement = gw.wait_for(lambda: standby(gw), timeout=120)
    assert replacement != gw.http.get("/info").json()["scoring_server"]


def test_broken_versions_are_never_switched_to(gw, registry, versions):
    live = serving(gw)
    broken = {
        kind: register_broken_version(registry.uri, kind=kind)
        for kind in ("raises", "wrong-columns")
    }
    reasons = {"raises": "smoke test got HTTP", "wrong-columns": "has no known sentiment"}

    def refused(version):
        info = gw.http.get("/info").json()
        return info if any(r["version"] == version for r in info["rejected_versions"]) else None

    infos = {}
    with Load(gw.url, AUTH) as load:
        load.wait(1)
        for kind, version in broken.items():
            promote(registry.uri, version)
            infos[kind] = gw.wait_for(lambda v=version: refused(v), timeout=120)
            load.wait(1)
        # Back to the good version: the refusal is forgotten.
        promote(registry.uri, live)
        gw.wait_for(lambda: not gw.http.get("/info").json()["rejected_versions"], timeout=30)
    names = " and ".join(f"v{v} ({k})" for k, v in broken.items())
    REPORT.append(Row.of(f"broken versions promoted: {names}", load.answers))

    assert load.statuses() == {200: len(load.answers)}
    assert load.versions() == {f"v{live}"}
    for kind, info in infos.items():
        assert info["model_version"] == f"v{live}"
        (rejected,) = info["rejected_versions"]
        assert (rejected["version"], rejected["outcome"]) == (broken[kind], "failed")
        assert reasons[kind] in rejected["reason"], rejected
    assert gw.serving(f"v{live}")


@pytest.mark.parametrize("mode", [DEFAULT, SOAK])
def test_registry_outage_keeps_serving_through_a_crash_and_promotions_resume(
    gw, registry, versions, mode
):
    outage = 60.0 if mode == "soak" else 16.0
    live = serving(gw)
    other = next(v for v in versions if v != live)
    with Load(gw.url, AUTH) as load:
        load.wait(1)
        stopped = time.monotonic()
        registry.stop()
        gw.wait_for(lambda: gw.health()["registry_reachable"] is False, timeout=30)
        health, info = gw.health(), gw.http.get("/info").json()
        load.wait(outage / 2 - (time.monotonic() - stopped))

        # The scoring server and its standby die too: a cold start from the local model cache.
        gw.wait_for(lambda: standby(gw), timeout=120)
        crashed = time.monotonic()
        kill_scoring_server(gw, "standby_server")
        gw.wait_for(lambda: standby(gw) is None, timeout=10, every=0.05)
        kill_scoring_server(gw)
        gw.wait_for(lambda: recovered(gw, live), timeout=90)
        after_crash = gw.health()
        load.wait(outage - (time.monotonic() - stopped))

        restarted = time.monotonic()
        registry.start()
        gw.wait_for(lambda: gw.health()["registry_reachable"], timeout=60)
        promote(registry.uri, other)
        gw.wait_for(lambda: gw.serving(f"v{other}"), timeout=120)
        followed = time.monotonic()
        load.wait(2)
    # A request in flight when the scoring server was killed belongs to the crash.
    down = [a for a in load.between(stopped) if a.ended < crashed]
    crash = [a for a in load.between(end=restarted) if a.ended >= crashed]
    back = load.between(restarted)
    REPORT.extend(
        [
            Row.of("tracking server stopped", down, note=f"{crashed - stopped:.0f} s"),
            Row.of(
                "scoring server and standby SIGKILLed while the registry is down",
                crash,
                load.recovery(crashed),
                note=f"{restarted - crashed:.0f} s",
            ),
            Row.of(
                "tracking server restarted, promotion followed",
                back,
                note=f"v{other} live {followed - restarted:.0f} s after the restart",
            ),
        ]
    )

    assert load.statuses(down) == {200: len(down)}
    assert (health["status"], health["registry_reachable"]) == ("healthy", False)
    assert health["model_version"] == f"v{live}"
    assert info["registry_reachable"] is False and info["registry_error"]
    assert info["model_version"] == f"v{live}"
    assert set(load.statuses(crash)) <= {200, 503}, load.statuses(crash)
    assert load.recovery(crashed) is not None and load.recovery(crashed) <= COLD_RECOVERY
    assert after_crash["registry_reachable"] is False, "the registry was still down"
    assert load.statuses(back) == {200: len(back)}
    assert load.versions() == {f"v{live}", f"v{other}"}
    assert load.longest() < REQUEST_TIMEOUT


def test_a_broken_version_answering_nonsense_leaks_no_scoring_server(gw, registry, versions):
    """Its predict returns a dict, then a scalar: each is stopped and refused, never retried.

    While a candidate is brought up, a fourth may show for a moment: the child that
    `mlflow models serve` forks to exec uvicorn carries its parent's command line until the
    exec. Once refused, only the live server and its standby run, poll after poll."""
    live = serving(gw)
    gw.wait_for(lambda: standby(gw), timeout=120)
    broken = {kind: register_broken_version(registry.uri, kind=kind) for kind in ("dict", "scalar")}
    counts: Counter = Counter()  # while each candidate is brought up and refused
    settled: Counter = Counter()  # over five polls after each refusal
    infos = {}

    def refused(version):
        counts[len(scoring_servers(gw))] += 1
        info = gw.http.get("/info").json()
        return info if any(r["version"] == version for r in info["rejected_versions"]) else None

    with Load(gw.url, AUTH) as load:
        load.wait(1)
        try:
            for kind, version in broken.items():
                promote(registry.uri, version)
                infos[kind] = gw.wait_for(lambda v=version: refused(v), timeout=120, every=0.1)
                gw.wait_for(lambda: len(scoring_servers(gw)) == 2, timeout=30)
                # Five polls more: the refused version is not started again.
                since = time.monotonic()
                while time.monotonic() - since < 5:
                    settled[len(scoring_servers(gw))] += 1
                    time.sleep(0.1)
        finally:
            promote(registry.uri, live)
        gw.wait_for(lambda: not gw.http.get("/info").json()["rejected_versions"], timeout=30)
    most = max(counts)
    REPORT.append(
        Row.of(
            "leaking broken version: " + " and ".join(f"v{v} ({k})" for k, v in broken.items()),
            load.answers,
            note=f"at most {most} scoring servers while a candidate came up, "
            f"{max(settled)} in {settled.total()} samples over five polls after each refusal",
        )
    )

    assert set(settled) == {2}, settled  # live + standby: nothing retried, nothing leaked
    assert most <= 4, counts  # live + standby + candidate (+ its child before the exec)
    assert load.statuses() == {200: len(load.answers)}
    assert load.versions() == {f"v{live}"}
    for kind, info in infos.items():
        (rejected,) = info["rejected_versions"]
        assert rejected["version"] == broken[kind]
        assert "the answer has no list of predictions" in rejected["reason"], rejected
    assert len(scoring_servers(gw)) == 2


def test_a_hung_scoring_server_fails_over_to_its_standby(gw, registry, versions):
    """SIGSTOP: the live server keeps its port and accepts connections, but never answers."""
    live = serving(gw)
    spare = gw.wait_for(lambda: standby(gw), timeout=120)
    hung_url = gw.http.get("/info").json()["scoring_server"]
    with Load(gw.url, AUTH) as load:
        load.wait(2)
        hung = signal_scoring_server(gw, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            info = gw.wait_for(
                lambda: (i := gw.http.get("/info").json())["scoring_server"] != hung_url and i,
                timeout=60,
                every=0.1,
            )
            detected = time.monotonic() - stopped
            gw.wait_for(lambda: not alive(hung), timeout=20)
            load.wait(3)
        finally:
            if alive(hung):  # never leave a stopped process behind
                os.kill(hung, signal.SIGKILL)
    during = load.between(stopped)
    REPORT.append(
        Row.of(
            "hung scoring server (SIGSTOP), fails over to the standby",
            during,
            load.recovery(stopped),
            note=f"noticed after {detected:.1f} s",
        )
    )

    assert info["scoring_server"] == spare
    assert info["last_rollout"]["kind"] == "failover"
    late = load.between(stopped + detected)
    assert load.statuses(late) == {200: len(late)}
    # Only the requests waiting on the hung server when it was killed may have failed.
    assert set(load.statuses(during)) <= {200, 504}, load.statuses(during)
    assert load.versions() == {f"v{live}"}
    gw.wait_for(lambda: standby(gw), timeout=120)
