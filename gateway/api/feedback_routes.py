"""`POST /feedback`: the true label of an earlier answer, named by its request id."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.api.schemas import Error, FeedbackRequest, FeedbackResponse
from gateway.api.services import services
from gateway.errors import ApiError
from gateway.observability.feedback import (
    AlreadyLabelled,
    Busy,
    NotInLog,
    NotTheAnsweredText,
    StoreUnavailable,
)

# Behind the API keys, when they are on (the app adds them as it includes this router).
router = APIRouter()


@router.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackResponse,
    responses={code: {"model": Error} for code in (400, 404, 409, 413, 422, 503)},
)
async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    """Record the true label of an answer still in the prediction log (`X-Request-ID`;
    `item` is the row of a batch). One label per answer."""
    try:
        # The log store, and a short wait for this gateway's log to write what it holds.
        record = await services(request).feedback.label(
            body.request_id, body.item, body.label, body.text
        )
    except Busy:
        raise ApiError(
            503,
            "Too many labels are being stored at once. Please try again shortly.",
            headers={"Retry-After": "1"},
        ) from None
    except StoreUnavailable:
        raise ApiError(
            503,
            "The feedback store cannot be reached right now; the label was not stored. "
            "Please try again shortly.",
            headers={"Retry-After": "5"},
        ) from None
    except NotInLog:
        raise ApiError(
            404,
            f"Request id {body.request_id!r} (item {body.item}) is not in the prediction log.",
        ) from None
    except NotTheAnsweredText:
        raise ApiError(
            400,
            f"The text sent is not the review answered for request id "
            f"{body.request_id!r} (item {body.item}): send the label alone, or the "
            "review exactly as it was sent for prediction.",
        ) from None
    except AlreadyLabelled:
        raise ApiError(
            409,
            f"Request id {body.request_id!r} (item {body.item}) has a label already.",
        ) from None
    return FeedbackResponse(
        request_id=record.request_id,
        item=record.item,
        label=record.label,
        model_version=record.model_version,
        sentiment=record.sentiment,
        confidence=record.confidence,
        correct=record.correct,
    )
