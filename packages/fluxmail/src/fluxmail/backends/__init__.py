"""Adapters that let other frameworks send mail through FluxMail.

``fluxmail.backends.django.FluxMailBackend`` is Django's ``EMAIL_BACKEND`` (needs the
``fluxmail[django]`` extra); ``fluxmail.backends.FluxMailBackend`` is the same class, the
path FluxMail 0.3.x documented. Each adapter imports its framework only when it is first used,
so importing this package never needs Django.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FluxMailBackend"]


def __getattr__(name: str) -> Any:
    if name == "FluxMailBackend":
        from fluxmail.backends.django import FluxMailBackend

        return FluxMailBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
