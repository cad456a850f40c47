"""FluxMail 0.3.x's private transport module, kept as the patch point its tests used.

0.3.x sent through :mod:`smtplib` and aiosmtplib from here, and its
``fluxmail.testing.mock_smtp`` (and the tests people modelled on it) replaced
``fluxmail._transport.smtplib.SMTP`` with a mock. FluxMail 1.x has its own protocol core, so
``smtplib.SMTP``, ``smtplib.SMTP_SSL`` and ``aiosmtplib.SMTP`` here are patch points: while one
is replaced (``unittest.mock.patch("fluxmail._transport.smtplib.SMTP", ...)``), every FluxMail
session talks to the replacement with smtplib's (or aiosmtplib's) calls instead of to a server;
see :mod:`fluxmail.testing`. Nothing is replaced, and nothing changes, otherwise. Any other
name (``smtplib.SMTPException``...) is the real module's.
"""

from __future__ import annotations

import smtplib as _smtplib
from types import ModuleType
from typing import Any, ClassVar


def _missing_aiosmtplib(*args: Any, **kwargs: Any) -> Any:
    raise ImportError("aiosmtplib is not installed; FluxMail does not need it")


class PatchPoint:
    """A module stand-in whose ``names`` can be replaced and restored, innermost first."""

    names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, module: ModuleType | None, names: tuple[str, ...]) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_stacks", {name: [] for name in names})

    def replacement(self, name: str) -> Any | None:
        """What ``name`` was replaced with, or None while it is the module's own."""
        stack: list[Any] = self._stacks[name]
        return stack[-1] if stack else None

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set on the instance: the patch points and the module's.
        if name in self._names:
            replaced = self.replacement(name)
            if replaced is not None:
                return replaced
        if self._module is None:
            return _missing_aiosmtplib
        return getattr(self._module, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._names:
            raise AttributeError(f"only {', '.join(self._names)} can be replaced here")
        from fluxmail.testing import _legacy_routing

        self._stacks[name].append(value)
        _legacy_routing.acquire()

    def __delattr__(self, name: str) -> None:
        if name not in self._names or not self._stacks[name]:
            raise AttributeError(name)
        from fluxmail.testing import _legacy_routing

        self._stacks[name].pop()
        _legacy_routing.release()


def _aiosmtplib() -> ModuleType | None:
    try:
        import aiosmtplib
    except ImportError:
        return None
    return aiosmtplib


smtplib = PatchPoint(_smtplib, ("SMTP", "SMTP_SSL"))
aiosmtplib = PatchPoint(_aiosmtplib(), ("SMTP",))

__all__ = ["PatchPoint", "aiosmtplib", "smtplib"]
