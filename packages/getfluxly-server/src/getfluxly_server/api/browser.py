"""The browser script (``GET /v1/browser/gflux.js``) and the CORS that lets it post events.

Customer sites include ``<script src="https://HOST/v1/browser/gflux.js" data-key="gflux_pub_..."
async></script>``; the script (``static/gflux.js``, documented in its header) then posts events
cross-origin to ``/v1/events/batch``. Only the ingest paths answer CORS: a publishable key
may do nothing else anyway, and the management API must never be readable from other sites.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from fastapi import APIRouter, Request, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

router = APIRouter(prefix="/v1/browser", tags=["browser"])

#: Read once, at import: the file never changes while the server runs.
SCRIPT = (resources.files("getfluxly_server") / "static" / "gflux.js").read_bytes()
#: A strong validator, so a browser or CDN revalidates with a 304 instead of a download.
ETAG = f'"{hashlib.sha256(SCRIPT).hexdigest()[:32]}"'
_HEADERS = {
    # Short: a new server version reaches customer pages within minutes.
    "Cache-Control": "public, max-age=300",
    "ETag": ETAG,
    # Only needed when a page loads the script with crossorigin=, e.g. to see its errors.
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
}
#: The paths the script posts to from any origin.
CORS_PATHS = frozenset({"/v1/events", "/v1/events/batch"})


@router.get("/gflux.js", response_class=Response)
def script(request: Request) -> Response:
    """The browser script: page views, ``track``, ``identify``, batching (see its header)."""
    if ETAG in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=_HEADERS)
    return Response(SCRIPT, media_type="text/javascript; charset=utf-8", headers=_HEADERS)


class IngestCORS:
    """Permissive CORS for :data:`CORS_PATHS` only; every other path passes untouched.

    Any origin may POST, without credentials (the key is in ``Authorization`` or
    ``?api_key=``, never in a cookie), and read the rate-limit headers so the script can back
    off. Preflights are answered here and cached by the browser for ten minutes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            # Sites posting to a server on a private network (a self-hosted install): the
            # endpoints are meant to be reached from any page.
            allow_private_network=True,
            expose_headers=[
                "Retry-After",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in CORS_PATHS:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
