"""The user-facing API: validate, score through the live scoring server, answer per the spec."""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from contextvars import ContextVar
from urllib.parse import urlsplit, urlunsplit

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.datastructures import MutableHeaders

from gateway import __version__
from gateway.registry import Registry
from gateway.rollout import Controller, controller
from gateway.schemas import (
    MAX_BATCH,
    MAX_TEXT_CHARS,
    BatchRequest,
    BatchResponse,
    Error,
    Health,
    Info,
    PredictRequest,
    PredictResponse,
)
from gateway.scoring import ModelUnavailable, Scorer, ScoringFailed, ScoringTimeout
from gateway.settings import Settings

NOT_LOADED = "Model not loaded. Service temporarily unavailable. Please try again later."
EMPTY = "Input text cannot be empty."
TOO_LONG = f"Input text exceeds maximum length of {MAX_TEXT_CHARS} characters."
ENDPOINTS = {
    "/",
    "/health",
    "/ready",
    "/info",
    "/predict",
    "/predict/batch",
    "/invocations",
    "/metrics",
    "/docs",
    "/openapi.json",
}

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
log = logging.getLogger("gateway")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.export_mlflow_env()
    router = controller(settings, Registry(settings))
    scorer = Scorer(settings, router)
    metrics = Metrics(router, scorer)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await router.start()
        try:
            yield
        finally:
            await router.close()
            await scorer.aclose()

    app = FastAPI(
        title="Sentiment gateway",
        version=__version__,
        description="Sentiment of movie reviews, scored by the MLflow model the alias names.",
        lifespan=lifespan,
        responses={503: {"model": Error}},
    )
    _routes(app, settings, router, scorer, metrics)
    _error_mapping(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics)
    return app


def _routes(
    app: FastAPI, settings: Settings, router: Controller, scorer: Scorer, metrics: Metrics
) -> None:
    def live_version() -> str:
        if router.live is None:
            raise HTTPException(503, NOT_LOADED)
        return _label(router.live.version)

    @app.get("/", include_in_schema=False)
    async def index() -> dict:
        return {"service": "sentiment gateway", "docs": "/docs", "health": "/health"}

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """Always 200: `healthy` while a model is served, `degraded` otherwise."""
        live = router.live
        return Health(
            status="healthy" if live else "degraded",
            model_loaded=live is not None,
            model_name=settings.model_name,
            model_version=_label(live.version) if live else None,
        )

    @app.get("/ready")
    async def ready() -> dict:
        """200 only while a model is served, for orchestrators."""
        live_version()
        return {"status": "ready"}

    @app.get("/info", response_model=Info)
    async def info() -> Info:
        version = live_version()
        described = router.version_info
        if described is not None and _label(described.version) != version:
            described = None
        return Info(
            model_name=settings.model_name,
            model_version=version,
            model_stage=settings.model_alias,
            mlflow_tracking_uri=_without_credentials(settings.tracking_uri),
            status="ready",
            run_id=described.run_id if described else None,
            metrics=described.metrics if described else {},
            tags=described.tags if described else {},
            registered_at=described.registered_at if described else None,
            scoring_server=router.live.url,
            last_rollout=router.last_rollout,
            rejected_versions=list(router.rejected.values()),
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(_json_only)],
        responses={
            400: {"model": Error},
            415: {"model": Error},
            500: {"model": Error},
            504: {"model": Error},
        },
    )
    async def predict(request: PredictRequest) -> PredictResponse:
        """The sentiment of one review; `"explain": true` adds the terms behind it."""
        problem = _text_problem(request.text)
        if problem:
            raise HTTPException(400, problem)
        row, version = await scorer.predict(request.text, request.explain)
        return PredictResponse(model_version=_label(version), **row)

    @app.post(
        "/predict/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(_json_only)],
        responses={
            400: {"model": Error},
            415: {"model": Error},
            500: {"model": Error},
            504: {"model": Error},
        },
    )
    async def predict_batch(request: BatchRequest) -> BatchResponse:
        """Up to 1,000 reviews in one inference call, answered in the same order."""
        texts = request.texts
        if not texts:
            raise HTTPException(400, "Batch must contain at least one text.")
        if len(texts) > MAX_BATCH:
            raise HTTPException(400, f"Batch exceeds maximum size of {MAX_BATCH} texts.")
        for index, text in enumerate(texts):
            problem = "must be a string." if not isinstance(text, str) else _text_problem(text)
            if problem:
                raise HTTPException(400, f"texts[{index}]: {problem}")
        rows, version = await scorer.predict_many(texts, request.explain)
        return BatchResponse(predictions=rows, model_version=_label(version))

    @app.post("/invocations", responses={503: {"model": Error}})
    async def invocations(request: Request) -> Response:
        """MLflow's own wire format, passed unchanged to the live scoring server."""
        upstream, version = await scorer.invoke(
            await request.body(), request.headers.get("content-type", "application/json")
        )
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
            headers={"X-Model-Version": _label(version)},
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _error_mapping(app: FastAPI) -> None:
    """Every error is `{"detail": "..."}` with a short reason."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            return _error(422, "Request body is not valid JSON.")
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return _error(422, f"{where}: {first['msg']}")

    @app.exception_handler(ModelUnavailable)
    async def unavailable(_: Request, __: ModelUnavailable) -> JSONResponse:
        return _error(503, NOT_LOADED)

    @app.exception_handler(ScoringFailed)
    async def failed(_: Request, error: ScoringFailed) -> JSONResponse:
        return _error(500, f"Prediction failed: {error}")

    @app.exception_handler(ScoringTimeout)
    async def timeout(_: Request, error: ScoringTimeout) -> JSONResponse:
        return _error(504, str(error))


def _json_only(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "Content-Type must be application/json.")


def _text_problem(text: str) -> str | None:
    if not text.strip():
        return EMPTY
    if len(text) > MAX_TEXT_CHARS:
        return TOO_LONG
    return None


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _label(version: str) -> str:
    return f"v{version}" if version.isdigit() else version


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class Metrics:
    """Prometheus series for requests, plus the rollout state read at scrape time."""

    def __init__(self, router: Controller, scorer: Scorer):
        self.registry = CollectorRegistry()
        labels = ["endpoint", "method", "status"]
        self.requests = Counter(
            "gateway_requests", "HTTP requests answered.", labels, registry=self.registry
        )
        self.errors = Counter(
            "gateway_errors",
            "HTTP requests answered with 4xx or 5xx.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer, by endpoint.",
            ["endpoint"],
            buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.registry.register(_State(router, scorer))

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, status).inc()
        if status >= 400:
            self.errors.labels(endpoint, method, status).inc()
        self.latency.labels(endpoint).observe(seconds)


class _State:
    def __init__(self, router: Controller, scorer: Scorer):
        self.router, self.scorer = router, scorer

    def collect(self):
        live = self.router.live
        version = int(live.version) if live and live.version.isdigit() else 0
        yield GaugeMetricFamily(
            "gateway_model_version", "Registry version being served (0: none).", value=version
        )
        rollouts = CounterMetricFamily(
            "gateway_rollouts",
            "Attempts to bring a version up, and crashes.",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), count in self.router.outcomes.items():
            rollouts.add_metric([kind, outcome], count)
        yield rollouts
        yield CounterMetricFamily(
            "gateway_scoring_calls", "Calls made to /invocations.", value=self.scorer.calls
        )
        yield CounterMetricFamily(
            "gateway_scoring_rows", "Reviews sent to /invocations.", value=self.scorer.rows
        )


class Observe:
    """Request id, one JSON log line and metrics for every request; 500 for anything unhandled."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started, status = time.perf_counter(), 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error")
            if status == 500:
                await _send_json(send_with_id, 500, "Internal server error.")
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            endpoint = (
                route.path
                if route is not None
                else (scope["path"] if scope["path"] in ENDPOINTS else "other")
            )
            self.metrics.observe(endpoint, scope["method"], status, seconds)
            log.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": endpoint,
                        "status": status,
                        "ms": round(seconds * 1000, 2),
                    }
                },
            )
            REQUEST_ID.reset(token)


class BodyLimit:
    """413 for bodies over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                return await _send_json(send, 413, self._detail())
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _send_json(send, 413, self._detail())
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _detail(self) -> str:
        return f"Request body exceeds the limit of {self.max_bytes} bytes."


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonLogs(logging.Formatter):
    """One JSON object per line, with the request id; messages never carry review text."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": REQUEST_ID.get(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogs())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
