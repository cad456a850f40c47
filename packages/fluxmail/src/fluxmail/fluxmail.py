"""FluxMail 0.3.x's ``fluxmail.fluxmail`` module: ``from fluxmail.fluxmail import FluxMail``.

The names are the package's own; new code imports them from ``fluxmail``.
"""

from __future__ import annotations

from fluxmail.client import FluxMail
from fluxmail.config import EmailInstance, EmailObject
from fluxmail.errors import FluxMailException
from fluxmail.utils import EMAIL_REGEX, str_to_enum, validate_email

__all__ = [
    "EMAIL_REGEX",
    "EmailInstance",
    "EmailObject",
    "FluxMail",
    "FluxMailException",
    "str_to_enum",
    "validate_email",
]
