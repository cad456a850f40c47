"""FluxMail 0.3.x's ``fluxmail.utils``: the helpers scripts written for it import from here.

``validate_email``, ``str_to_enum`` and ``EMAIL_REGEX`` behave as they did, with one fix: an
address holding a line break or another control character is refused (header injection).
``FluxMailException``, ``EmailInstance`` and ``EmailObject`` are the package's own classes.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TypeVar

from fluxmail.config import EmailInstance, EmailObject
from fluxmail.errors import FluxMailException
from fluxmail.protocol.commands import has_control_chars

__all__ = [
    "EMAIL_REGEX",
    "EmailInstance",
    "EmailObject",
    "FluxMailException",
    "str_to_enum",
    "validate_email",
]

#: 0.3.x's loose shape check: something, ``@``, something with a dot.
EMAIL_REGEX = re.compile(r"[^@]+@[^@]+\.[^@]+")

E = TypeVar("E", bound=Enum)


def str_to_enum(enum_cls: type[E], item: str | E) -> E:
    """The member of ``enum_cls`` named ``item`` (any case), else the one whose value it is.

    ValueError ("Invalid value ...") if nothing matches; TypeError for a non-string.
    """
    if isinstance(item, enum_cls):
        return item
    if not isinstance(item, str):
        raise TypeError(f"Item must be a string or enum member of: {enum_cls._member_names_}")
    wanted = item.lower()
    for member in enum_cls:
        if member.name.lower() == wanted:
            return member
    for member in enum_cls:
        if isinstance(member.value, str) and member.value.lower() == wanted:
            return member
    raise ValueError(
        f"Invalid value '{item}' for {enum_cls.__name__}. Must be one of: {enum_cls._member_names_}"
    )


def validate_email(item: str) -> str:
    """The address stripped, lowercased and without a trailing dot.

    ``no_email`` for an empty one; ``invalid_email`` for one without a single ``@`` and a dot
    after it, with a dot at either side of the ``@`` or at the start, or with a control
    character. Both codes' errors are also ``ValueError``.
    """
    if not item:
        raise FluxMailException("No email address provided.", code="no_email")
    if not isinstance(item, str) or has_control_chars(item):
        raise FluxMailException(
            f"Invalid email {item!r}: it must be text without line breaks or control characters.",
            code="invalid_email",
        )
    address = item.strip().lower().rstrip(".")
    if address.startswith(".") or ".@" in address or "@" not in address or "@." in address:
        raise FluxMailException(f"Invalid email '{address}': format issue.", code="invalid_email")
    if not EMAIL_REGEX.match(address):
        raise FluxMailException(
            f"Invalid email '{address}': does not match expected pattern.", code="invalid_email"
        )
    return address
