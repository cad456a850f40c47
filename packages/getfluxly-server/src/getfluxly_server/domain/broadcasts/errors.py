"""The broadcast refusals that are not plain validation errors."""

from __future__ import annotations

from getfluxly_server.domain.errors import DomainError

#: Per action: what the broadcast must be, and the action's past participle.
_NEEDS = {
    "start": ("a draft", "started"),
    "pause": ("a sending", "paused"),
    "resume": ("a paused", "resumed"),
    "cancel": ("a draft, scheduled, sending or paused", "cancelled"),
    "edit": ("a draft or scheduled", "edited"),
}


class InvalidTransition(DomainError):  # noqa: N818 - reads as what happened
    """``invalid_transition`` (409): the action does not apply to the broadcast's status.
    Carries ``status`` (the broadcast's) and ``action``."""

    def __init__(self, action: str, status: str) -> None:
        needs, done = _NEEDS[action]
        super().__init__(
            "invalid_transition",
            f"Cannot {action} a broadcast that is {status}: only {needs} broadcast can be "
            f"{done}. GET it to see where it is.",
            extra={"status": status, "action": action},
        )
