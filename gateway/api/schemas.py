"""The public API's request and response shapes (the spec's contract)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Header
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

MAX_TEXT_CHARS = 5000
MAX_BATCH = 1000
MAX_TOP_TERMS = 50
EMPTY = "Input text cannot be empty."
TOO_LONG = f"Input text exceeds maximum length of {MAX_TEXT_CHARS} characters."


def text_problem(text: str) -> str | None:
    """What is wrong with one review, as every route says it (None: nothing)."""
    if not text.strip():
        return EMPTY
    if len(text) > MAX_TEXT_CHARS:
        return TOO_LONG
    return None


def texts_problem(texts: list[Any], name: str) -> str | None:
    """What is wrong with a batch of reviews; an item's problem names it (`texts[3]: ...`)."""
    if not texts:
        return "Batch must contain at least one text."
    if len(texts) > MAX_BATCH:
        return f"Batch exceeds maximum size of {MAX_BATCH} texts."
    for index, text in enumerate(texts):
        problem = "must be a string." if not isinstance(text, str) else text_problem(text)
        if problem:
            return f"{name}[{index}]: {problem}"
    return None


CANARY_KEY = (
    "With GATEWAY_CANARY_FRACTION above 0: the key that decides which version answers "
    "(default: the X-Request-ID); the same key always gets the same version."
)
MAX_CANARY_KEY = 128
# The `X-Canary-Key` header of /predict, /predict/batch and /v2's unversioned infer.
CanaryKey = Annotated[str | None, Header(max_length=MAX_CANARY_KEY, description=CANARY_KEY)]


class PredictRequest(BaseModel):
    text: StrictStr = Field(description=f"The review, 1 to {MAX_TEXT_CHARS} characters.")
    explain: StrictBool = Field(False, description="Also return the terms behind the decision.")
    top_terms: StrictInt = Field(
        5, ge=1, le=MAX_TOP_TERMS, description="With `explain`: how many terms to return."
    )


class BatchRequest(BaseModel):
    # Items are checked one by one so that a bad one is reported by its index (400).
    texts: list[Any] = Field(description=f"1 to {MAX_BATCH} reviews.")
    explain: StrictBool = False
    top_terms: StrictInt = Field(5, ge=1, le=MAX_TOP_TERMS)


class Term(BaseModel):
    term: str
    weight: float


class Prediction(BaseModel):
    sentiment: Literal["positive", "negative"]
    confidence: float = Field(ge=0.0, le=1.0)
    explanation: list[Term] | None = None
    no_known_terms: Literal[True] | None = Field(
        None,
        description="Present (true) only when the model knew none of the text's terms (for "
        "example Chinese or emoji only): the sentiment is then the model's prior guess and the "
        "confidence 0.5, not a reading of the text.",
    )


class PredictResponse(Prediction):
    model_version: str


class BatchResponse(BaseModel):
    predictions: list[Prediction]
    model_version: str


class Health(BaseModel):
    status: Literal["healthy", "degraded"]
    model_loaded: bool
    model_name: str
    model_version: str | None
    registry_reachable: bool | None = Field(
        description="Whether the registry answered the last look at the alias (null: not asked "
        "yet). The model keeps being served while it is unreachable."
    )


class Rollout(BaseModel):
    version: str
    kind: Literal["start", "promotion", "rollback", "restart", "failover"]
    outcome: Literal["in progress", "succeeded", "failed"]
    reason: str | None = None
    at: str


class Monitoring(BaseModel):
    """The live version's monitoring figures (the sentiment_* gauges of /metrics)."""

    model_version: str
    window_size: int = Field(description="Predictions of this version in the live window.")
    window_limit: int = Field(description="GATEWAY_MONITOR_WINDOW.")
    positive_ratio: float | None
    confidence_mean: float | None
    known_term_ratio: float | None = Field(
        description="Mean share of a text's words the model knows (null: not reported)."
    )
    reference: bool = Field(description="Whether the version carries a monitoring reference.")
    drift_score: float | None = Field(description="Largest PSI over the features.")
    drift_detected: bool | None
    drift_by_feature: dict[str, float]
    drift_threshold: float | None
    estimated_accuracy: float | None = Field(
        description="Label-free estimate from calibrated confidence (CBPE)."
    )
    feedback_total: int
    feedback_accuracy: float | None = Field(description="Measured from POST /feedback.")
    prediction_log_dropped: int
    prediction_log_buffered: int = Field(
        description="Answers held in memory while the log store refuses writes."
    )
    verdict: str | None = Field(
        description="The monitor job's last verdict on this version: ok, drift or degraded "
        "(its model version tag `monitoring.verdict`)."
    )
    checked_at: str | None
    note: str | None = None


class ChallengerInfo(BaseModel):
    """The challenger's shadow figures, since its version started (request ids, never texts)."""

    model_version: str
    scoring_server: str
    shadow_fraction: float
    requests_compared: int
    rows_compared: int
    agreement: float | None = Field(description="Share of compared reviews labelled alike.")
    mean_confidence_difference: float | None = Field(
        description="Mean |P(positive) challenger - P(positive) production| per review."
    )
    errors: int = Field(description="Mirrored requests the challenger failed.")
    shed: int = Field(description="Reviews not mirrored: the shadow queue was full.")
    latest_disagreements: list[str] = Field(
        description="X-Request-ID of the latest requests where the labels differ."
    )
    canary_fraction: float = 0.0
    canary_requests: int = Field(0, description="Requests this version answered in the canary.")
    canary_dropped: bool = Field(
        False, description="Out of the canary after a failure, until it has a new server."
    )
    canary_fallbacks: int = Field(0, description="Canary requests production answered instead.")


class Info(BaseModel):
    replica: str = Field(
        description="The gateway that answered (GATEWAY_REPLICA; by default <host name>:<port>), "
        "also in the X-Gateway-Replica header of every answer."
    )
    model_name: str
    model_version: str
    model_stage: str
    mlflow_tracking_uri: str
    status: Literal["ready"]
    run_id: str | None
    metrics: dict[str, float]
    tags: dict[str, str]
    registered_at: str | None
    model_card: str | None = Field(
        None,
        description="The version's page in the MLflow UI, whose description is its model card "
        "(null with a tracking URI that is not http(s)).",
    )
    scoring_server: str
    standby_server: str | None = Field(
        description="A ready server of the same version that takes over if the live one dies."
    )
    registry_reachable: bool | None
    registry_error: str | None = Field(description="Why the last look at the registry failed.")
    last_rollout: Rollout | None
    rejected_versions: list[Rollout]
    alias_version: str | None = Field(
        None,
        description="The version the alias names in the registry at the last look (null: not "
        "known yet). With an external scoring server (GATEWAY_SCORING_URL) this is what the "
        "alias names, not necessarily what that server runs: its answers say `unknown`.",
    )
    monitoring: Monitoring | None = Field(
        None, description="The live version's monitoring figures, as in /metrics."
    )
    challenger: ChallengerInfo | None = Field(
        None, description="The challenger alias's version and its shadow figures (null: none runs)."
    )


class FeedbackRequest(BaseModel):
    request_id: StrictStr = Field(
        min_length=1, max_length=128, description="The X-Request-ID of the answer."
    )
    label: Literal["positive", "negative"] = Field(description="The true sentiment.")
    item: StrictInt = Field(
        0, ge=0, le=1_000_000_000, description="The row of a batch answer (0 for /predict)."
    )
    text: StrictStr | None = Field(
        None,
        max_length=MAX_TEXT_CHARS,
        description="The review, if it may be kept (for retraining on labelled feedback): "
        "exactly the text that was answered, or the label is refused (400).",
    )


class FeedbackResponse(BaseModel):
    request_id: str
    item: int
    label: str
    model_version: str = Field(description="The version that gave the answer.")
    sentiment: str = Field(description="What it answered.")
    confidence: float
    correct: bool = Field(description="Whether the answer was the true label.")


class Error(BaseModel):
    detail: str


# MLflow's own scoring format, passed through unchecked: described for /docs and clients.
_MLFLOW_ERROR = {
    "type": "object",
    "description": "MLflow's error: a code and a message (its stack trace is left out).",
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
}
INVOCATIONS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "One of MLflow's input formats, with a `text` column.",
                    "properties": {
                        "dataframe_split": {
                            "type": "object",
                            "properties": {
                                "columns": {"type": "array", "items": {"type": "string"}},
                                "data": {"type": "array", "items": {"type": "array"}},
                            },
                        },
                        "dataframe_records": {"type": "array", "items": {"type": "object"}},
                        "inputs": {},
                        "instances": {"type": "array"},
                        "params": {"type": "object"},
                    },
                },
                "example": {"dataframe_split": {"columns": ["text"], "data": [["A fine film."]]}},
            },
            "text/csv": {"schema": {"type": "string"}, "example": "text\nA fine film.\n"},
        },
    },
    "responses": {
        "200": {
            "description": "The scoring server's predictions, unchanged.",
            "headers": {
                "X-Model-Version": {
                    "description": "The registry version that answered.",
                    "schema": {"type": "string"},
                }
            },
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"predictions": {"type": "array"}},
                        "required": ["predictions"],
                    }
                }
            },
        },
        "400": {
            "description": "The scoring server refused the input.",
            "content": {"application/json": {"schema": _MLFLOW_ERROR}},
        },
        "415": {
            "description": "Neither JSON nor CSV.",
            "content": {"application/json": {"schema": _MLFLOW_ERROR}},
        },
    },
}
