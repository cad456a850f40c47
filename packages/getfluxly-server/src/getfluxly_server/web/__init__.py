"""The dashboard: server-rendered pages (Jinja2) over the same domain services as the API,
for users who sign in (``domain.users``: sessions, roles, CSRF, throttling).

Each module holds one area's pages and registers them on :data:`router` (see
:mod:`.routing` for what every page gets checked for): :mod:`.sign_in` (sign-in, sign-out,
home, static files), :mod:`.overview` (charts), :mod:`.profiles`, :mod:`.template_editor`,
:mod:`.messages`, :mod:`.suppressions`, :mod:`.providers`, :mod:`.settings_pages` (API keys,
projects), :mod:`.inbox` (dev mode's catcher), :mod:`.webhooks` (inbound secrets, outbound
endpoints and their delivery log), :mod:`.subscription_groups`, :mod:`.domain_check` (a
provider's DNS). A capability that lands adds its module here and its line in ``render.NAV``.
"""

from getfluxly_server.web import (  # noqa: F401 - each registers its pages on the router
    domain_check,
    inbox,
    messages,
    overview,
    profiles,
    providers,
    settings_pages,
    sign_in,
    subscription_groups,
    suppressions,
    template_editor,
    webhooks,
)
from getfluxly_server.web.routing import router

__all__ = ["router"]
