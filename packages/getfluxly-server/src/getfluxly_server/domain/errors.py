"""Domain errors carry a code from the public contract; the API maps codes to statuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DomainError(Exception):
    """A refusal the caller can act on: ``code`` (contract), ``detail`` (what to do)."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        extra: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra or {}
        #: HTTP headers the answer must carry (Retry-After, X-RateLimit-*).
        self.headers = headers or {}


class NotFound(DomainError):  # noqa: N818 - reads as what happened
    def __init__(self, what: str) -> None:
        super().__init__("not_found", f"No such {what} here (or it belongs to another tenant)")


class ValidationFailed(DomainError):  # noqa: N818
    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__("validation_error", detail, extra=dict(extra))


#: Pydantic's wording where a plainer one says what to do.
_MESSAGES = {
    "extra_forbidden": "is not a field of this request (check its spelling)",
    "missing": "is required",
    "json_invalid": "The body is not valid JSON",
}
#: Errors that mean "not an object" where an object was expected.
_NOT_AN_OBJECT = {"model_type", "model_attributes_type", "dict_type"}
#: Errors of a union tagged by ``provider`` (``domain/provider_settings.py``).
_BAD_TAG = {"unknown_provider", "union_tag_invalid", "union_tag_not_found"}


def invalid_input(errors: Sequence[Any], body: Any) -> ValidationFailed:
    """The refusal for pydantic's ``errors`` about ``body``: its first error, as
    ``detail="smtp_port: Input should be less than or equal to 65535"``, ``field="smtp_port"``.

    Where a body is a tagged union (email providers by ``provider``), pydantic puts the tag in
    the error's location although the client sent no field of that name: a step of the
    location that names nothing in the body is left out (unless it is the last: a missing
    field). Locations from FastAPI start with where the value came from (body, query, ...).
    """
    if not errors:
        return ValidationFailed("Invalid request")
    first = errors[0]
    loc = list(first.get("loc", ()))
    source = loc.pop(0) if loc and loc[0] in ("body", "query", "path", "header") else "body"
    kind = first.get("type", "")
    shape_error = kind in _NOT_AN_OBJECT or kind in _BAD_TAG
    if source == "body" and shape_error and not isinstance(body, dict):
        return ValidationFailed("The body must be a JSON object")
    if kind == "json_invalid":
        return ValidationFailed(f"{_MESSAGES[kind]}: {first.get('msg', '')}")
    path: list[str] = []
    node = body if source == "body" else None
    for index, step in enumerate(loc):
        if isinstance(node, dict) and step not in node and index < len(loc) - 1:
            continue  # a union tag
        path.append(str(step))
        node = node.get(step) if isinstance(node, dict) else None
    if kind in _BAD_TAG:
        path = ["provider"]
    message = _MESSAGES.get(kind, first.get("msg", "Invalid request"))
    if not path:
        return ValidationFailed(message)
    return ValidationFailed(f"{'.'.join(path)}: {message}", field=path[0])
