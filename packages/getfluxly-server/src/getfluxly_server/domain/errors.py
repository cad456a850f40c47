"""Domain errors carry a code from the public contract; the API maps codes to statuses."""

from __future__ import annotations


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
