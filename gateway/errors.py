"""Every error the API answers is `{"detail": "..."}` with a short reason."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway.scoring import ModelUnavailable, ScoringFailed, ScoringTimeout

NOT_LOADED = "Model not loaded. Service temporarily unavailable. Please try again later."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            return error_response(422, "Request body is not valid JSON.")
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return error_response(422, f"{where}: {first['msg']}")

    @app.exception_handler(ModelUnavailable)
    async def unavailable(_: Request, __: ModelUnavailable) -> JSONResponse:
        return error_response(503, NOT_LOADED)

    @app.exception_handler(ScoringFailed)
    async def failed(_: Request, error: ScoringFailed) -> JSONResponse:
        return error_response(500, f"Prediction failed: {error}")

    @app.exception_handler(ScoringTimeout)
    async def timeout(_: Request, error: ScoringTimeout) -> JSONResponse:
        return error_response(504, str(error))


def error_response(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)
