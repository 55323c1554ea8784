"""Two gateways logging to one PostgreSQL database, as Compose and Kubernetes run them: a label
sent to one names an answer the other gave, and the database stopped for a few seconds under
load fails no request and loses no row (the gateways hold the rows, then write them)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from monitoring.log_store.tables import iso
from tests.gateways import gateway
from tests.load import REPORT, Load, Row
from tests.stores import log_database

OUTAGE = 4.0  # seconds the database is down: longer than the writers' first retries


@pytest.fixture(scope="module")
def log_db():
    with log_database() as database:
        yield database


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, registry, versions, log_db):
    state = tmp_path_factory.mktemp("log-store-gateways")
    settings = {"GATEWAY_PREDICTION_LOG_URI": log_db.writer}
    with (
        gateway(state / "one", registry.uri, GATEWAY_REPLICA="gateway-1", **settings) as one,
        gateway(state / "two", registry.uri, GATEWAY_REPLICA="gateway-2", **settings) as two,
    ):
        for gw in (one, two):
            gw.wait_for(lambda gw=gw: gw.serving(f"v{versions[0]}"), timeout=180)
        yield one, two


def test_a_label_names_an_answer_another_replica_gave(gateways, log_db):
    one, two = gateways
    answered = one.predict("A warm, funny and moving film.")
    request_id = answered.headers["X-Request-ID"]
    # gateway-1 writes within its linger (0.25 s); gateway-2 finds it in the shared table.
    deadline, labelled = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        labelled = two.http.post("/feedback", json={"request_id": request_id, "label": "positive"})
        if labelled.status_code != 404:
            break
        time.sleep(0.2)
    assert labelled is not None and labelled.status_code == 201, labelled.text
    assert labelled.json()["sentiment"] == answered.json()["sentiment"]
    assert log_db.rows("SELECT replica, label FROM feedback WHERE request_id = %s", request_id) == [
        ("gateway-1", "positive")
    ]
    again = one.http.post("/feedback", json={"request_id": request_id, "label": "negative"})
    assert again.status_code == 409, again.text
    # Both replicas count every replica's labels (the count runs every 5 s).
    for gw in (one, two):
        gw.wait_for(lambda gw=gw: gw.http.get("/info").json()["monitoring"]["feedback_total"] >= 1)


def test_a_database_restart_under_load_fails_nothing_and_loses_no_row(gateways, log_db):
    one, two = gateways
    before = dict(log_db.rows("SELECT replica, COUNT(*) FROM predictions GROUP BY replica"))
    held = []
    with Load(one.url) as load_one, Load(two.url) as load_two:
        load_one.wait(2)
        stopped = time.monotonic()
        log_db.server.stop()
        while time.monotonic() - stopped < OUTAGE:
            held.append(one.http.get("/info").json()["monitoring"]["prediction_log_buffered"])
            time.sleep(0.5)
        log_db.server.start()
        started = time.monotonic()
        load_one.wait(3)
    for gw in (one, two):
        gw.wait_for(lambda gw=gw: gw.http.get("/info").json()["monitoring"][
            "prediction_log_buffered"] == 0, timeout=60)  # fmt: skip
    answers = load_one.answers + load_two.answers
    REPORT.append(
        Row.of(
            "PostgreSQL log store stopped under load (two gateways)",
            answers,
            note=f"down {started - stopped:.1f} s, up to {max(held)} answers held in memory",
        )
    )

    assert Counter(a.status for a in answers) == {200: len(answers)}
    assert max(held) > 0, "the outage was seen: rows were held"
    for gw, load, name in ((one, load_one, "gateway-1"), (two, load_two, "gateway-2")):
        monitoring = gw.http.get("/info").json()["monitoring"]
        assert monitoring["prediction_log_dropped"] == 0
        sent = Counter(a.path for a in load.answers)
        logged = dict(
            log_db.rows(
                "SELECT route, COUNT(DISTINCT request_id) FROM predictions "
                "WHERE replica = %s AND time >= %s GROUP BY route",
                name,
                _iso_since(load.started),
            )
        )
        assert logged == dict(sent), (name, logged, dict(sent))
    duplicates = log_db.rows(
        "SELECT request_id, item FROM predictions GROUP BY request_id, item HAVING COUNT(*) > 1"
    )
    assert duplicates == []
    after = dict(log_db.rows("SELECT replica, COUNT(*) FROM predictions GROUP BY replica"))
    assert sum(after.values()) > sum(before.values())


def _iso_since(monotonic: float) -> str:
    """The wall-clock time of a time.monotonic() reading, as the log keeps time."""
    return iso(time.time() - (time.monotonic() - monotonic) - 0.5)
