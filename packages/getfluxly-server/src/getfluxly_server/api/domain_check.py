"""``GET /v1/email-providers/{provider_id}/domain-check`` (workspace key): SPF, DKIM and
DMARC of the provider's from domain, each ``ok``, ``missing`` or ``wrong`` with the record to
publish (``domain/domain_check.py``). ``?dkim_selector=`` names the DKIM selector your relay
gave you. DNS that does not answer is 422 ``dns_unavailable``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB, settings
from getfluxly_server.api.models import Response, Timestamp
from getfluxly_server.domain import domain_check as domain
from getfluxly_server.settings import Settings
from getfluxly_server.storage.models import now

router = APIRouter(prefix="/v1/email-providers", tags=["email providers"])
Config = Annotated[Settings, Depends(settings)]


class RecordView(Response):
    type: str
    name: str
    value: str


class CheckView(Response):
    status: Literal["ok", "missing", "wrong"]
    #: The DNS name looked at.
    name: str
    #: What is wrong and what to do.
    detail: str
    #: The records found there.
    found: list[str]
    #: The record to publish (null when ok).
    publish: RecordView | None


class SpfView(CheckView):
    #: DNS lookups evaluating the record takes (at most 10).
    lookups: int | None


class DkimView(CheckView):
    selector: str | None


class DmarcView(CheckView):
    #: none, quarantine or reject.
    policy: str | None


class DomainCheckView(Response):
    provider_id: str
    domain: str
    #: The relay recognised (ses, sendgrid, mailgun, postmark, resend, smtp2go, brevo,
    #: mailtrap, google, microsoft), or null.
    relay: str | None
    spf: SpfView
    dkim: DkimView
    dmarc: DmarcView
    checked_at: Timestamp


class OneDomainCheck(Response):
    domain_check: DomainCheckView


def _base(found: domain.Check) -> dict[str, object]:
    publish = found.publish
    return {
        "status": found.status, "name": found.name, "detail": found.detail,
        "found": list(found.found),
        "publish": RecordView(type=publish.type, name=publish.name, value=publish.value)
        if publish else None,
    }  # fmt: skip


@router.get("/{provider_id}/domain-check")
async def domain_check(
    provider_id: str,
    who: WorkspaceKey,
    db: DB,
    config: Config,
    dkim_selector: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9_-]{1,63}$", description="the DKIM selector your relay uses"),
    ] = None,
) -> OneDomainCheck:
    """Check the from domain's SPF, DKIM and DMARC records."""

    def run() -> OneDomainCheck:
        with db.read() as session:
            provider = domain.for_provider(session, who, provider_id)
            session.expunge(provider)
        report = domain.check(provider, domain.resolver(config.dns_resolver), dkim_selector)
        return OneDomainCheck(
            domain_check=DomainCheckView(
                provider_id=provider.id, domain=report.domain, relay=report.relay,
                spf=SpfView.model_validate({**_base(report.spf), "lookups": report.spf.lookups}),
                dkim=DkimView.model_validate(
                    {**_base(report.dkim), "selector": report.dkim.selector}
                ),
                dmarc=DmarcView.model_validate(
                    {**_base(report.dmarc), "policy": report.dmarc.policy}
                ),
                checked_at=now(),
            )
        )  # fmt: skip

    return await run_in_threadpool(run)
