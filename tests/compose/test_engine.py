"""The Compose command the tests (and the file) need: v2.26 or later, or a sentence saying so."""

from __future__ import annotations

import pytest

from tests.compose import engine


@pytest.mark.parametrize(
    ("found", "named"),
    [(None, "no `docker compose`"), ((1, 29), "Compose 1.29"), ((2, 25), "Compose 2.25")],
)
def test_compose_without_v2_226_is_refused_with_a_sentence_naming_what_was_found(
    monkeypatch, found, named
):
    monkeypatch.setattr(engine, "compose_version", lambda: found)
    with pytest.raises(RuntimeError) as refused:
        engine.compose()
    assert named in str(refused.value) and "2.26 or later" in str(refused.value)


def test_the_plugin_the_engine_module_installs_is_compose_v2():
    """`python -m tests.compose.engine` ran first (`make test-compose`)."""
    assert engine.compose_version() >= engine.COMPOSE_MINIMUM
    assert engine.compose() == ["docker", "compose"]
