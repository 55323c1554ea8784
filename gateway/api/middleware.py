"""ASGI middleware: a request id, the replica's name, a JSON log line and metrics for every
request; a body limit."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect

from gateway.errors import ApiError
from gateway.logs import REQUEST_ID
from gateway.observability.metrics import Metrics

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

log = logging.getLogger("gateway")
# nginx's code for "the client closed the connection before the answer" (never sent).
CLIENT_CLOSED = 499


class Observe:
    """Request id, one JSON log line and metrics for every request; 500 for anything unhandled
    before an answer started. Every answer names the replica that gave it (X-Gateway-Replica),
    so a client behind a load balancer can tell the gateways apart."""

    def __init__(self, app, metrics: Metrics, replica: str = ""):
        self.app, self.metrics = app, metrics
        self.replica = replica

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        # The status sent, or None while no response has started (so nothing is mistaken
        # for a 500 that was never sent, and no second response follows a started one).
        status: int | None = None
        fields: dict[str, object] = {}
        gone = False  # the client left before any answer started

        async def receive_noting_departure():
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and status is None:
                gone = True
            return message

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.append("X-Request-ID", request_id)
                if self.replica:
                    headers.append("X-Gateway-Replica", self.replica)
            await send(message)

        try:
            await self.app(scope, receive_noting_departure, send_with_id)
        except ClientDisconnect:
            gone = True
        except Exception:
            log.exception("unhandled error")
            if status is None:
                await ApiError(500, "Internal server error.").send(send_with_id)
            else:
                # Headers are out: the answer cannot be replaced, only cut short.
                fields["incomplete"] = True
        finally:
            if gone:
                # Whatever the app answered after that (a 400 for the unreadable body) went
                # nowhere: count it apart from the answers clients got.
                status, fields["client_disconnected"] = CLIENT_CLOSED, True
            status = 500 if status is None else status
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
                        **fields,
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
                return await ApiError(413, self._detail()).send(send)
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await ApiError(413, self._detail()).send(send)
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
