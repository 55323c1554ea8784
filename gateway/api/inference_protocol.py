"""The Open Inference Protocol (KServe v2, REST) for the served model, beside `/predict`.

Clients of KServe, Seldon MLServer and Triton speak it unchanged: JSON tensors in, JSON
tensors out, errors as `{"error": "..."}`. A request is validated as `/predict` validates a
text, then scored through the same scorer (micro-batching for one text), logged to the same
prediction log, and counted by the same middleware. The binary tensor extension is not
offered: a request that uses it gets a 400 saying so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, StrictStr
from starlette.datastructures import MutableHeaders

from gateway import __version__
from gateway.api.schemas import text_problem, texts_problem
from gateway.api.security import UNAUTHORIZED, documented
from gateway.errors import ApiError, not_loaded
from gateway.experiments.canary import Canary, CanaryKey
from gateway.experiments.shadow import Shadow
from gateway.observability.live_monitor import LiveMonitor
from gateway.serving.rollout import Controller
from gateway.serving.scoring import Row, Scorer
from gateway.settings import Settings
from model.signature import SIGNATURE

__all__ = ["PREFIX", "ProtocolErrors", "install_inference_protocol", "servable_versions"]

PREFIX = "/v2"
INPUT = "text"
# The public outputs, as /predict answers them; the signature's other columns stay inside.
OUTPUTS = ("sentiment", "confidence")
BINARY_HEADER = "inference-header-content-length"
BINARY_REFUSED = (
    "The binary tensor extension is not supported: send JSON tensors "
    "(without the Inference-Header-Content-Length header)."
)
# MLflow's column types as the protocol's tensor datatypes.
DATATYPES = {
    "string": "BYTES",
    "binary": "BYTES",
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
}


class ProtocolError(BaseModel):
    error: str


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class RequestInput(BaseModel):
    name: StrictStr
    shape: list[int]
    datatype: StrictStr
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="The texts: a flat list, or nested as the shape says.")


class RequestOutput(BaseModel):
    name: StrictStr
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: StrictStr | None = Field(None, description="Echoed in the answer.")
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(description=f"One BYTES tensor named `{INPUT}`.")
    outputs: list[RequestOutput] | None = Field(
        None, description=f"A subset of {list(OUTPUTS)} to answer (default: both)."
    )


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str = Field(
        description='The registry version, as the protocol expects it ("3"); /predict labels '
        'the same version "v3".'
    )
    id: str | None = None
    outputs: list[ResponseOutput]


def servable_versions(router: Controller, canary: Canary | None = None) -> list[str]:
    """The versions a request may name: the live one, and the challenger while it runs."""
    versions = [router.live.version] if router.live is not None else []
    challenger = canary.version if canary is not None else None
    return versions + [challenger] if challenger and challenger not in versions else versions


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


def install_inference_protocol(
    app: FastAPI,
    settings: Settings,
    router: Controller,
    scorer: Scorer,
    monitor: LiveMonitor,
    canary: Canary | None = None,
    shadow: Shadow | None = None,
) -> None:
    """Add the /v2 routes. With a
    challenger, unversioned requests take part in the canary and the shadow as /predict's
    do, and the challenger's version may be named."""
    tags: list = ["Open Inference Protocol"]
    # Liveness and readiness stay open, as /health and /ready do (gateway/api/security.py).
    health = APIRouter(prefix=PREFIX, route_class=_ProtocolRoute, tags=tags)
    # Protocol clients (Triton's among them) send JSON without a Content-Type.
    v2 = APIRouter(prefix=PREFIX, route_class=_ProtocolRoute, tags=tags, strict_content_type=False)
    errors = {code: {"model": ProtocolError} for code in (400, 404, 413, 500, 503, 504)}
    if settings.keys:
        errors[401] = {"model": ProtocolError, "description": UNAUTHORIZED}
    metadata = ModelMetadata(
        name=settings.model_name,
        versions=[],
        platform="mlflow",
        inputs=_tensors(SIGNATURE.inputs, None),
        outputs=_tensors(SIGNATURE.outputs, OUTPUTS),
    )

    def model(name: str) -> None:
        if name != settings.model_name:
            raise ApiError(
                404, f"Unknown model '{name}': this gateway serves '{settings.model_name}'."
            )

    def version_of(name: str, version: str | None) -> str:
        """The version a request names (or the live one), if it may be served."""
        model(name)
        servable = servable_versions(router, canary)
        if version is None:
            if not servable:
                raise not_loaded()
            return servable[0]
        if version not in servable:
            shown = ", ".join(servable) or "none"
            raise ApiError(
                404, f"Model '{name}' has no servable version '{version}' (served: {shown})."
            )
        return version

    @health.get("/health/live", response_model=Live)
    async def server_live() -> Live:
        """Always 200 while the gateway answers."""
        return Live(live=True)

    def not_ready(name: str | None = None) -> ApiError:
        """The protocol's health APIs answer 4xx for "not ready" (503 is for inference)."""
        what = f"Model '{name}' is" if name else "The server is"
        return ApiError(400, f"{what} not ready: no version is served yet.")

    @health.get("/health/ready", response_model=Ready, responses={400: {"model": ProtocolError}})
    async def server_ready() -> Ready:
        """200 only while a model is served; 400 before."""
        if router.live is None:
            raise not_ready()
        return Ready(ready=True)

    @v2.get("", response_model=ServerMetadata, responses=errors)
    async def server_metadata() -> ServerMetadata:
        return ServerMetadata(name="sentiment-gateway", version=__version__, extensions=[])

    @v2.get("/models/{name}", response_model=ModelMetadata, responses=errors)
    async def model_metadata(name: str) -> ModelMetadata:
        """Versions that may be named, and the tensors, from the model's MLflow signature."""
        model(name)
        return metadata.model_copy(update={"versions": servable_versions(router, canary)})

    @v2.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=errors)
    async def version_metadata(name: str, version: str) -> ModelMetadata:
        return metadata.model_copy(update={"versions": [version_of(name, version)]})

    @v2.get("/models/{name}/ready", response_model=ModelReady, responses=errors)
    async def model_ready(name: str) -> ModelReady:
        model(name)
        if not servable_versions(router, canary):
            raise not_ready(name)
        return ModelReady(name=name, ready=True)

    @v2.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=errors)
    async def version_ready(name: str, version: str) -> ModelReady:
        model(name)
        if not servable_versions(router, canary):
            raise not_ready(name)
        version_of(name, version)
        return ModelReady(name=name, ready=True)

    async def infer(
        route: str, name: str, version: str | None, request: InferenceRequest, key: str | None
    ) -> InferenceResponse:
        model(name)
        texts = _texts(request)
        selected = _selected(request)
        wanted = version_of(name, version)
        live = router.live.version if router.live is not None else None
        if canary is not None and version is not None and wanted != live:
            rows, answered = await canary.score(texts)
        else:
            in_canary = await canary.predict_many(key, texts) if canary and not version else None
            rows, answered = in_canary or await _production(texts)
            if shadow is not None and in_canary is None:
                shadow.mirror(texts, rows, answered)
        if version is not None and answered != wanted:
            raise ApiError(404, f"Version '{wanted}' stopped serving during the request.")
        monitor.log.record(route, _label(answered), rows, texts)
        return InferenceResponse(
            model_name=name,
            model_version=answered,
            id=request.id,
            outputs=[_output(output, rows, request.inputs[0].shape) for output in selected],
        )

    async def _production(texts: list[str]) -> tuple[list[Row], str]:
        if len(texts) == 1:
            row, answered = await scorer.predict(texts[0])
            return [row], answered
        return await scorer.predict_many(texts)

    @v2.post(
        "/models/{name}/infer",
        response_model=InferenceResponse,
        response_model_exclude_none=True,
        responses=errors,
    )
    async def model_infer(
        name: str, request: InferenceRequest, x_canary_key: CanaryKey = None
    ) -> InferenceResponse:
        """Score a BYTES tensor `text` of shape [n] with the live version (or, in the
        canary, the challenger)."""
        return await infer(f"{PREFIX}/models/{{name}}/infer", name, None, request, x_canary_key)

    @v2.post(
        "/models/{name}/versions/{version}/infer",
        response_model=InferenceResponse,
        response_model_exclude_none=True,
        responses=errors,
    )
    async def version_infer(name: str, version: str, request: InferenceRequest):
        """Score with the named version: the live one or the challenger (another: 404)."""
        route = f"{PREFIX}/models/{{name}}/versions/{{version}}/infer"
        return await infer(route, name, version, request, None)

    app.include_router(health)
    app.include_router(v2, dependencies=documented(settings.keys)["dependencies"])


def _tensors(schema: Any, names: tuple[str, ...] | None) -> list[TensorMetadata]:
    specs = [spec for spec in schema.inputs if names is None or spec.name in names]
    if names is not None:
        specs.sort(key=lambda spec: names.index(spec.name))
    return [
        TensorMetadata(name=spec.name, datatype=DATATYPES[spec.type.name], shape=[-1])
        for spec in specs
    ]


def _texts(request: InferenceRequest) -> list[str]:
    """The `text` tensor's elements, checked as /predict and /predict/batch check theirs."""
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT]:
        raise ApiError(
            400, f"Expected one input tensor named '{INPUT}' (BYTES, shape [n]); got {names}."
        )
    (tensor,) = request.inputs
    if tensor.datatype != "BYTES":
        raise ApiError(400, f"Input '{INPUT}' must have datatype BYTES, not {tensor.datatype}.")
    if (tensor.parameters or {}).get("binary_data_size") is not None:
        raise ApiError(400, BINARY_REFUSED)
    if not tensor.shape or any(size < 0 for size in tensor.shape):
        raise ApiError(400, f"Input '{INPUT}' has an invalid shape {tensor.shape}.")
    texts = _flat(tensor.data, len(tensor.shape))
    if math.prod(tensor.shape) != len(texts):
        raise ApiError(
            400,
            f"Input '{INPUT}' has shape {tensor.shape} but {len(texts)} elements in its data.",
        )
    # One text gets /predict's message as is; a batch's says which element.
    single = text_problem(texts[0]) if len(texts) == 1 and isinstance(texts[0], str) else None
    problem = single or texts_problem(texts, INPUT)
    if problem:
        raise ApiError(400, problem)
    return texts


def _flat(data: list[Any], depth: int) -> list[Any]:
    """The elements of ``data``, nested at most ``depth`` lists deep (its shape's rank)."""
    flat: list[Any] = []
    level = [data]
    for _ in range(max(depth, 1)):
        if not any(isinstance(item, list) for item in level):
            break
        items: list[Any] = []
        for item in level:
            items.extend(item if isinstance(item, list) else [item])
        level = items
    else:
        if any(isinstance(item, list) for item in level):
            raise ApiError(
                400, f"Input '{INPUT}' data is nested deeper than its shape's {depth} dimensions."
            )
    flat.extend(level)
    return flat


def _selected(request: InferenceRequest) -> list[str]:
    if request.outputs is None:
        return list(OUTPUTS)
    names = [output.name for output in request.outputs]
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise ApiError(400, f"Unknown output(s) {unknown}: the model answers {list(OUTPUTS)}.")
    return list(dict.fromkeys(names))


def _output(name: str, rows: list[Row], shape: list[int]) -> ResponseOutput:
    """One value per text, in the input's shape ([n] or [n, 1]), its data flattened."""
    datatype = next(t.datatype for t in _tensors(SIGNATURE.outputs, (name,)))
    shape = shape if math.prod(shape) == len(rows) else [len(rows)]
    return ResponseOutput(
        name=name, shape=shape, datatype=datatype, data=[row[name] for row in rows]
    )


def _label(version: str) -> str:
    """The prediction log's label for a version, as /predict's ("v3")."""
    return f"v{version}" if version.isdigit() else version
