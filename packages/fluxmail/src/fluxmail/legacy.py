"""The attributes FluxMail 0.3.x exposed on a mailer, kept for the scripts that read them.

0.3.x stored its settings and every ``create()`` argument as plain attributes (``host``,
``max_retries``, ``subject``, ``recipients``, ``message``, ``is_created``...). This mixin
gives :class:`~fluxmail.FluxMail` the same names as views of what it really holds, so they
cannot drift from what is sent, and so ``create()`` does no extra work for them: the
arguments are kept as given and only bound to their names when one is read.
"""

from __future__ import annotations

import email
import email.policy
import functools
import inspect
import math
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from fluxmail.config import EmailInstance, EmailObject
from fluxmail.errors import FluxMailException
from fluxmail.protocol.ops import Credentials
from fluxmail.retry import RetryPolicy

if TYPE_CHECKING:
    from fluxmail.message import Draft

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound="LegacyAttributes")


def remembers_arguments(
    create: Callable[Concatenate[M, P], R],
) -> Callable[Concatenate[M, P], R]:
    """Decorate ``create``: after a successful call, keep its arguments for the views below."""
    signature = inspect.signature(create)

    @functools.wraps(create)
    def wrapper(self: M, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self._created_with = None
        result = create(self, *args, **kwargs)
        self._created_with = (signature, args, kwargs)
        return result

    return wrapper


def _field(name: str, *, default: Any = None) -> property:
    """A read-only view of ``create()``'s argument ``name`` (``default`` before any create)."""

    def get(self: LegacyAttributes) -> Any:
        return self._create_arguments().get(name, default)

    return property(get, doc=f"The ``{name}`` given to the last ``create()`` (0.3.x name).")


class LegacyAttributes:
    """0.3.x's attribute names on a mailer. Passwords are readable but never printed."""

    # What the mailer provides (see fluxmail.client.FluxMail).
    object_type: EmailObject
    relay: str
    domain: str
    username: str | None
    retry: RetryPolicy
    default_sender: str | None
    _credentials: Credentials | None
    _draft: Draft | None
    _created_with: tuple[inspect.Signature, tuple[Any, ...], dict[str, Any]] | None = None
    _message_cache: tuple[object, EmailMessage] | None = None

    def _resolve_sender(self, sender: str | None) -> str | None:
        """The From for ``sender`` (FluxMail's). It must read ``default_sender``, never
        ``sender``: that property is computed through this method.
        """
        raise NotImplementedError

    # -- settings ---------------------------------------------------------------------------

    @property
    def host(self) -> EmailInstance:
        """The relay and the mail domain, as the ``EmailInstance`` 0.3.x kept."""
        return EmailInstance(self.relay, self.domain)

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    @max_retries.setter
    def max_retries(self, value: int) -> None:
        self.retry = RetryPolicy(coerce_int(value, "max_retries", 0, 1000), self.retry.delay)

    @property
    def retry_delay(self) -> float:
        return self.retry.delay

    @retry_delay.setter
    def retry_delay(self, value: float) -> None:
        self.retry = RetryPolicy(self.retry.max_retries, check_number(value, "retry_delay"))

    @property
    def password(self) -> str | None:
        """The login password (None without one). Never part of repr(), str() or a log line."""
        creds = self._credentials
        return creds.password if creds is not None and creds.oauth2_token is None else None

    @password.setter
    def password(self, value: str | None) -> None:
        if value is None or not self.username:
            self._credentials = None
        else:
            self._credentials = Credentials(self.username, value)

    def is_smtp(self) -> bool:
        return self.object_type is EmailObject.SMTP

    def is_outlook(self) -> bool:
        return self.object_type is EmailObject.OUTLOOK

    # -- the message ------------------------------------------------------------------------

    @property
    def is_created(self) -> bool:
        """True once ``create()`` has built a message."""
        return self._draft is not None

    @property
    def sender(self) -> str | None:
        """0.3.x's meaning: the From of the message ``create()`` built; before it, the
        constructor's ``sender=``. Setting it sets the default sender of later messages.
        """
        if self._created_with is None:
            return self.default_sender
        return self._resolve_sender(self._create_arguments().get("sender"))

    @sender.setter
    def sender(self, value: str | None) -> None:
        self.default_sender = value

    @property
    def message(self) -> EmailMessage:
        """The built message as an :class:`email.message.EmailMessage` (0.3.x's ``message``).

        Parsed from the exact bytes that are sent, when first read after each ``create()``,
        plus the ``Bcc`` header 0.3.x kept on it (it never goes on the wire). Before
        ``create()``, an empty message. Changing it changes nothing that is sent.
        """
        draft = self._draft
        if draft is None:
            return EmailMessage()
        if self._message_cache is not None and self._message_cache[0] is draft:
            return self._message_cache[1]
        parsed = email.message_from_bytes(draft.as_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        bcc = self._create_arguments().get("bcc")
        if bcc and "Bcc" not in parsed:
            parsed["Bcc"] = ", ".join(bcc)
        self._message_cache = (draft, parsed)
        return parsed

    subject = _field("subject")
    recipients = _field("recipients")
    body = _field("body")
    plain_body = _field("plain_body")
    cc = _field("cc")
    bcc = _field("bcc")
    reply_to = _field("reply_to")
    attachments = _field("attachments")
    input_path = _field("attachments")  # 0.3.x's name for the attachment paths
    html_body = _field("html_body", default=False)
    in_reply_to = _field("in_reply_to")
    references = _field("references")
    priority = _field("priority")
    unsubscribe_url = _field("unsubscribe_url")
    inline_images = _field("inline_images")
    inline_css = _field("inline_css", default=False)

    def _create_arguments(self) -> dict[str, Any]:
        if self._created_with is None:
            return {}
        signature, args, kwargs = self._created_with
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


def coerce_int(value: object, name: str, low: int, high: int) -> int:
    """An integer from ``low`` to ``high``; a string of digits (``"587"``) is read as one.

    0.3.x passed such strings through (they usually came from the environment or a config
    file), so they keep working. Anything else is ``invalid_config``.
    """
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FluxMailException(
            f"{name} must be an integer from {low} to {high}, got {value!r}", "invalid_config"
        )
    return value


def check_number(value: object, name: str, *, positive: bool = False) -> float:
    """A finite number, at least 0 (above 0 when ``positive``); else ``invalid_config``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and (number > 0 if positive else number >= 0):
            return number
    wanted = "a positive" if positive else "a non-negative"
    raise FluxMailException(f"{name} must be {wanted} number, got {value!r}", "invalid_config")
