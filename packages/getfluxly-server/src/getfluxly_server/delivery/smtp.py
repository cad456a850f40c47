"""Any SMTP relay, through FluxMail: connect-time verification and sending."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fluxmail import EmailInstance, FluxMail, FluxMailException
from getfluxly_server.delivery.base import (
    BuildContext,
    DeliveryError,
    DeliveryResult,
    Field,
    OutgoingEmail,
    ProviderKind,
    check_host_allowed,
    check_hostname,
    is_public_host,
)
from getfluxly_server.delivery.sender import sender_mailbox

#: What to try, in the API's own terms, where FluxMail's message (which speaks of its own
#: parameters) is not the right thing to show.
REPLACE = {
    "starttls_not_advertised": "The relay does not offer STARTTLS on this port; switch "
    "smtp_secure to ssl (usually port 465), or use the relay's STARTTLS port (usually 587)",
    "auth_requires_tls": "The relay would only let us log in without encryption; use "
    "smtp_secure starttls or ssl",
}
#: What to try, where FluxMail's own message does not already say it.
ADVICE = {
    "tls_failed": "The port may expect the other TLS mode (starttls on 587, ssl on 465), or "
    "the relay's certificate is not trusted",
    "timeout": "Check the host and port, and whether an egress firewall drops the traffic "
    "(many networks block 25 and 587; try 2525)",
}
_CODE = {
    "connection_failed": "connection_refused",
    "connection_lost": "connection_refused",
    "auth_unsupported": "auth_failed",
    "auth_requires_tls": "auth_failed",
    "smtp_permanent": "rejected",
    "recipients_refused": "rejected",
    "smtp_transient": "deferred",
}
_TRANSIENT = {"connection_refused", "connection_failed", "connection_lost", "timeout",
              "smtp_transient"}  # fmt: skip


def _error(exc: FluxMailException) -> DeliveryError:
    cause = exc.__cause__ if isinstance(exc.__cause__, FluxMailException) else exc
    code = cause.code or "send_failed"
    advice = ADVICE.get(code)
    detail = REPLACE.get(code) or (f"{cause}. {advice}" if advice else str(cause))
    return DeliveryError(_CODE.get(code, code), detail, transient=code in _TRANSIENT)


class SMTPProvider:
    """A relay reached over SMTP with ``smtp_secure`` = starttls | ssl | none."""

    def __init__(
        self, config: Mapping[str, Any], secrets: Mapping[str, str], context: BuildContext
    ) -> None:
        self.host = check_hostname(str(config["smtp_host"]), "smtp_host")
        self.port = int(config["smtp_port"])
        self.secure = str(config["smtp_secure"])
        self.context = context
        self._mailer = FluxMail(
            "smtp",
            EmailInstance(self.host),  # never FluxMail's "host:port" syntax: IPv6 stays whole
            port=self.port,
            username=str(config["username"]),
            password=secrets["password"],
            use_tls=self.secure == "starttls",
            use_ssl=self.secure == "ssl",
            timeout=context.timeout,
            # "none" is the operator's explicit choice for a trusted in-house relay.
            allow_plaintext_auth=self.secure == "none",
        )

    def verify(self) -> list[str]:
        warnings = check_host_allowed(self.host, self.context)
        if self.secure == "none" and is_public_host(self.host):
            warnings.append(
                f"{self.host} is a public host and smtp_secure is none: the password and every "
                "message cross the internet unencrypted; use starttls or ssl"
            )
        try:
            self._mailer.test_connection()
        except FluxMailException as exc:
            raise _error(exc) from exc
        return warnings

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        check_host_allowed(self.host, self.context)
        sender = sender_mailbox(email.from_email, email.from_name)
        started = time.perf_counter()
        try:
            self._mailer.create(
                email.subject,
                list(email.to),
                email.html if email.html is not None else email.text or "",
                sender=sender,
                reply_to=email.reply_to,
                html_body=email.html is not None,
                plain_body=email.text if email.html is not None else None,
                headers=dict(email.headers),
            ).send()
        except FluxMailException as exc:
            raise _error(exc) from exc
        result = self._mailer.last_result
        assert result is not None
        return DeliveryResult(
            provider_message_id=result.queue_id,
            reply=str(result.reply),
            elapsed_ms=round((time.perf_counter() - started) * 1000),
        )


SMTP = ProviderKind(
    name="smtp",
    label="Custom SMTP",
    fields=(
        Field("smtp_host"),
        Field("smtp_port", int, low=1, high=65535),
        Field("smtp_secure", choices=("starttls", "ssl", "none")),
        Field("username"),
        Field("password", secret=True),
    ),
    build=SMTPProvider,
)
