"""The Open Inference Protocol (KServe v2, REST) for the served model, beside `/predict`.

Clients of KServe, Seldon MLServer and Triton speak it unchanged: JSON tensors in, JSON
tensors out, errors as `{"error": "..."}`. A request is validated as `/predict` validates a
text, then answered by the same data plane (canary, micro-batching for one text, prediction
log, shadow), and counted by the same middleware. The binary tensor extension is not
offered: a request that uses it gets a 400 saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import MutableHeaders

from gateway import __version__
from gateway.api.inference_types import (
    BINARY_HEADER,
    BINARY_REFUSED,
    InferenceRequest,
    InferenceResponse,
    Live,
    ModelMetadata,
    ModelReady,
    ProtocolError,
    Ready,
    ServerMetadata,
)
from gateway.api.schemas import CanaryKey
from gateway.api.security import UNAUTHORIZED
from gateway.api.services import services
from gateway.errors import ApiError

__all__ = ["PREFIX", "ProtocolErrors", "probes", "router"]

PREFIX = "/v2"
TAGS: list = ["Open Inference Protocol"]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProtocolError} for code in (400, 404, 413, 500, 503, 504)
}
# Added to the routes behind the API keys when they are on.
UNAUTHORIZED_ERROR: dict[int | str, dict[str, Any]] = {
    401: {"model": ProtocolError, "description": UNAUTHORIZED}
}


class _ProtocolRoute(APIRoute):
    """A route whose malformed requests get the protocol's 400 rather than FastAPI's 422, and
    whose binary-extension requests are refused before their body is parsed."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request):
            if BINARY_HEADER in request.headers:
                raise ApiError(400, BINARY_REFUSED)
            try:
                return await handler(request)
            except RequestValidationError as error:
                raise ApiError(400, _validation_message(error)) from None

        return handle


def _validation_message(error: RequestValidationError) -> str:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return "Request body is not valid JSON."
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    return f"{where}: {first['msg']}"


class ProtocolErrors:
    """Every error under /v2 as the protocol spells it, `{"error": "..."}`: the routes' own,
    and those the middleware answers before any route runs (401, 413)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (
            scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/")
        ):
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def renaming(message):
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return None
            if start is None:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return None
            body = _renamed(b"".join(chunks))
            headers = MutableHeaders(scope=start)
            headers["content-length"] = str(len(body))
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, renaming)


def _renamed(body: bytes) -> bytes:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if isinstance(parsed, dict) and set(parsed) == {"detail"} and isinstance(parsed["detail"], str):
        return json.dumps({"error": parsed["detail"]}).encode()
    return body


# Liveness and readiness stay open, as /health and /ready do (gateway/api/security.py).
probes = APIRouter(prefix=PREFIX, route_class=_ProtocolRoute, tags=TAGS)
# Protocol clients (Triton's among them) send JSON without a Content-Type.
router = APIRouter(prefix=PREFIX, route_class=_ProtocolRoute, tags=TAGS, strict_content_type=False)


def _not_ready(name: str | None = None) -> ApiError:
    """The protocol's health APIs answer 4xx for "not ready" (503 is for inference)."""
    what = f"Model '{name}' is" if name else "The server is"
    return ApiError(400, f"{what} not ready: no version is served yet.")


@probes.get("/health/live", response_model=Live)
async def server_live() -> Live:
    """Always 200 while the gateway answers."""
    return Live(live=True)


@probes.get("/health/ready", response_model=Ready, responses={400: {"model": ProtocolError}})
async def server_ready(request: Request) -> Ready:
    """200 only while a model is served; 400 before."""
    if services(request).rollout.live is None:
        raise _not_ready()
    return Ready(ready=True)


@router.get("", response_model=ServerMetadata, responses=ERRORS)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="sentiment-gateway", version=__version__, extensions=[])


@router.get("/models/{name}", response_model=ModelMetadata, responses=ERRORS)
async def model_metadata(name: str, request: Request) -> ModelMetadata:
    """Versions that may be named, and the tensors, from the model's MLflow signature."""
    dataplane = services(request).dataplane
    dataplane.check_model(name)
    return dataplane.metadata(dataplane.servable_versions())


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=ERRORS)
async def version_metadata(name: str, version: str, request: Request) -> ModelMetadata:
    dataplane = services(request).dataplane
    return dataplane.metadata([dataplane.version_of(name, version)])


@router.get("/models/{name}/ready", response_model=ModelReady, responses=ERRORS)
async def model_ready(name: str, request: Request) -> ModelReady:
    dataplane = services(request).dataplane
    dataplane.check_model(name)
    if not dataplane.servable_versions():
        raise _not_ready(name)
    return ModelReady(name=name, ready=True)


@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=ERRORS)
async def version_ready(name: str, version: str, request: Request) -> ModelReady:
    dataplane = services(request).dataplane
    dataplane.check_model(name)
    if not dataplane.servable_versions():
        raise _not_ready(name)
    dataplane.version_of(name, version)
    return ModelReady(name=name, ready=True)


@router.post(
    "/models/{name}/infer",
    response_model=InferenceResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def model_infer(
    name: str, body: InferenceRequest, request: Request, x_canary_key: CanaryKey = None
) -> InferenceResponse:
    """Score a BYTES tensor `text` of shape [n] with the live version (or, in the
    canary, the challenger)."""
    route = f"{PREFIX}/models/{{name}}/infer"
    return await services(request).dataplane.infer(route, name, None, body, x_canary_key)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def version_infer(name: str, version: str, body: InferenceRequest, request: Request):
    """Score with the named version: the live one or the challenger (another: 404)."""
    route = f"{PREFIX}/models/{{name}}/versions/{{version}}/infer"
    return await services(request).dataplane.infer(route, name, version, body, None)
