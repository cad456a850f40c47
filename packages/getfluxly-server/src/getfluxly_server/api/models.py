"""What every management request and response model shares.

Requests refuse unknown fields (a typo is a 400 naming it, never silently dropped); responses
declare every field they carry, so ``/openapi.json`` describes each body and each answer.
Times go out as ISO 8601 in UTC with a ``Z`` (the public format: ``2026-01-31T12:00:00.123456Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Body
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


#: A moment, written as the API always writes them.
Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str, when_used="json")]


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is in year 0 in UTC
        raise ValueError("the moment must fall within the years 1 to 9999 in UTC") from None


#: A moment a request gives: with a zone (``Z`` or an offset; naive ones are refused), in
#: UTC once read, and within what both databases can store.
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class Request(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    """An answer: exactly the declared fields."""

    model_config = ConfigDict(extra="forbid")


class Action(Request):
    """An action's optional body (``/start``, ``/pause``, ``/activate``, ...): nothing is
    needed, an empty body or none will do."""

    #: Why (kept in the server's log).
    note: str | None = Field(default=None, max_length=500)


#: The body parameter of an action endpoint: optional, and described in the OpenAPI document.
ActionBody = Annotated[Action, Body(default_factory=Action)]
