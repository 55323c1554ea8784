"""Who may call what: API keys on and off, CORS on and off, in-process (no servers needed).

The app is built but its lifespan never runs, so no model is served: a request that gets
past authentication answers 503, one that does not answers 401.
"""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings

KEYS = "first-key-0123456789,second-key-abcdef"
CLOSED = [
    ("POST", "/predict", {"text": "A fine film."}),
    ("POST", "/predict/batch", {"texts": ["A fine film."]}),
    ("POST", "/invocations", {"inputs": ["A fine film."]}),
    ("GET", "/info", None),
    ("GET", "/metrics", None),
]
OPEN = ["/health", "/ready", "/", "/docs", "/openapi.json"]


@pytest.fixture(autouse=True)
def _restore_mlflow_env(monkeypatch):
    """create_app points MLflow's variables at its registry: put them back afterwards."""
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    ):
        monkeypatch.setenv(name, os.environ.get(name, ""))


def call(settings: Settings, requests: list[tuple[str, str, dict | None, dict]]):
    """Send each (method, path, json, headers) to a fresh app; return the responses."""

    async def send():
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return [
                await client.request(method, path, json=body, headers=headers)
                for method, path, body, headers in requests
            ]

    return asyncio.run(send())


def settings(**values) -> Settings:
    # Nothing is ever asked of this registry: the lifespan does not run.
    return Settings(tracking_uri="http://127.0.0.1:9", _env_file=None, **values)


def test_without_keys_nothing_asks_for_one():
    answers = call(settings(), [(m, p, b, {}) for m, p, b in CLOSED])
    assert [a.status_code for a in answers] == [503, 503, 503, 503, 200]
    schema = call(settings(), [("GET", "/openapi.json", None, {})])[0].json()
    assert "securitySchemes" not in schema.get("components", {})
    assert all("security" not in op for ops in schema["paths"].values() for op in ops.values())


@pytest.mark.parametrize("method,path,body", CLOSED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"X-API-Key": "wrong-key"},
        {"Authorization": "Basic Zmlyc3Qta2V5LTAxMjM0NTY3ODk="},  # the right key, wrong scheme
        {"Authorization": "first-key-0123456789"},
        {"X-API-Key": "first-key-012345678"},  # a prefix
        {"X-API-Key": "first-key-0123456789x"},
        {"Authorization": "Bearer "},
        {"X-API-Key": "wrong", "Authorization": "Bearer first-key-0123456789"},
    ],
    ids=[
        "none",
        "bearer-wrong",
        "header-wrong",
        "basic",
        "no-scheme",
        "prefix",
        "longer",
        "empty",
        "one-of-two-wrong",
    ],
)
def test_without_a_valid_key_closed_endpoints_answer_401(method, path, body, headers):
    (answer,) = call(settings(api_keys=KEYS), [(method, path, body, headers)])
    assert answer.status_code == 401
    assert answer.json() == {"detail": "Missing or invalid API key."}
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer first-key-0123456789"},
        {"Authorization": "bearer second-key-abcdef"},
        {"X-API-Key": "second-key-abcdef"},
        {"X-API-Key": "second-key-abcdef", "Authorization": "Bearer first-key-0123456789"},
    ],
    ids=["bearer-first", "bearer-lowercase-second", "header-second", "both-right"],
)
def test_either_header_with_any_configured_key_gets_through(headers):
    answers = call(settings(api_keys=KEYS), [(m, p, b, headers) for m, p, b in CLOSED])
    # 503: no model in this app. What matters is that the key was accepted.
    assert [a.status_code for a in answers] == [503, 503, 503, 503, 200]


def test_health_readiness_and_docs_stay_open():
    answers = call(settings(api_keys=KEYS), [("GET", path, None, {}) for path in OPEN])
    assert [a.status_code for a in answers] == [200, 503, 200, 200, 200]  # /ready: no model
    assert answers[1].json()["detail"].startswith("Model not loaded")


def test_unknown_paths_are_closed_too():
    (answer,) = call(settings(api_keys=KEYS), [("GET", "/admin", None, {})])
    assert answer.status_code == 401


def test_openapi_declares_both_schemes_on_the_closed_operations():
    schema = call(settings(api_keys=KEYS), [("GET", "/openapi.json", None, {})])[0].json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["BearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["BearerAuth"]["description"],
    }
    assert (schemes["ApiKeyAuth"]["in"], schemes["ApiKeyAuth"]["name"]) == ("header", "X-API-Key")
    for path, method in (
        ("/predict", "post"),
        ("/predict/batch", "post"),
        ("/info", "get"),
        ("/invocations", "post"),
    ):
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"BearerAuth": []}, {"ApiKeyAuth": []}], path
        assert "401" in operation["responses"], path
    for path in ("/health", "/ready"):
        assert "security" not in schema["paths"][path]["get"], path


def test_keys_stay_out_of_the_settings_repr_and_the_scoring_servers_environment(monkeypatch):
    monkeypatch.setenv("GATEWAY_API_KEYS", KEYS)
    configured = Settings(_env_file=None)
    assert configured.keys == KEYS.split(",")
    assert "first-key" not in repr(configured) and "first-key" not in str(configured)
    assert "GATEWAY_API_KEYS" not in configured.child_env()


def test_cors_is_off_unless_origins_are_configured():
    preflight = (
        "OPTIONS",
        "/predict",
        None,
        {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    simple = ("GET", "/health", None, {"Origin": "https://app.example.com"})
    off = call(settings(), [preflight, simple])
    assert off[0].status_code == 405
    assert not any(k.startswith("access-control-") for a in off for k in a.headers)

    on = call(settings(api_keys=KEYS, cors_origins="https://app.example.com"), [preflight, simple])
    assert on[0].status_code == 200, "a preflight needs no key"
    assert on[0].headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-api-key" in on[0].headers["access-control-allow-headers"].lower()
    assert on[1].headers["access-control-allow-origin"] == "https://app.example.com"
    other = call(
        settings(cors_origins="https://app.example.com"),
        [("GET", "/health", None, {"Origin": "https://evil.example.net"})],
    )[0]
    assert "access-control-allow-origin" not in other.headers
