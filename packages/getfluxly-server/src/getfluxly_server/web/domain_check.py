"""Settings → Email providers → Domain check: SPF, DKIM and DMARC of a provider's from
domain, each ok / missing / wrong, with the exact record to publish
(``domain.domain_check``, as ``GET /v1/email-providers/{id}/domain-check``).

The page opens with the form (the DKIM selector the relay gave, optional) and asks DNS when
it is sent (``?check=1``), so opening it never waits on DNS. DNS that does not answer is
shown on the page (422 ``dns_unavailable``) with what to do.
"""

from __future__ import annotations

import re

from fastapi import Response

from getfluxly_server.domain import domain_check
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.storage.models import EmailProvider
from getfluxly_server.web.routing import Ctx, page

#: A DKIM selector as the API takes it (a DNS label).
SELECTOR = re.compile(r"[A-Za-z0-9_-]{1,63}")


def _provider(ctx: Ctx) -> EmailProvider:
    with ctx.db.read() as session:
        row = domain_check.for_provider(session, ctx.user.principal, ctx.params["provider_id"])
        if row.project_id != ctx.params["project_id"]:
            raise NotFound("email provider")
        session.expunge(row)
    return row


@page("/projects/{project_id}/settings/providers/{provider_id}/domain-check")
def check(ctx: Ctx) -> Response:
    provider = _provider(ctx)
    selector = ctx.query.get("dkim_selector", "").strip()
    if selector and not SELECTOR.fullmatch(selector):
        raise ValidationFailed(
            "dkim_selector must be 1-63 letters, digits, - or _ (the name before "
            "._domainkey in the record your relay gave you)",
            field="dkim_selector",
        )
    report = error = None
    status = 200
    if ctx.query.get("check"):
        try:
            report = domain_check.check(
                provider, domain_check.resolver(ctx.settings.dns_resolver), selector or None
            )
        except DomainError as exc:
            error, status = exc, 422
    return ctx.render(
        "domain_check.html", http_status=status, provider=provider, report=report, error=error,
        selector=selector, domain=provider.from_email.rpartition("@")[2].lower(),
    )  # fmt: skip
