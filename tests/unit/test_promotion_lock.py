"""The promotion lock on a real registry (MLflow's SQL store on a SQLite file, in-process)."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines import promote, promotion_lock
from pipelines.errors import LockTimeout
from pipelines.promotion_lock import held, lock_name
from tests.unit.test_promote import HERE, VAL


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("M")
    return client


def test_promotions_take_turns(registry):
    inside, overlaps = [], []

    def promotion(index: int) -> None:
        with held("M", registry, poll=0.05):
            inside.append(index)
            if len(inside) > 1:
                overlaps.append(list(inside))
            time.sleep(0.2)
            inside.remove(index)

    threads = [threading.Thread(target=promotion, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert overlaps == []
    with pytest.raises(MlflowException):
        registry.get_registered_model(lock_name("M"))  # released


def test_the_lock_is_released_when_the_promotion_fails(registry):
    with pytest.raises(RuntimeError), held("M", registry):
        raise RuntimeError("the candidate cannot serve")
    with held("M", registry, wait=1):
        pass


def test_a_held_lock_makes_a_waiter_give_up_with_a_sentence(registry):
    with (
        held("M", registry),
        pytest.raises(LockTimeout, match="delete the registered model"),
        held("M", registry, wait=0.3, poll=0.05),
    ):
        pass


def test_the_lock_of_a_dead_holder_is_broken(registry):
    registry.create_registered_model(lock_name("M"), tags={"holder": "gone:1", "since": "0"})
    with held("M", registry, wait=1):
        pass


def test_champion_challenger_decides_and_moves_while_holding_the_lock(registry, monkeypatch):
    seen = []

    def move(name, version, alias):
        registry.get_registered_model(lock_name("M"))  # raises unless held
        seen.append(version)

    monkeypatch.setattr(promote, "MlflowClient", lambda: registry)
    monkeypatch.setattr(promotion_lock, "MlflowClient", lambda: registry)
    monkeypatch.setattr(promote, "check", lambda name, version: None)
    monkeypatch.setattr(promote, "current", lambda client, name: None)
    monkeypatch.setattr(promote, "record", lambda *args, **kwargs: None)
    monkeypatch.setattr(promote, "move_alias", move)
    assert promote.champion_challenger("always", "M", "4", 0.9, HERE, VAL).promote
    assert seen == ["4"]
