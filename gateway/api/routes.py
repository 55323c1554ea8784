"""The spec's API: health, readiness, the served version, predictions, MLflow's own scoring
format and the metrics. Each route parses, asks the app's services, and answers."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response

from gateway.api.schemas import (
    INVOCATIONS_OPENAPI,
    BatchRequest,
    BatchResponse,
    CanaryKey,
    ChallengerInfo,
    Error,
    Health,
    Info,
    Monitoring,
    PredictRequest,
    PredictResponse,
    Rollout,
)
from gateway.api.services import Services, services
from gateway.errors import ApiError, not_loaded
from gateway.experiments.canary import Canary
from gateway.experiments.shadow import Shadow
from gateway.observability.metrics import CONTENT_TYPE_LATEST
from gateway.redact import scrub, without_credentials
from gateway.serving.registry import label
from gateway.serving.scoring import Upstream, without_stack_trace
from gateway.settings import Settings

# Every error is `{"detail": "..."}`; 401 is added when API keys are on.
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error} for code in (400, 413, 415, 422, 500, 503, 504)
}

# Open to all: orchestrators probe them.
probes = APIRouter()
# Behind the API keys, when they are on (the app adds them as it includes this router).
router = APIRouter()


@probes.get("/health", response_model=Health)
async def health(request: Request) -> Health:
    """Always 200: `healthy` while a model is served, `degraded` otherwise."""
    wired = services(request)
    live = wired.rollout.live
    return Health(
        status="healthy" if live else "degraded",
        model_loaded=live is not None,
        model_name=wired.settings.model_name,
        model_version=label(live.version) if live else None,
        registry_reachable=wired.rollout.registry_reachable,
    )


@probes.get("/ready")
async def ready(request: Request) -> dict:
    """200 only while a model is served, for orchestrators."""
    _live(services(request))
    return {"status": "ready"}


@router.get("/info", response_model=Info)
async def info(request: Request) -> Info:
    wired = services(request)
    settings, rollout = wired.settings, wired.rollout
    live = _live(wired)
    version = label(live.version)
    described = rollout.version_info
    if described is not None and label(described.version) != version:
        described = None
    # The rollout events, the monitoring figures and the challenger's are dicts: Info
    # validates them into its models (Rollout, Monitoring, ChallengerInfo).
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
        model_card=_version_page(settings, live.version),
        scoring_server=live.url,
        standby_server=rollout.standby.url if rollout.standby else None,
        registry_reachable=rollout.registry_reachable,
        registry_error=scrub(rollout.registry_error) if rollout.registry_error else None,
        last_rollout=cast("Rollout | None", rollout.last_rollout),
        rejected_versions=cast("list[Rollout]", list(rollout.rejected.values())),
        alias_version=label(rollout.alias_version) if rollout.alias_version else None,
        monitoring=cast(
            "Monitoring", wired.monitor.info(version, described.tags if described else {})
        ),
        challenger=cast("ChallengerInfo | None", _challenger_info(wired.shadow, wired.canary)),
    )


async def _json_only(request: Request) -> None:
    # async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
    # Without the header FastAPI would not parse the body and the client would get a puzzling
    # 422; saying what is missing is more use.
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "Content-Type must be application/json.")


# Well-formed requests to these two take the fast path (gateway/api/fast_routes.py, put in
# front of them by the app) to the same data plane methods; these answer all the others.
@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    dependencies=[Depends(_json_only)],
    responses=PREDICT_ERRORS,
)
async def predict(
    body: PredictRequest, request: Request, x_canary_key: CanaryKey = None
) -> PredictResponse:
    """The sentiment of one review; `"explain": true` adds the terms behind it."""
    return await services(request).dataplane.predict(body, x_canary_key)


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    dependencies=[Depends(_json_only)],
    responses=PREDICT_ERRORS,
)
async def predict_batch(
    body: BatchRequest, request: Request, x_canary_key: CanaryKey = None
) -> BatchResponse:
    """Up to 1,000 reviews in one inference call, answered in the same order."""
    return await services(request).dataplane.predict_batch(body, x_canary_key)


@router.post(
    "/invocations",
    responses={code: {"model": Error} for code in (413, 503, 504)},
    openapi_extra=INVOCATIONS_OPENAPI,
)
async def invocations(request: Request) -> Response:
    """MLflow's own wire format, passed to the live scoring server; its answer comes back
    unchanged, except that an error's `stack_trace` is left out."""
    body, content_type = await request.body(), request.headers.get("content-type", "")
    upstream, version = await services(request).dataplane.invoke(body, content_type)
    upstream = without_stack_trace(upstream)
    return Response(
        upstream.content,
        status_code=upstream.status,
        media_type=upstream.content_type,
        headers={"X-Model-Version": label(version)},
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus(request: Request) -> Response:
    return Response(services(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _live(wired: Services) -> Upstream:
    """The live server; 503 while there is none."""
    live = wired.rollout.live
    if live is None:
        raise not_loaded()
    return live


def _challenger_info(shadow: Shadow | None, canary: Canary | None) -> dict | None:
    figures = shadow.info() if shadow else None
    return {**figures, **canary.info()} if figures and canary else figures


def _version_page(settings: Settings, version: str) -> str | None:
    """The version's page in the MLflow UI, where its model card is its description."""
    tracking = without_credentials(settings.tracking_uri).rstrip("/")
    if not version.isdigit() or not tracking.startswith(("http://", "https://")):
        return None
    return f"{tracking}/#/models/{quote(settings.model_name, safe='')}/versions/{version}"
