"""Who may call what, and how long: API keys on and off, CORS on and off (in-process: the
app is built but its lifespan never runs, so no model is served: a request that gets past
authentication answers 503, one that does not answers 401); and clients that connect and
send nothing, or half a request, against the real gateway.
"""

from __future__ import annotations

import asyncio
import os
import resource
import selectors
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.load import REPORT, Load, Row
from tests.reliability.conftest import AUTH, KEY

KEYS = "first-key-0123456789,second-key-abcdef"
CLOSED = [
    ("POST", "/predict", {"text": "A fine film."}),
    ("POST", "/predict/batch", {"texts": ["A fine film."]}),
    ("POST", "/invocations", {"inputs": ["A fine film."]}),
    ("GET", "/info", None),
    ("GET", "/metrics", None),
]
OPEN = ["/health", "/ready", "/", "/docs", "/openapi.json"]
AUTH_FIRST = {"Authorization": "Bearer first-key-0123456789"}


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


def test_the_inference_protocols_readiness_is_4xx_without_a_model():
    """Its health APIs say "not ready" with a 4xx; 503 is for an inference that cannot run."""
    paths = ["/v2/health/ready", "/v2/models/SentimentClassifier/ready",
             "/v2/models/SentimentClassifier/versions/1/ready"]  # fmt: skip
    answers = call(settings(api_keys=KEYS), [("GET", p, None, AUTH_FIRST) for p in paths])
    assert [a.status_code for a in answers] == [400, 400, 400]
    assert all("not ready" in a.json()["error"] for a in answers)
    (infer,) = call(
        settings(api_keys=KEYS),
        [("POST", "/v2/models/SentimentClassifier/infer",
          {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Fine."]}]},
          AUTH_FIRST)],
    )  # fmt: skip
    assert infer.status_code == 503


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


# What each held connection sends before it stalls: nothing, half the headers, or whole
# headers (with the key, so the request reaches the route) and half the body.
STALLS = [
    b"",
    b"POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: appl",
    (
        b"POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"X-API-Key: " + KEY.encode() + b'\r\nContent-Length: 100\r\n\r\n{"text": "half'
    ),
]


def rollouts(gw) -> tuple[list[str], object]:
    metrics = gw.http.get("/metrics").text.splitlines()
    counted = sorted(line for line in metrics if line.startswith("gateway_rollouts_total"))
    return counted, gw.http.get("/info").json()["last_rollout"]


def closed_by_peer(held: list[socket.socket], deadline: float) -> dict[socket.socket, float]:
    """Wait (until ``deadline``) for the gateway to close each socket; when each was closed."""
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as selector:
        for sock in held:
            selector.register(sock, selectors.EVENT_READ)
        while len(closed) < len(held) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                if not data:  # an answer (a 401 to a request without key) is not a close
                    closed[sock] = time.monotonic()
                    selector.unregister(sock)
    return closed


# A common production default for open files (`ulimit -n`), below the 2,000 connections.
GATEWAY_OPEN_FILES = 1024


def test_idle_and_half_sent_connections_are_closed_and_never_stop_predictions(gw):
    """2,000 connections that never send a whole request, to a gateway allowed 1,024 open
    files: the gateway closes them all (the oldest at once past its connection limit, the
    rest at the read deadline), other clients' requests keep getting 200, and no scoring
    server is touched (running out of descriptors must not look like a dead server)."""
    count = 2000
    read_timeout = Settings.model_fields["request_read_timeout"].default
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gateway_limits = resource.prlimit(gw.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(gw.proc.pid, resource.RLIMIT_NOFILE, (GATEWAY_OPEN_FILES, gateway_limits[1]))
    before = rollouts(gw)
    address = urlsplit(gw.url)
    held: list[socket.socket] = []
    try:
        with Load(gw.url, headers=AUTH, concurrency=8, max_seconds=120) as load:
            load.wait(1.0)
            opened = time.monotonic()
            for i in range(count):
                sock = socket.create_connection((address.hostname, address.port), timeout=10)
                sock.sendall(STALLS[i % len(STALLS)])
                held.append(sock)
            opening = time.monotonic() - opened
            closed = closed_by_peer(held, deadline=time.monotonic() + read_timeout + 60)
            all_closed = time.monotonic()
            load.wait(1.0)  # and traffic goes on afterwards
        during = load.between(opened, all_closed)
        after = load.between(all_closed)
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        resource.prlimit(gw.proc.pid, resource.RLIMIT_NOFILE, gateway_limits)
    at_limit = sum(1 for when in closed.values() if when - opened < read_timeout)
    last = max(closed.values(), default=opened) - opened
    REPORT.append(
        Row.of(
            f"{count:,} idle or half-sent connections",
            during + after,
            note=(
                f"{len(closed):,} closed by the gateway, {at_limit:,} of them at the connection "
                f"limit, the last {last:.1f} s after the first opened (read deadline "
                f"{read_timeout:g} s); opening them took {opening:.1f} s; gateway allowed "
                f"{GATEWAY_OPEN_FILES:,} open files"
            ),
        )
    )
    assert len(closed) == count, f"{count - len(closed)} connections still held open"
    assert during, "no request was answered while the connections were held"
    assert load.statuses(during + after) == {200: len(during + after)}
    assert rollouts(gw) == before, "a scoring server was restarted or failed over"
