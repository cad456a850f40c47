"""What every relay's webhook adapter is: how its posts are verified, how its secret is made,
and how its payload becomes :class:`~getfluxly_server.domain.feedback.record.FeedbackEvent`
values; and the small readers the parsers share (payloads are the relay's JSON: every field
may be missing or of another type, and none of that may raise past the parser).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from getfluxly_server.domain.feedback.signatures import Incoming

#: The name relays' metadata carries GetFluxly's message id under (delivery/base.py's
#: MESSAGE_ID_FIELD; repeated here, as the domain does not import delivery adapters).
MESSAGE_ID_FIELD = "getfluxly_message_id"
#: The header every outgoing message carries it in (delivery/base.py's MESSAGE_ID_HEADER).
MESSAGE_ID_HEADER = "x-getfluxly-message-id"


@dataclass(frozen=True)
class Material:
    """One configured secret of a relay, decrypted: ``secret`` (a secret GetFluxly made, a
    signing key or public key the relay made; "" for SES) and ``config`` (not secret: SNS
    topic ARNs)."""

    secret: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    """What a stored post held: its feedback events, an SNS subscription to confirm (the
    URL, already verified as signed), and a note on what could not be read."""

    events: list[Any] = field(default_factory=list)  # list[FeedbackEvent]
    subscribe_url: str | None = None
    note: str | None = None


class Unreadable(ValueError):  # noqa: N818 - reads as what the payload is
    """A stored post that holds no payload the relay documents (the note says why)."""


class Relay(Protocol):
    """One relay's webhook adapter."""

    #: The path slug (``/webhooks/<name>/{project_id}``) and the ``source`` of its events.
    name: str
    #: How the secret is made (see domain/feedback/secrets.py): ``generated`` (GetFluxly
    #: makes one), ``standard`` (a ``whsec_`` GetFluxly makes), or the request field the
    #: relay's own material comes in (``secret``, ``public_key``, ``topic_arn``), with
    #: ``optional`` when GetFluxly makes one if it is left out.
    material: str
    optional: bool

    def verify(self, incoming: Incoming, materials: Sequence[Material], now: datetime) -> str:
        """Check the post against the project's materials; its delivery id (what makes a
        replay the same post). Raises ``signatures.Refused``."""
        ...

    def parse(
        self, payload: str, content_type: str, received_at: datetime, delivery_id: str
    ) -> Parsed:
        """The events of a stored post (verified when it came). Raises :class:`Unreadable`."""
        ...


# -- readers --------------------------------------------------------------------------------


def json_of(payload: str) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise Unreadable("the body is not JSON") from None


def text(value: Any) -> str | None:
    """A string (or a number, as text); None for anything else or an empty string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def unix_time(value: Any) -> datetime | None:
    """Seconds (or milliseconds, when that large) since the epoch, as a number or text."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if seconds > 1e11:  # milliseconds
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; none means UTC), or a Unix time."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return unix_time(value)
    if not isinstance(value, str) or not value.strip():
        return None
    raw = value.strip()
    if raw.replace(".", "", 1).isdigit():
        return unix_time(raw)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def event_key(*parts: Any) -> str:
    """A stable id for a report its relay gives none: the same report, replayed, gets the
    same id (so it is recorded once)."""
    joined = "\x1f".join("" if part is None else str(part) for part in parts)
    return "h:" + hashlib.sha256(joined.encode("utf-8", "replace")).hexdigest()[:40]


def metadata_id(*sources: Any) -> str | None:
    """GetFluxly's message id from the first metadata object (or ``[{"name", "value"}]``
    list, as Resend sends tags) that carries it."""
    for source in sources:
        if isinstance(source, dict):
            found = source.get(MESSAGE_ID_FIELD)
            if isinstance(found, list):  # SES message tags: {"name": ["value"]}
                found = found[0] if found else None
            if (value := text(found)) is not None:
                return value
        elif isinstance(source, list):
            for entry in source:
                entry = obj(entry)
                if text(entry.get("name")) == MESSAGE_ID_FIELD and text(entry.get("value")):
                    return text(entry.get("value"))
    return None
