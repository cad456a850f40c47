"""The dashboard: server-rendered pages (Jinja2) over the same domain services as the API,
for users who sign in (``domain.users``: sessions, roles, CSRF, throttling).

Each module holds one area's pages and registers them on :data:`router` (see
:mod:`.routing` for what every page gets checked for): :mod:`.sign_in` (sign-in, sign-out,
home, static files), :mod:`.overview` (charts), :mod:`.profiles`, :mod:`.template_editor`,
:mod:`.messages`, :mod:`.suppressions`, :mod:`.providers`, :mod:`.settings_pages` (API keys,
projects), :mod:`.inbox` (dev mode's catcher), :mod:`.webhooks` (inbound secrets, outbound
endpoints and their delivery log), :mod:`.subscription_groups`, :mod:`.domain_check` (a
provider's DNS), :mod:`.segments` (with the rule builder of :mod:`.segment_rules`),
:mod:`.automations` (the flow drawn by :mod:`.automation_flow`), :mod:`.broadcasts`. A
capability that lands adds its module here and its line in ``render.NAV``.
"""

from getfluxly_server.web import (  # noqa: F401 - each registers its pages on the router
    automations,
    broadcasts,
    domain_check,
    inbox,
    messages,
    overview,
    profiles,
    providers,
    segments,
    settings_pages,
    sign_in,
    subscription_groups,
    suppressions,
    template_editor,
    webhooks,
)
from getfluxly_server.web.routing import router

__all__ = ["router"]
