"""What every management request and response model shares.

Requests refuse unknown fields (a typo is a 400 naming it, never silently dropped); responses
declare every field they carry, so ``/openapi.json`` describes each body and each answer.
Times go out as ISO 8601 in UTC with a ``Z`` (the public format: ``2026-01-31T12:00:00.123456Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic_core import PydanticCustomError

from getfluxly_server.domain import paging


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


#: A list's page size (``?limit=``, 1 to 500): ``limit: PageLimit = paging.DEFAULT_LIMIT``.
PageLimit = Annotated[int, Query(ge=1, le=paging.MAX_LIMIT)]
#: The ``next_cursor`` of the page before (``?cursor=``): ``cursor: PageCursor = None``.
PageCursor = Annotated[str | None, Query(max_length=1000)]


#: How deep a JSON object given for templates (``data``, traits, event properties) may nest
#: (the object itself is level 1), as ingested event properties may.
MAX_JSON_DEPTH = 32


def _depth(value: Any) -> int:
    """How many levels of objects and arrays ``value`` nests (iteratively: a hostile body
    must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value) > MAX_JSON_DEPTH:
        raise PydanticCustomError("too_deep", f"nests deeper than {MAX_JSON_DEPTH} levels")
    return value


#: A JSON object of the caller's values for templates, at most :data:`MAX_JSON_DEPTH` deep.
JSONObject = Annotated[dict[str, Any], AfterValidator(_shallow)]


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
