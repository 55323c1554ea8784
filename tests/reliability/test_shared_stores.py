"""PostgreSQL restarted under load: the gateway keeps serving from its scoring server, says the
registry is unreachable while the database is down, and follows a promotion made afterwards.

The database is stopped and started in two steps, so that the gateway's 1 s poll surely sees
it down (a `pg_ctl restart` takes about 0.3 s here), then restarted in one.
"""

from __future__ import annotations

import time

from tests.gateways import gateway
from tests.load import REPORT, Load, Row
from tests.models import promote, register_version


def reachable(gw) -> bool | None:
    return gw.health()["registry_reachable"]


def test_postgresql_restart_under_load(shared_stores, tmp_path_factory):
    database, uri = shared_stores.postgres, shared_stores.uri
    before = register_version(uri, alias=True, tags={"test_accuracy": "0.84"})
    after = register_version(uri, tags={"test_accuracy": "0.85"}, sample=1)
    with gateway(tmp_path_factory.mktemp("restart-gateway"), uri) as gw:
        gw.wait_for(lambda: gw.serving(f"v{before}"), timeout=180)
        with Load(gw.url) as load:
            load.wait(2)
            stopped = time.monotonic()
            database.stop()
            gw.wait_for(lambda: reachable(gw) is False, timeout=60)
            noticed = time.monotonic() - stopped
            down = gw.http.get("/info").json()
            load.wait(3)
            database.start()
            started = time.monotonic()
            gw.wait_for(lambda: reachable(gw) is True, timeout=90)
            back = time.monotonic() - started
            # And a restart too quick for any poll to see: the tracking server's pooled
            # connections are all dead now, and the promotion must still go through.
            database.restart()
            promote(uri, after)
            promoted = time.monotonic()
            gw.wait_for(lambda: gw.serving(f"v{after}"), timeout=180)
            followed = time.monotonic() - promoted
            load.wait(2)
        outage = started - stopped
        final = gw.health()
    REPORT.append(
        Row.of(
            "PostgreSQL stopped and started, then restarted (pg_ctl restart), promotion followed",
            load.answers,
            note=(
                f"down {outage:.1f} s, seen unreachable after {noticed:.1f} s, reachable "
                f"{back:.1f} s after the start, v{after} live {followed:.1f} s after its promotion"
            ),
        )
    )

    assert load.statuses() == {200: len(load.answers)}, load.statuses()
    assert load.versions() == {f"v{before}", f"v{after}"}
    assert len(load.between(stopped, started)) >= 10, "traffic ran while the database was down"
    assert down["model_version"] == f"v{before}" and down["registry_reachable"] is False
    assert down["registry_error"] and database.password not in str(down)
    assert final["registry_reachable"] is True and final["model_version"] == f"v{after}"
