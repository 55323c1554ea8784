"""The one prediction path behind every route that scores: `/predict`, `/predict/batch` (also
through the fast routes), `/v2/.../infer` and `/invocations`.

A request is validated, answered by the challenger if its key falls in the canary and
otherwise by production, logged to the prediction log, and production's answer is mirrored to
the shadow. Routes only parse requests and write answers, so the sequence lives here once.
"""

from __future__ import annotations

from typing import Any, cast

from gateway.api.inference_types import (
    OUTPUTS,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    output_tensor,
    selected_outputs,
    tensors,
    texts_of,
)
from gateway.api.schemas import (
    BatchRequest,
    BatchResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
    text_problem,
    texts_problem,
)
from gateway.errors import ApiError, not_loaded
from gateway.experiments.canary import Canary
from gateway.experiments.shadow import Shadow
from gateway.observability.prediction_log import PredictionLog
from gateway.serving.registry import label
from gateway.serving.rollout import Controller
from gateway.serving.scoring import Answer, Row, Scorer
from gateway.settings import Settings
from model.signature import SIGNATURE


class DataPlane:
    """Canary, scoring, prediction log and shadow, in that order, for every prediction."""

    def __init__(
        self,
        settings: Settings,
        rollout: Controller,
        scorer: Scorer,
        log: PredictionLog,
        canary: Canary | None = None,
        shadow: Shadow | None = None,
    ):
        self.model_name = settings.model_name
        self._rollout, self._scorer, self._log = rollout, scorer, log
        self._canary, self._shadow = canary, shadow
        self._metadata = ModelMetadata(
            name=settings.model_name,
            versions=[],
            platform="mlflow",
            inputs=tensors(SIGNATURE.inputs, None),
            outputs=tensors(SIGNATURE.outputs, OUTPUTS),
        )

    async def predict(self, request: PredictRequest, canary_key: str | None) -> PredictResponse:
        """One review (`/predict`). The hot path: the scorer's micro-batcher is awaited here
        directly, with nothing in between."""
        problem = text_problem(request.text)
        if problem:
            raise ApiError(400, problem)
        texts, explain, top = [request.text], request.explain, request.top_terms
        canary = self._canary
        answered = await canary.predict_many(canary_key, texts, explain, top) if canary else None
        if answered is not None:
            rows, version = answered
        else:
            row, version = await self._scorer.predict(request.text, explain, top)
            rows = [row]
        self._answered("/predict", texts, rows, version, production=answered is None)
        return PredictResponse(model_version=label(version), **_public(rows[0]))

    async def predict_batch(self, request: BatchRequest, canary_key: str | None) -> BatchResponse:
        """Up to 1,000 reviews in one scoring call (`/predict/batch`)."""
        texts = request.texts
        problem = texts_problem(texts, "texts")
        if problem:
            raise ApiError(400, problem)
        explain, top = request.explain, request.top_terms
        canary = self._canary
        answered = await canary.predict_many(canary_key, texts, explain, top) if canary else None
        rows, version = answered or await self._scorer.predict_many(texts, explain, top)
        self._answered("/predict/batch", texts, rows, version, production=answered is None)
        # The rows as dicts: BatchResponse validates them into its Predictions.
        predictions = cast("list[Prediction]", [_public(row) for row in rows])
        return BatchResponse(predictions=predictions, model_version=label(version))

    async def infer(
        self,
        route: str,
        name: str,
        version: str | None,
        request: InferenceRequest,
        canary_key: str | None,
    ) -> InferenceResponse:
        """The protocol's inference call. Without a ``version``, as `/predict`: the canary
        may answer, production's answer is mirrored. With one, that version answers (the live
        one, or the challenger: then no canary and no shadow)."""
        self.check_model(name)
        texts = texts_of(request)
        selected = selected_outputs(request)
        wanted = self.version_of(name, version)
        live = self._rollout.live.version if self._rollout.live is not None else None
        canary = self._canary
        if canary is not None and version is not None and wanted != live:
            rows, answered = await canary.score(texts)
        else:
            in_canary = (
                await canary.predict_many(canary_key, texts) if canary and not version else None
            )
            rows, answered = in_canary or await self._production(texts)
            if self._shadow is not None and in_canary is None:
                self._shadow.mirror(texts, rows, answered)
        if version is not None and answered != wanted:
            raise ApiError(404, f"Version '{wanted}' stopped serving during the request.")
        self._log.record(route, label(answered), rows, texts)
        return InferenceResponse(
            model_name=name,
            model_version=answered,
            id=request.id,
            outputs=[output_tensor(output, rows, request.inputs[0].shape) for output in selected],
        )

    async def invoke(self, body: bytes, content_type: str) -> tuple[Answer, str]:
        """MLflow's own format (`/invocations`), passed to the live server as is; a 200 answer
        is logged. Returns the server's answer and who gave it."""
        upstream, version = await self._scorer.invoke(body, content_type or "application/json")
        if upstream.status == 200:
            self._log.record_invocation(label(version), body, content_type, upstream.content)
        return upstream, version

    def servable_versions(self) -> list[str]:
        """The versions a request may name: the live one, and the challenger while it runs."""
        live = self._rollout.live
        versions = [live.version] if live is not None else []
        challenger = self._canary.version if self._canary is not None else None
        return versions + [challenger] if challenger and challenger not in versions else versions

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(404, f"Unknown model '{name}': this gateway serves '{self.model_name}'.")

    def version_of(self, name: str, version: str | None) -> str:
        """The version a request names (or the live one), if it may be served."""
        self.check_model(name)
        servable = self.servable_versions()
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

    def metadata(self, versions: list[str]) -> ModelMetadata:
        """The model's metadata (its tensors from the MLflow signature) for ``versions``."""
        return self._metadata.model_copy(update={"versions": versions})

    async def _production(self, texts: list[str]) -> tuple[list[Row], str]:
        """Production's answer to a protocol request: one text is micro-batched."""
        if len(texts) == 1:
            row, answered = await self._scorer.predict(texts[0])
            return [row], answered
        return await self._scorer.predict_many(texts)

    def _answered(
        self, route: str, texts: list[str], rows: list[Row], version: str, production: bool
    ) -> None:
        """Log the answer; mirror production's to the shadow (a canary answer has no
        production answer to compare with)."""
        self._log.record(route, label(version), rows, texts)
        if production and self._shadow is not None:
            self._shadow.mirror(texts, rows, version)


def _public(row: Row) -> dict[str, Any]:
    """A scoring server's row as the API answers it: the spec's fields, and the flag
    `no_known_terms` when the model knew none of the text's terms (its confidence is then
    0.5, the intercept's guess). The count itself stays inside; versions that do not report
    it get no flag."""
    public: dict[str, Any] = {
        key: row[key] for key in ("sentiment", "confidence", "explanation") if key in row
    }
    known = row.get("known_terms")
    if isinstance(known, int | float) and not isinstance(known, bool) and known == 0:
        public["no_known_terms"] = True
    return public
