"""The gateway's one error type: every error the API answers is `{"detail": "..."}`.

Routes, the scoring client and the middleware raise or send `ApiError`; one handler turns it
into a response, and middleware that answers before any route runs sends the same body.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

NOT_LOADED = "Model not loaded. Service temporarily unavailable. Please try again later."


class ApiError(Exception):
    """An answer other than success: a status, a one-line reason and optional headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, self.status, headers=self.headers or None)

    async def send(self, send) -> None:
        """Answer straight from ASGI middleware, before (or instead of) any route."""
        body = json.dumps({"detail": self.detail}).encode()
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def not_loaded() -> ApiError:
    return ApiError(503, NOT_LOADED)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            return ApiError(422, "Request body is not valid JSON.").response()
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return ApiError(422, f"{where}: {first['msg']}").response()
