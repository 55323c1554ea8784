"""The page for people at `GET /`: browsers get it, API clients keep the JSON summary.

The page is plain files in `assets/` beside this module (HTML, one script, one style sheet,
an icon), served from this gateway under a strict Content-Security-Policy: nothing inline,
nothing loaded from anywhere else, and the only requests it makes go back to this gateway.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

FILES = Path(__file__).with_name("assets")
ASSETS = "/page"
SUMMARY = {"service": "sentiment gateway", "docs": "/docs", "health": "/health"}
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (ETag), so a new gateway's page is never mixed with old files.
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    """The page's files, each with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def wants_html(accept: str) -> bool:
    """True when the client ranks `text/html` above `application/json`.

    Browsers ask for `text/html` first; curl, httpx and most clients send `*/*` or ask for
    JSON, and keep getting the summary they got before the page existed.
    """
    quality = {"text/html": 0.0, "application/json": 0.0}
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in quality:
            quality[media] = max(quality[media], q)
    return quality["text/html"] > quality["application/json"]


# `GET /` by content negotiation, and the page's files under `/page/`.
router = APIRouter()
router.mount(ASSETS, _Assets(directory=FILES), name="page")


@router.get("/", include_in_schema=False)
async def index(request: Request) -> Response:
    if wants_html(request.headers.get("accept", "")):
        return FileResponse(FILES / "index.html", headers={**HEADERS, "Vary": "Accept"})
    return JSONResponse(SUMMARY, headers={"Vary": "Accept"})
