"""How a FluxMail is configured: the object type, host forms and the environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from typing import NamedTuple, TypeVar

from fluxmail.errors import FluxMailException


class EmailObject(Enum):
    """How mail leaves: over SMTP, or through Outlook desktop (Windows only)."""

    SMTP = "smtp"
    OUTLOOK = "outlook"

    @classmethod
    def _missing_(cls, value: object) -> EmailObject | None:
        # Match "SMTP", "smtp", "Outlook"... by name or value, case-insensitively.
        if isinstance(value, str):
            wanted = value.strip().lower()
            for member in cls:
                if wanted in (member.value, member.name.lower()):
                    return member
        return None

    @classmethod
    def parse(cls, value: object) -> EmailObject:
        """The member for ``value``; ``invalid_config`` naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise FluxMailException(
                f"Unknown email object type {value!r}; use 'smtp' or 'outlook'", "invalid_config"
            ) from None


class EmailInstance(NamedTuple):
    """A relay host and the mail domain it serves (``domain`` names our Message-IDs)."""

    relay: str
    domain: str = ""


class HostSpec(NamedTuple):
    relay: str
    domain: str
    port: int | None


def parse_host(host: object) -> HostSpec:
    """Read the three host forms: ``"relay"``, ``"relay:domain"`` or ``"relay:587"``, and
    an :class:`EmailInstance`. A numeric part after the colon is a port. Else ``TypeError``.
    """
    if isinstance(host, EmailInstance):
        return HostSpec(host.relay.strip(), host.domain.strip(), None)
    if not isinstance(host, str):
        raise TypeError(
            f"host must be a string ('relay', 'relay:domain', 'relay:port') or an "
            f"EmailInstance, not {type(host).__name__}"
        )
    relay, sep, rest = host.strip().partition(":")
    rest = rest.strip()
    if sep and rest.isdigit():
        port = int(rest)
        if not 0 < port < 65536:
            raise FluxMailException(
                f"Port {port} in host {host!r} is out of range", "invalid_config"
            )
        return HostSpec(relay.strip(), "", port)
    return HostSpec(relay.strip(), rest, None)


N = TypeVar("N", int, float)

_TRUE = {"true", "1", "yes"}


def env_flag(value: str | None) -> bool:
    """``true``, ``1`` or ``yes`` in any case is true; anything else (or nothing) is false."""
    return value is not None and value.strip().lower() in _TRUE


def env_number(env: Mapping[str, str], name: str, kind: type[N], default: N) -> N:
    """Read a number variable; a malformed one is ``invalid_config`` naming the variable."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return kind(raw.strip())
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise FluxMailException(
            f"Environment variable {name}={raw!r} is not {noun}", "invalid_config"
        ) from None


def settings_from_env(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """The FluxMail constructor arguments that the ``FLUXMAIL_*`` variables describe."""
    env = os.environ if env is None else env
    object_type = EmailObject.parse(env.get("FLUXMAIL_TYPE") or "smtp")
    host = env.get("FLUXMAIL_HOST", "").strip()
    if object_type is EmailObject.SMTP and not host:
        raise FluxMailException(
            "FLUXMAIL_HOST is not set; set it to your relay, e.g. smtp.example.com",
            "invalid_config",
        )
    return {
        "object_type": object_type,
        "host": host,
        "port": env_number(env, "FLUXMAIL_PORT", int, 25),
        "username": env.get("FLUXMAIL_USERNAME") or None,
        "password": env.get("FLUXMAIL_PASSWORD") or None,
        "use_tls": env_flag(env.get("FLUXMAIL_TLS")),
        "use_ssl": env_flag(env.get("FLUXMAIL_SSL")),
        # A float: 0.3.x's int() refused "2.5", which is a fine timeout.
        "timeout": env_number(env, "FLUXMAIL_TIMEOUT", float, 30.0),
        "max_retries": env_number(env, "FLUXMAIL_MAX_RETRIES", int, 0),
        "retry_delay": env_number(env, "FLUXMAIL_RETRY_DELAY", float, 1.0),
    }
