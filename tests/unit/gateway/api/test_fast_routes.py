"""/predict and /predict/batch answer exactly as the FastAPI routes do, well-formed requests
through the fast path and everything else through FastAPI (the scoring server stood in for)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import gateway.app
from gateway.api import fast_routes
from gateway.serving import rollout, scoring
from gateway.settings import Settings

ROW = {"sentiment": "positive", "confidence": 0.91, "known_terms": 12, "known_term_ratio": 0.8}
EXPLAINED = {**ROW, "explanation": [{"term": "fine", "weight": 1.5e-05}]}
JSON = {"content-type": "application/json"}

# (route, body, headers): well-formed requests, then every way a request can be odd.
CASES = [
    ("/predict", b'{"text": "A fine film."}', JSON),
    ("/predict", b'{"text": "A fine film.", "explain": true, "top_terms": 3}', JSON),
    ("/predict", b'{"text": "Caf\xc3\xa9 \\u00e9", "extra": 1}', JSON),
    ("/predict", b'{"text": "A fine film."}', {"content-type": "Application/JSON; charset=utf-8"}),
    ("/predict", b'{"text": "A fine film."}', {**JSON, "x-canary-key": "k" * 128}),
    ("/predict", b'{"text": "A fine film."}', {**JSON, "x-canary-key": "k" * 129}),
    ("/predict", b'{"text": "   "}', JSON),
    ("/predict", json.dumps({"text": "a" * 5001}).encode(), JSON),
    ("/predict", b'{"text": 5}', JSON),
    ("/predict", b'{"text": "A fine film.", "explain": 1}', JSON),
    ("/predict", b'{"text": "A fine film.", "top_terms": 51}', JSON),
    ("/predict", b'{"text": "A fine film.", "top_terms": 5.0}', JSON),
    ("/predict", b'{"text": "A fine film.", "top_terms": 99999999999999999999999}', JSON),
    ("/predict", b'{"text": "A fine film.", "top_terms": NaN}', JSON),
    ("/predict", b'{"text": "\\ud800 lone"}', JSON),
    ("/predict", '{"text": "A fine film."}'.encode("utf-16"), JSON),
    ("/predict", b'\xef\xbb\xbf{"text": "A fine film."}', JSON),
    ("/predict", b'{"text": "A fine film."', JSON),
    ("/predict", b"[1, 2]", JSON),
    ("/predict", b'"text"', JSON),
    ("/predict", b"", JSON),
    ("/predict", b"{}", JSON),
    ("/predict", b"[" * 5000 + b"]" * 5000, JSON),
    ("/predict", b'{"text": "A fine film."}', {"content-type": "text/plain"}),
    ("/predict", b'{"text": "A fine film."}', {}),
    ("/predict/batch", b'{"texts": ["A fine film.", "Dull."]}', JSON),
    ("/predict/batch", b'{"texts": ["A fine film."], "explain": true}', JSON),
    ("/predict/batch", b'{"texts": []}', JSON),
    ("/predict/batch", b'{"texts": ["ok", 3]}', JSON),
    ("/predict/batch", b'{"texts": "ok"}', JSON),
    ("/predict/batch", json.dumps({"texts": ["ok"] * 1001}).encode(), JSON),
    ("/predict/batch", b'{"text": "ok"}', JSON),
]


@pytest.fixture
def apps(monkeypatch, tmp_path):
    """The gateway's app with the fast path and without it; both serve one live version."""

    async def predict(self, text, explain=False, top=5):
        return dict(EXPLAINED if explain else ROW), "3"

    async def predict_many(self, texts, explain=False, top=5):
        return [dict(EXPLAINED if explain else ROW) for _ in texts], "3"

    monkeypatch.setattr(scoring.Scorer, "predict", predict)
    monkeypatch.setattr(scoring.Scorer, "predict_many", predict_many)
    monkeypatch.setattr(rollout.Controller, "live", scoring.Upstream("http://scoring", "3"))
    settings = Settings(api_keys="", monitor_dir=tmp_path, challenger_alias="")
    fast = gateway.app.create_app(settings)
    monkeypatch.setattr(gateway.app, "install_fast_routes", lambda *_: None)
    reference = gateway.app.create_app(settings)
    return fast, reference


def answers(app, cases) -> list[tuple[int, str, bytes]]:
    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            replies = [await client.post(path, content=body, headers=h) for path, body, h in cases]
        return [(r.status_code, r.headers.get("content-type"), r.content) for r in replies]

    return asyncio.run(run())


def test_every_answer_is_the_fastapi_routes_answer(apps):
    fast, reference = apps
    got, expected = answers(fast, CASES), answers(reference, CASES)
    for case, mine, theirs in zip(CASES, got, expected, strict=True):
        assert mine == theirs, case[:2]
    assert expected[0] == (200, "application/json", b'{"sentiment":"positive","confidence":0.91,'
                                                    b'"model_version":"v3"}')  # fmt: skip
    assert {status for status, _, _ in expected} >= {200, 400, 415, 422}


def test_only_odd_requests_reach_fastapi(apps):
    fast, _ = apps
    used = []
    for route in fast.router.routes:
        if isinstance(getattr(route, "app", None), fast_routes.FastRoute):
            route.app.fallback = _noting(route.app.fallback, used)
    for case in CASES:
        used.clear()
        ((status, _, _),) = answers(fast, [case])
        if status == 200:
            assert used == [], case[:2]
    assert used  # the last case (no `text` in a batch) went to FastAPI


def _noting(app, used: list):
    async def noted(scope, receive, send):
        used.append(scope["path"])
        return await app(scope, receive, send)

    return noted
