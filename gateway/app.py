"""The user-facing API: the app factory and its routes. Validate, score through the live
scoring server, answer per the spec."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from gateway import __version__
from gateway.api.fast_routes import install_fast_routes
from gateway.api.feedback_routes import add_feedback_route
from gateway.api.inference_protocol import ProtocolErrors, install_inference_protocol
from gateway.api.middleware import BodyLimit, Observe
from gateway.api.page import install_page
from gateway.api.schemas import (
    INVOCATIONS_OPENAPI,
    BatchRequest,
    BatchResponse,
    Error,
    Health,
    Info,
    PredictRequest,
    PredictResponse,
    text_problem,
    texts_problem,
)
from gateway.api.security import RequireApiKey, documented
from gateway.errors import ApiError, install_error_handlers, not_loaded
from gateway.experiments.canary import Canary, CanaryKey
from gateway.experiments.challenger import challenger_for
from gateway.experiments.shadow import Shadow
from gateway.logs import configure_logging
from gateway.observability.live_monitor import LiveMonitor
from gateway.observability.metrics import CONTENT_TYPE_LATEST, Metrics
from gateway.redact import scrub, without_credentials
from gateway.serving.registry import Registry
from gateway.serving.rollout import Controller, controller
from gateway.serving.scoring import Row, Scorer, without_stack_trace
from gateway.settings import Settings

__all__ = ["configure_logging", "create_app"]

# Every error is `{"detail": "..."}`; 401 is added when API keys are on.
PREDICT_ERRORS: dict[int | str, dict] = {
    code: {"model": Error} for code in (400, 413, 415, 422, 500, 503, 504)
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.export_mlflow_env()
    router = controller(settings, Registry(settings))
    scorer = Scorer(settings, router)
    metrics = Metrics(router, scorer)
    monitor = LiveMonitor(settings, router)
    metrics.registry.register(monitor)
    challenger = challenger_for(settings, router)
    shadow = Shadow(settings, challenger, metrics.registry) if challenger else None
    canary = Canary(settings, challenger) if challenger else None
    if canary is not None:
        metrics.registry.register(canary)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # What is loaded by now (MLflow's client among it) lives as long as the process;
        # frozen, a full garbage collection no longer walks it (a 140 ms pause, measured).
        gc.freeze()
        monitor.start()
        await router.start()
        if challenger is not None:
            await challenger.start()
            shadow.start()
        try:
            yield
        finally:
            if challenger is not None:
                await shadow.close()
                await canary.aclose()
                await challenger.close()
            await router.close()
            await scorer.aclose()
            monitor.close()

    app = FastAPI(
        title="Sentiment gateway",
        version=__version__,
        description="Sentiment of movie reviews, scored by the MLflow model the alias names.",
        lifespan=lifespan,
        responses={503: {"model": Error}},
    )
    _routes(app, settings, router, scorer, metrics, monitor, shadow, canary)
    add_feedback_route(app, monitor.feedback, documented(settings.keys))
    install_inference_protocol(app, settings, router, scorer, monitor, canary, shadow)
    install_error_handlers(app)
    # The last added runs first: Observe sees every answer, CORS preflights need no key,
    # and a request without a key is refused before its body is read.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.keys:
        app.add_middleware(RequireApiKey, keys=settings.keys)
    if settings.origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Model-Version", "X-Gateway-Replica"],
        )
    app.add_middleware(Observe, metrics=metrics, replica=settings.replica)
    app.add_middleware(ProtocolErrors)  # /v2 errors as {"error": ...}, the middleware's too
    return app


def _routes(
    app: FastAPI,
    settings: Settings,
    router: Controller,
    scorer: Scorer,
    metrics: Metrics,
    monitor: LiveMonitor,
    shadow: Shadow | None = None,
    canary: Canary | None = None,
) -> None:
    auth = documented(settings.keys)

    def live_version() -> str:
        if router.live is None:
            raise not_loaded()
        return _label(router.live.version)

    install_page(app)  # GET /: the page for browsers, the JSON summary for clients

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """Always 200: `healthy` while a model is served, `degraded` otherwise."""
        live = router.live
        return Health(
            status="healthy" if live else "degraded",
            model_loaded=live is not None,
            model_name=settings.model_name,
            model_version=_label(live.version) if live else None,
            registry_reachable=router.registry_reachable,
        )

    @app.get("/ready")
    async def ready() -> dict:
        """200 only while a model is served, for orchestrators."""
        live_version()
        return {"status": "ready"}

    @app.get(
        "/info",
        response_model=Info,
        dependencies=auth["dependencies"],
        responses=auth["responses"],
    )
    async def info() -> Info:
        version = live_version()
        described = router.version_info
        if described is not None and _label(described.version) != version:
            described = None
        return Info(
            replica=settings.replica,
            model_name=settings.model_name,
            model_version=version,
            model_stage=settings.model_alias,
            mlflow_tracking_uri=without_credentials(settings.tracking_uri),
            status="ready",
            run_id=described.run_id if described else None,
            metrics=described.metrics if described else {},
            tags=described.tags if described else {},
            registered_at=described.registered_at if described else None,
            model_card=_version_page(settings, router.live.version),
            scoring_server=router.live.url,
            standby_server=router.standby.url if router.standby else None,
            registry_reachable=router.registry_reachable,
            registry_error=scrub(router.registry_error) if router.registry_error else None,
            last_rollout=router.last_rollout,
            rejected_versions=list(router.rejected.values()),
            alias_version=_label(router.alias_version) if router.alias_version else None,
            monitoring=monitor.info(version, described.tags if described else {}),
            challenger=_challenger_info(shadow, canary),
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        dependencies=[*auth["dependencies"], Depends(_json_only)],
        responses={**auth["responses"], **PREDICT_ERRORS},
    )
    async def predict(request: PredictRequest, x_canary_key: CanaryKey = None) -> PredictResponse:
        """The sentiment of one review; `"explain": true` adds the terms behind it."""
        return await answer_one(request, x_canary_key)

    async def answer_one(request: PredictRequest, x_canary_key: str | None) -> PredictResponse:
        problem = text_problem(request.text)
        if problem:
            raise ApiError(400, problem)
        texts, explain, top = [request.text], request.explain, request.top_terms
        answered = await canary.predict_many(x_canary_key, texts, explain, top) if canary else None
        if answered is not None:
            (row,), version = answered
        else:
            row, version = await scorer.predict(request.text, explain, top)
        monitor.log.record("/predict", _label(version), [row], [request.text])
        if shadow is not None:
            shadow.mirror([request.text], [row], version)
        return PredictResponse(model_version=_label(version), **_public(row))

    @app.post(
        "/predict/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        dependencies=[*auth["dependencies"], Depends(_json_only)],
        responses={**auth["responses"], **PREDICT_ERRORS},
    )
    async def predict_batch(request: BatchRequest, x_canary_key: CanaryKey = None) -> BatchResponse:
        """Up to 1,000 reviews in one inference call, answered in the same order."""
        return await answer_many(request, x_canary_key)

    async def answer_many(request: BatchRequest, x_canary_key: str | None) -> BatchResponse:
        texts = request.texts
        problem = texts_problem(texts, "texts")
        if problem:
            raise ApiError(400, problem)
        explain, top = request.explain, request.top_terms
        answered = await canary.predict_many(x_canary_key, texts, explain, top) if canary else None
        rows, version = answered or await scorer.predict_many(texts, explain, top)
        monitor.log.record("/predict/batch", _label(version), rows, texts)
        if shadow is not None:
            shadow.mirror(texts, rows, version)
        return BatchResponse(
            predictions=[_public(row) for row in rows], model_version=_label(version)
        )

    install_fast_routes(
        app,
        {"/predict": (PredictRequest, answer_one), "/predict/batch": (BatchRequest, answer_many)},
    )

    @app.post(
        "/invocations",
        dependencies=auth["dependencies"],
        responses={
            **auth["responses"],
            **{code: {"model": Error} for code in (413, 503, 504)},
        },
        openapi_extra=INVOCATIONS_OPENAPI,
    )
    async def invocations(request: Request) -> Response:
        """MLflow's own wire format, passed to the live scoring server; its answer comes back
        unchanged, except that an error's `stack_trace` is left out."""
        body, content_type = await request.body(), request.headers.get("content-type", "")
        upstream, version = await scorer.invoke(body, content_type or "application/json")
        if upstream.status == 200:
            monitor.log.record_invocation(_label(version), body, content_type, upstream.content)
        upstream = without_stack_trace(upstream)
        return Response(
            upstream.content,
            status_code=upstream.status,
            media_type=upstream.content_type,
            headers={"X-Model-Version": _label(version)},
        )

    @app.get("/metrics", include_in_schema=False, dependencies=auth["dependencies"])
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _json_only(request: Request) -> None:
    # async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
    # Without the header FastAPI would not parse the body and the client would get a puzzling
    # 422; saying what is missing is more use.
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "Content-Type must be application/json.")


def _public(row: Row) -> dict[str, Any]:
    """A scoring server's row as the API answers it: the spec's fields, and the flag
    `no_known_terms` when the model knew none of the text's terms (its confidence is then
    0.5, the intercept's guess). The count itself stays inside; versions that do not report
    it get no flag."""
    public = {key: row[key] for key in ("sentiment", "confidence", "explanation") if key in row}
    known = row.get("known_terms")
    if isinstance(known, int | float) and not isinstance(known, bool) and known == 0:
        public["no_known_terms"] = True
    return public


def _challenger_info(shadow: Shadow | None, canary: Canary | None) -> dict | None:
    figures = shadow.info() if shadow else None
    return {**figures, **canary.info()} if figures and canary else figures


def _label(version: str) -> str:
    return f"v{version}" if version.isdigit() else version


def _version_page(settings: Settings, version: str) -> str | None:
    """The version's page in the MLflow UI, where its model card is its description."""
    tracking = without_credentials(settings.tracking_uri).rstrip("/")
    if not version.isdigit() or not tracking.startswith(("http://", "https://")):
        return None
    return f"{tracking}/#/models/{quote(settings.model_name, safe='')}/versions/{version}"
