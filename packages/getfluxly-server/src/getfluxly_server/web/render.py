"""Pages from Jinja2 templates (``web/templates``, autoescaped), with what every page shows:
the navigation, the project selector, the signed-in user and the CSRF token for forms.

The navigation is :data:`NAV`, one entry per capability: a capability that lands (segments,
automations, broadcasts, webhooks) adds its line here and its page module in ``web/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from getfluxly_server.domain import tenancy, users

if TYPE_CHECKING:
    from getfluxly_server.web.routing import Ctx


@dataclass(frozen=True)
class NavItem:
    label: str
    #: Under the current project (``/projects/{id}`` + path), or a whole-workspace path.
    path: str
    per_project: bool = True
    dev_only: bool = False


#: The dashboard's sections, in the order they are shown.
NAV: tuple[NavItem, ...] = (
    NavItem("Overview", ""),
    NavItem("Profiles", "/profiles"),
    NavItem("Templates", "/templates"),
    NavItem("Messages", "/messages"),
    NavItem("Suppressions", "/suppressions"),
    # Segments, automations, broadcasts and webhooks go here as they land.
    NavItem("Email providers", "/settings/providers"),
    NavItem("Webhooks", "/settings/webhooks"),
    NavItem("Outbound webhooks", "/settings/outbound-webhooks"),
    NavItem("Subscription groups", "/settings/subscription-groups"),
    NavItem("API keys", "/settings/keys", per_project=False),
    NavItem("Projects", "/settings/projects", per_project=False),
    NavItem("Users", "/settings/users", per_project=False),
    NavItem("Dev inbox", "/dev/inbox", per_project=False, dev_only=True),
)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


_ENV = Environment(
    loader=PackageLoader("getfluxly_server.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["when"] = _when


def _html(template: str, status: int, values: dict[str, Any]) -> HTMLResponse:
    body = _ENV.get_template(template).render(**values)
    response = HTMLResponse(body, status_code=status)
    # Pages are per user: never cached; never framed (clickjacking); scripts are our own.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'"
    )
    return response


def page(ctx: Ctx, template_name: str, /, *, http_status: int = 200, **values: Any) -> HTMLResponse:
    """A page of the dashboard for the signed-in user (runs in a worker thread)."""
    with ctx.db.read() as session:
        projects = [(p.id, p.name) for p in tenancy.projects(session, ctx.user.principal)]
    project_id = ctx.params.get("project_id") or (projects[0][0] if projects else None)
    return _html(
        template_name,
        http_status,
        {
            "user": ctx.user,
            "csrf": ctx.user.csrf_token,
            "projects": projects,
            "project_id": project_id,
            "nav": [n for n in NAV if ctx.settings.dev or not n.dev_only],
            "path": ctx.request.url.path,
            "flash": ctx.query.get("flash", "")[:300],
            "can_edit": ctx.allows("edit"),
            "can_admin": ctx.allows("admin"),
            **values,
        },
    )


def standalone(
    request: Request,
    template: str,
    *,
    status: int = 200,
    user: users.SignedInUser | None = None,
    **values: Any,
) -> HTMLResponse:
    """A page outside the signed-in layout's data (sign-in, errors)."""
    return _html(
        template,
        status,
        {"user": user, "csrf": user.csrf_token if user else "", "projects": [],
         "project_id": None, "nav": [], "path": request.url.path, "flash": "",
         "can_edit": False, "can_admin": False, **values},
    )  # fmt: skip
