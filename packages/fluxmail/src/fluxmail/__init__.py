"""FluxMail: send email over SMTP from Python, safely, sync or async.

>>> from fluxmail import FluxMail
>>> mailer = FluxMail("smtp", "smtp.example.com", port=587, use_tls=True,
...                   username="me@example.com", password="app-password")
>>> mailer.create("Hello", ["you@example.com"], "Hi there").send()  # doctest: +SKIP
'Email sent successfully via SMTP.'
"""

from fluxmail._version import __version__
from fluxmail.bulk import BulkSender
from fluxmail.client import FluxMail
from fluxmail.compose import MessageTemplate
from fluxmail.config import EmailInstance, EmailObject
from fluxmail.errors import (
    AuthError,
    FluxMailException,
    RecipientsRefused,
    SMTPConnectError,
    SMTPReplyError,
    SMTPTimeoutError,
    TLSError,
)
from fluxmail.pool import AsyncSMTPPool, PoolOptions, SMTPPool
from fluxmail.protocol.replies import Reply
from fluxmail.ratelimit import RateLimit
from fluxmail.result import SendResult
from fluxmail.template import EmailTemplate

__all__ = [
    "AsyncSMTPPool",
    "AuthError",
    "BulkSender",
    "EmailInstance",
    "EmailObject",
    "EmailTemplate",
    "FluxMail",
    "FluxMailException",
    "MessageTemplate",
    "PoolOptions",
    "RateLimit",
    "RecipientsRefused",
    "Reply",
    "SMTPConnectError",
    "SMTPPool",
    "SMTPReplyError",
    "SMTPTimeoutError",
    "SendResult",
    "TLSError",
    "__version__",
]
