"""Email provider settings as the API takes them: one pydantic model per provider kind, made
from the kind's own field list (``ProviderKind.fields`` in ``delivery/``), so each kind is
described once and the OpenAPI document shows every kind's body.

- :data:`NewProvider`: the create body, a union tagged by ``provider`` (``smtp`` when absent).
- :data:`ProviderChanges`: the PATCH body, every field of every kind, all optional; the
  stored provider's kind then checks the changes with :func:`changes_model`.

Common rules: unknown fields are refused; text is one printable line; an empty string is a
missing value (required fields refuse it, optional ones are cleared by it); ports and other
numbers are JSON integers, never strings or booleans; names fit their columns
(``storage.models.NAME_MAX``).

Every kind also takes the sending limits (:data:`LIMITS`), held across every worker process
(``domain/provider_limits.py``): ``max_connections`` (1 to :data:`MAX_CONNECTIONS_MAX`),
``rate_per_second`` (a JSON number above 0, at most :data:`RATE_PER_SECOND_MAX`; fractions
allowed: 0.5 is one message every two seconds) and ``rate_per_hour`` (1 to
:data:`RATE_PER_HOUR_MAX`). Each is optional; left out or null means no limit of that kind,
and null in a PATCH removes it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    create_model,
)
from pydantic_core import PydanticCustomError

from fluxmail import FluxMailException, parse_address
from getfluxly_server.delivery.base import Field as SettingSpec
from getfluxly_server.delivery.base import ProviderKind
from getfluxly_server.delivery.registry import PROVIDERS
from getfluxly_server.storage.models import ADDRESS_MAX, NAME_MAX

#: The longest value of a provider-specific text setting (hosts, user names, API keys).
TEXT_MAX = 4096
DEFAULT_KIND = "smtp"
#: The sending limits every kind takes (columns of their own, not part of ``config``).
LIMITS = ("max_connections", "rate_per_second", "rate_per_hour")
#: Bounds of the limits: beyond these a value is a typo rather than a relay's real limit
#: (every held connection is a socket in some worker; 100,000 a second is past any relay).
MAX_CONNECTIONS_MAX = 100
RATE_PER_SECOND_MAX = 100_000.0
RATE_PER_HOUR_MAX = 100_000_000


def _missing_if_blank(value: Any) -> Any:
    if value is None or value == "":
        raise PydanticCustomError("missing", "is required")
    return value


def _none_if_blank(value: Any) -> Any:
    return None if value == "" else value


def _printable(value: str) -> str:
    if not value.isprintable():
        raise PydanticCustomError("one_line", "must be one line, without control characters")
    return value.strip()


def _one_line(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise PydanticCustomError("one_line", "must be one line of text")
    return value


def _address(role: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            return parse_address(value, role=role).addr_spec
        except FluxMailException as exc:
            raise PydanticCustomError("invalid_address", "{reason}", {"reason": str(exc)}) from None

    return check


def _text(limit: int) -> Any:
    return Annotated[str, StringConstraints(max_length=limit), AfterValidator(_printable)]


def _required(annotation: Any) -> Any:
    return Annotated[annotation, BeforeValidator(_missing_if_blank)]


def _optional(annotation: Any) -> Any:
    return Annotated[annotation | None, BeforeValidator(_none_if_blank)]


def _address_type(role: str) -> Any:
    return Annotated[
        str, StringConstraints(max_length=ADDRESS_MAX), AfterValidator(_printable),
        AfterValidator(_address(role)),
    ]  # fmt: skip


def _setting_type(spec: SettingSpec) -> Any:
    """The type of one provider-specific setting, from its spec."""
    if spec.kind is int:
        return Annotated[int, Field(strict=True, ge=spec.low, le=spec.high)]
    if spec.choices:
        return cast(Any, Literal).__getitem__(spec.choices)
    return Annotated[str, StringConstraints(max_length=TEXT_MAX), AfterValidator(_one_line)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _limit_fields() -> dict[str, Any]:
    """The sending limits (optional; null is "no limit"). Numbers only: a string or a
    boolean is refused, as for ports."""
    connections = Annotated[int, Field(strict=True, ge=1, le=MAX_CONNECTIONS_MAX)]
    per_second = Annotated[float, Field(strict=True, gt=0, le=RATE_PER_SECOND_MAX)]
    per_hour = Annotated[int, Field(strict=True, ge=1, le=RATE_PER_HOUR_MAX)]
    return {
        "max_connections": (_optional(connections), Field(None, description=(
            "Connections held to this provider at once, across every worker process "
            f"(1-{MAX_CONNECTIONS_MAX}); null: no limit"))),
        "rate_per_second": (_optional(per_second), Field(None, description=(
            "Messages a second, across every worker process (above 0, fractions allowed; "
            "bursts of up to one second's worth); null: no limit"))),
        "rate_per_hour": (_optional(per_hour), Field(None, description=(
            "Messages in any hour, across every worker process; null: no limit"))),
    }  # fmt: skip


def _common(*, partial: bool) -> dict[str, Any]:
    """The settings every kind shares (the sender, the limits). When ``partial`` the
    required ones may be left out, but not emptied."""
    return {
        "display_name": (_required(_text(NAME_MAX)), None if partial else ...),
        "from_email": (_required(_address_type("from_email")), None if partial else ...),
        "from_name": (_optional(_text(NAME_MAX)), None),
        "reply_to": (_optional(_address_type("reply_to")), None),
        **_limit_fields(),
    }


def _class_name(kind: ProviderKind, suffix: str) -> str:
    return "".join(part.capitalize() for part in kind.name.split("_")) + suffix


@functools.cache
def create_model_for(kind_name: str) -> type[BaseModel]:
    """The create body of one kind: every required setting must be there."""
    kind = PROVIDERS[kind_name]
    fields: dict[str, Any] = {
        "provider": (cast(Any, Literal).__getitem__(kind.name), kind.name),
        **_common(partial=False),
    }
    for spec in kind.fields:
        kind_type = _setting_type(spec)
        fields[spec.name] = (
            (_required(kind_type), ...) if spec.required else (_optional(kind_type), None)
        )
    model: type[BaseModel] = create_model(
        _class_name(kind, "Provider"), __base__=_Body, __doc__=f"A {kind.label} provider.",
        **fields,
    )  # fmt: skip
    return model


@functools.cache
def changes_model(kind_name: str) -> type[BaseModel]:
    """The PATCH body of one kind: any of its settings, each checked as on create."""
    kind = PROVIDERS[kind_name]
    fields: dict[str, Any] = {
        "provider": (cast(Any, Literal).__getitem__(kind.name) | None, None),
        **_common(partial=True),
    }
    for spec in kind.fields:
        needed = _required if spec.required else _optional
        fields[spec.name] = (needed(_setting_type(spec)), None)
    model: type[BaseModel] = create_model(
        _class_name(kind, "ProviderChanges"), __base__=_Body, **fields
    )
    return model


def _kind_of(body: Any) -> str | None:
    if isinstance(body, dict):
        name = body.get("provider", DEFAULT_KIND)
        return name if isinstance(name, str) else None
    return getattr(body, "provider", None)


#: The create body: one of the kinds, by ``provider`` (``smtp`` when it is left out).
NewProvider: Any = Annotated[
    Union[tuple(Annotated[create_model_for(name), Tag(name)] for name in PROVIDERS)],  # noqa: UP007
    Discriminator(
        _kind_of,
        custom_error_type="unknown_provider",
        custom_error_message=f"must be one of {', '.join(PROVIDERS)}",
    ),
]


def _changes_fields() -> dict[str, Any]:
    """Every setting of every kind, optional, by shape only (text or integer): values pass
    through as sent, and the provider's own kind checks them (:func:`changes_model`)."""
    raw_text = Annotated[str, StringConstraints(max_length=TEXT_MAX)]
    fields: dict[str, Any] = {
        "provider": (str | None, None),
        "display_name": (raw_text | None, None),
        "from_email": (raw_text | None, None),
        "from_name": (raw_text | None, None),
        "reply_to": (raw_text | None, None),
        **_limit_fields(),
    }
    for kind in PROVIDERS.values():
        for spec in kind.fields:
            shape = _setting_type(spec) if spec.kind is int else raw_text
            fields.setdefault(spec.name, (shape | None, None))
    return fields


#: The PATCH body (see the module docstring).
ProviderChanges: type[BaseModel] = create_model(
    "ProviderChanges",
    __base__=_Body,
    __doc__="Any settings of the provider's kind; left-out settings keep their value.",
    **_changes_fields(),
)


class TestSend(_Body):
    """``POST /v1/email-providers/{id}/test``: where the test message goes."""

    __test__ = False  # not a pytest class, whatever its name

    to: _required(_address_type("to"))  # type: ignore[valid-type]
