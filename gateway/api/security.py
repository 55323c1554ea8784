"""Optional API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

With no keys configured nothing changes. With keys, every path except the open ones below
needs one of them, checked before the body is read; a missing or wrong key gets 401, and so
does a request that sends both headers with one of them wrong. Each given key is compared
with every configured one in constant time (`secrets.compare_digest`), so neither a key's
content nor which key matched shows in the timing. Keys are never logged.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer

from gateway.api.schemas import Error
from gateway.errors import ApiError

# Liveness, readiness and the documentation stay reachable without a key.
OPEN = {"/", "/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
# The same for the Open Inference Protocol (gateway/api/inference_protocol.py).
OPEN |= {"/v2/health/live", "/v2/health/ready"}
# The page's own files (gateway/api/page/): the page loads without a key, then asks for one.
OPEN_PREFIXES = ("/page/",)
UNAUTHORIZED = "Missing or invalid API key."

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BearerAuth",
    description="`Authorization: Bearer <key>`, with one of the keys in GATEWAY_API_KEYS.",
)
_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyAuth",
    description="`X-API-Key: <key>`, with one of the keys in GATEWAY_API_KEYS.",
)


def documented(keys: list[str]) -> dict[str, Any]:
    """Route options that declare the two schemes in OpenAPI (the Authorize button in /docs).

    They only describe; `RequireApiKey` enforces. Empty while authentication is off.
    """
    if not keys:
        return {"dependencies": [], "responses": {}}
    return {
        "dependencies": [Security(_bearer), Security(_header)],
        "responses": {401: {"model": Error, "description": UNAUTHORIZED}},
    }


class RequireApiKey:
    """401 with `WWW-Authenticate: Bearer` for any request to a closed path without a valid key."""

    def __init__(self, app, keys: list[str]):
        self.app = app
        self._keys = [key.encode() for key in keys]

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["path"] in OPEN
            or scope["path"].startswith(OPEN_PREFIXES)
            or self.allowed(scope["headers"])
        ):
            return await self.app(scope, receive, send)
        await ApiError(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"}).send(send)

    def allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        given = []
        for name, value in headers:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given.append(credentials.strip())
            elif name == b"x-api-key":
                given.append(value.strip())
        # Every key given must be valid (a wrong one is never outweighed by a right one), and
        # every pair is compared, whatever matched before: no short cut to time.
        valid = 0
        for candidate in given:
            matched = False
            for key in self._keys:
                matched |= secrets.compare_digest(candidate, key)
            valid += matched
        return bool(given) and valid == len(given)
