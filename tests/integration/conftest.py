"""Real servers shared by the gateway tests: a tracking server, and a gateway started on an
empty registry."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import pytest

from tests.gateways import Gateway, gateway
from tests.models import register_version
from tests.servers import tracking_server

V1_TAGS = {"test_accuracy": "0.84", "test_f1": "0.83", "preset": "tests", "git_commit": "abc1234"}


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    with tracking_server(tmp_path_factory.mktemp("tracking")) as uri:
        yield uri


@dataclass
class Served:
    gw: Gateway
    v1: str
    before: dict[str, httpx.Response]
    seconds_to_serve: float


@pytest.fixture(scope="session")
def served(tmp_path_factory, tracking_uri) -> Served:
    """The shared gateway. It starts before any model exists (what it answered then is kept
    in ``before``), then v1 is registered and promoted, and it is serving v1."""
    with gateway(tmp_path_factory.mktemp("gateway"), tracking_uri) as gw:
        before = {
            "predict": gw.predict("A fine film."),
            "batch": gw.http.post("/predict/batch", json={"texts": ["A fine film."]}),
            "health": gw.http.get("/health"),
            "ready": gw.http.get("/ready"),
            "info": gw.http.get("/info"),
        }
        v1 = register_version(tracking_uri, alias=True, tags=V1_TAGS)
        promoted = time.monotonic()
        gw.wait_for(lambda: gw.serving(f"v{v1}"), timeout=120)
        yield Served(gw, v1, before, time.monotonic() - promoted)
