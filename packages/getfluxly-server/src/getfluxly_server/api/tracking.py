"""The open pixel and the click redirect (public: the token is the credential).

``GET /t/o/{token}`` answers a 1x1 GIF and records an open; ``GET /t/c/{token}`` redirects
(302) to the link the token was made for and records a click. A token GetFluxly did not
sign, or one changed in any way, is 404 ``not_found`` and redirects nowhere. ``HEAD`` is
answered the same way (a scanner's: recorded, flagged machine). Answers are never cached,
so each open and click reaches the server. A failure to record never keeps a reader from
the link: it is logged, and the redirect is given. Requests are counted per client address
(api/public_limits.py): past ``GETFLUXLY_PUBLIC_RATE_LIMIT_*``, 429 ``rate_limited``.
"""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from getfluxly_server.api.client_address import client_address
from getfluxly_server.api.deps import DB, settings
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.api.public_limits import PublicVisitor
from getfluxly_server.domain import tracking
from getfluxly_server.domain.tracking import Hit, Links, engagement
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import now

log = logging.getLogger("getfluxly.tracking")
router = APIRouter(tags=["tracking"])

#: The smallest transparent GIF (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
#: Never cached (each open and click reaches the server), and the token never sent on as a
#: Referer to the site a click goes to.
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
}


def links(request: Request) -> Links:
    """The server's links (made once per app: deriving the signing keys costs a little)."""
    made: Links | None = getattr(request.app.state, "tracking_links", None)
    if made is None:
        config = settings(request)
        made = tracking.links_for(config.public_url, config.keyring)
        request.app.state.tracking_links = made
    return made


ServerLinks = Annotated[Links, Depends(links)]


def hit(request: Request) -> Hit:
    """Who followed the link, as far as the request tells."""
    return Hit(
        method=request.method.upper(),
        user_agent=request.headers.get("user-agent", ""),
        address=client_address(request.scope, settings(request).trusted_proxies),
        at=now(),
    )


#: Too many requests from one address (api/public_limits.py).
LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"description": "rate_limited: too many requests from this address", "model": ErrorBody},
}
_OPEN: dict[int | str, dict[str, Any]] = {
    200: {"description": "The pixel", "content": {"image/gif": {}}},
    **LIMITED,
}
_CLICK: dict[int | str, dict[str, Any]] = {
    302: {"description": "To the link that was in the message (Location)"},
    **LIMITED,
}


@router.api_route(
    "/t/o/{token}",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses=_OPEN,
    dependencies=[PublicVisitor],
)
def open_pixel(token: str, request: Request, db: DB, signed: ServerLinks) -> Response:
    """The open pixel of a message: records an open (machine ones flagged)."""
    message_id = signed.opened(token)
    _record(db, "open", lambda s: engagement.opened(s, message_id, hit(request), _seconds(request)))
    return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)


@router.api_route(
    "/t/c/{token}",
    methods=["GET", "HEAD"],
    response_class=RedirectResponse,
    status_code=302,
    responses=_CLICK,
    dependencies=[PublicVisitor],
)
def click(token: str, request: Request, db: DB, signed: ServerLinks) -> RedirectResponse:
    """A tracked link: records a click (scanners flagged) and redirects to the link."""
    message_id, url = signed.clicked(token)
    _record(
        db,
        "click",
        lambda s: engagement.clicked(s, message_id, url, hit(request), _seconds(request)),
    )
    return RedirectResponse(url, status_code=302, headers=NO_CACHE)


def _seconds(request: Request) -> float:
    return settings(request).tracking_scanner_seconds


def _record(db: Database, what: str, action: Any) -> None:
    try:
        with db.transaction() as session:
            action(session)
    except Exception:  # the reader still gets the pixel or the link
        log.exception("could not record a tracked %s", what)
