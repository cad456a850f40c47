"""FluxMail 0.3.x's private transport module: its patch points and its smtplib wrapper.

0.3.x sent through :mod:`smtplib` and aiosmtplib from here, and its
``fluxmail.testing.mock_smtp`` (and the tests people modelled on it) replaced
``fluxmail._transport.smtplib.SMTP`` with a mock. FluxMail 1.x has its own protocol core, so
``smtplib.SMTP``, ``smtplib.SMTP_SSL`` and ``aiosmtplib.SMTP`` here are patch points: while one
is replaced (``unittest.mock.patch("fluxmail._transport.smtplib.SMTP", ...)``), every FluxMail
session talks to the replacement with smtplib's (or aiosmtplib's) calls instead of to a server;
see :mod:`fluxmail.testing`. Nothing is replaced, and nothing changes, otherwise. Any other
name (``smtplib.SMTPException``...) is the real module's; ``aiosmtplib.send`` can be replaced
too, for :class:`_SMTPTransport` alone.

:class:`_SMTPTransport` is 0.3.x's smtplib wrapper, kept for code that used it directly.
FluxMail itself never sends through it.
"""

from __future__ import annotations

import logging
import smtplib as _smtplib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from email.message import Message
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
        if name in _SESSION_FACTORIES:
            _legacy_routing.acquire()

    def __delattr__(self, name: str) -> None:
        if name not in self._names or not self._stacks[name]:
            raise AttributeError(name)
        from fluxmail.testing import _legacy_routing

        self._stacks[name].pop()
        if name in _SESSION_FACTORIES:
            _legacy_routing.release()


#: The replaced names that route FluxMail's own sessions (see fluxmail.testing).
_SESSION_FACTORIES = frozenset({"SMTP", "SMTP_SSL"})


def _aiosmtplib() -> ModuleType | None:
    try:
        import aiosmtplib
    except ImportError:
        return None
    return aiosmtplib


smtplib = PatchPoint(_smtplib, ("SMTP", "SMTP_SSL"))
aiosmtplib = PatchPoint(_aiosmtplib(), ("SMTP", "send"))


class _SMTPTransport:
    """0.3.x's smtplib wrapper: one relay's settings, and a persistent connection or not.

    ``_make_connection()`` returns a connected ``smtplib.SMTP`` (``SMTP_SSL`` with
    ``use_ssl``), after STARTTLS with ``use_tls`` and LOGIN when both ``username`` and
    ``password`` are given; ``send(message)`` sends an :class:`email.message.Message` on the
    connection ``open()`` made, else on one of its own that it QUITs; ``close()`` QUITs the
    persistent one, ignoring a failure. ``send_async`` and ``async_connection`` do the same
    with aiosmtplib (not a FluxMail dependency: install it to use them). Errors are smtplib's
    (aiosmtplib's) own, as in 0.3.x. Every class is looked up through this module's patch
    points, so ``mock.patch("fluxmail._transport.smtplib.SMTP", ...)`` reaches it.

    One difference from 0.3.x, FluxMail's rule: a password is refused (``AuthError``, code
    ``auth_requires_tls``, before connecting) on a connection without TLS to a host that is
    not loopback, since it would cross the network in the clear.
    """

    def __init__(
        self,
        relay: str,
        port: int,
        *,
        use_ssl: bool,
        use_tls: bool,
        ssl_context: ssl.SSLContext | None,
        timeout: float | None,
        username: str | None,
        password: str | None,
        logger: logging.Logger,
    ) -> None:
        self._relay, self._port = relay, port
        self._use_ssl, self._use_tls, self._ssl_context = use_ssl, use_tls, ssl_context
        self._timeout = timeout
        self._username, self._password = username, password
        self._logger = logger
        self._conn: Any = None  # the open() connection: smtplib.SMTP or a stand-in for it

    def __repr__(self) -> str:  # never the password
        return f"_SMTPTransport({self._relay!r}, {self._port}, username={self._username!r})"

    @property
    def _login(self) -> tuple[str, str] | None:
        if not (self._username and self._password):
            return None
        if not (self._use_ssl or self._use_tls):
            from fluxmail.errors import AuthError
            from fluxmail.transport.base import is_loopback

            if not is_loopback(self._relay):
                raise AuthError(
                    "Refusing to send a password over an unencrypted connection to "
                    f"{self._relay}; use use_tls=True or use_ssl=True",
                    "auth_requires_tls",
                )
        return self._username, self._password

    def _make_connection(self) -> Any:
        """A connected, upgraded and logged-in ``smtplib.SMTP`` (closed again on failure)."""
        login = self._login
        self._logger.debug("Connecting to %s:%s", self._relay, self._port)
        conn: Any
        if self._use_ssl:
            conn = smtplib.SMTP_SSL(
                self._relay, self._port, context=self._ssl_context, timeout=self._timeout
            )
        else:
            conn = smtplib.SMTP(self._relay, self._port, timeout=self._timeout)
        try:
            if self._use_tls:
                conn.starttls(context=self._ssl_context)
            if login is not None:
                conn.login(*login)
        except BaseException:
            conn.close()
            raise
        return conn

    def send(self, message: Message) -> None:
        """Send on the persistent connection, else on a connection of its own."""
        if self._conn is not None:
            self._conn.send_message(message)
            return
        conn = self._make_connection()
        try:
            conn.send_message(message)
        finally:
            with suppress(Exception):  # a failed QUIT must not hide how the send went
                conn.quit()

    def open(self) -> None:
        """Hold a connection for the following sends."""
        self._conn = self._make_connection()

    def close(self) -> None:
        """QUIT the held connection, if any; a failed QUIT is ignored."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.quit()

    async def send_async(self, message: Message) -> None:
        """Send with ``aiosmtplib.send`` on a connection of its own."""
        login = self._login
        await aiosmtplib.send(
            message,
            hostname=self._relay,
            port=self._port,
            use_tls=self._use_ssl,
            start_tls=True if self._use_tls else None,
            username=login[0] if login else None,
            password=login[1] if login else None,
            timeout=self._timeout,
            tls_context=self._ssl_context,
        )

    @asynccontextmanager
    async def async_connection(self) -> AsyncIterator[Any]:
        """A connected, upgraded and logged-in ``aiosmtplib.SMTP`` for the block."""
        login = self._login
        smtp = aiosmtplib.SMTP(
            hostname=self._relay,
            port=self._port,
            use_tls=self._use_ssl,
            start_tls=False,  # upgraded below, exactly when use_tls asks for it
            tls_context=self._ssl_context if self._use_ssl else None,
            timeout=self._timeout,
        )
        async with smtp:
            if self._use_tls:
                await smtp.starttls(tls_context=self._ssl_context)  # aiosmtplib's name
            if login is not None:
                await smtp.login(*login)
            yield smtp


__all__ = ["PatchPoint", "aiosmtplib", "smtplib"]
