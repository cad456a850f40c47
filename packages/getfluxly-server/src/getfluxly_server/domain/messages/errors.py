"""The refusals of the message ledger, each with its code (``api/errors.py`` maps them)."""

from __future__ import annotations

from getfluxly_server.domain.errors import DomainError, ValidationFailed


class NoProvider(DomainError):  # noqa: N818 - reads as what happened
    """The project has no email provider to send through (409 ``no_provider``)."""

    def __init__(self, project_id: str) -> None:
        super().__init__(
            "no_provider",
            "This project has no email provider to send through: add one with "
            f"POST /v1/projects/{project_id}/email-providers, then send again",
        )


class ProfileErased(DomainError):  # noqa: N818
    """The recipient profile was erased, or is being erased (409 ``profile_erased``)."""

    def __init__(self, pending: bool = False) -> None:
        what = "is being erased" if pending else "was erased"
        super().__init__(
            "profile_erased", f"The recipient profile {what}: no message may be sent to it"
        )


class NoEmail(ValidationFailed):
    """The recipient profile has no usable ``email`` trait (400 ``validation_error``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"to: the profile {reason}; set it with an identify call "
            '(traits: {"email": ...}) or send to an address',
            field="to",
        )


class NotRetryable(DomainError):  # noqa: N818
    """Only a ``failed`` or ``unknown`` message can be retried (409 ``not_retryable``)."""

    def __init__(self, status: str, *, erased: bool = False) -> None:
        detail = (
            "This message belongs to an erased profile and can never be sent"
            if erased
            else f"Only failed or unknown messages can be retried; this one is {status}"
        )
        super().__init__("not_retryable", detail)
