"""Sending through Outlook desktop over COM (Windows with pywin32 only).

The message fields were validated by ``create()`` already; this module only hands them to
Outlook's object model. Outlook picks the account: the one whose address matches the sender,
or its default when no sender was given.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fluxmail.errors import FluxMailException
from fluxmail.logs import Log
from fluxmail.message import Draft

OL_MAIL_ITEM = 0
#: MAPI property that gives an attachment the Content-ID an HTML ``cid:`` reference uses.
PR_ATTACH_CONTENT_ID = "http://schemas.microsoft.com/mapi/proptag/0x3712001F"
IMPORTANCE = {"low": 0, "normal": 1, "high": 2}


def on_windows() -> bool:
    """Whether Outlook's COM interface can exist here (tests pretend, with a fake COM)."""
    return sys.platform == "win32"


def _dispatch_function() -> Any:
    """``win32com.client.Dispatch``, or ``invalid_config`` saying why Outlook is unavailable."""
    if not on_windows():
        raise FluxMailException(
            "object_type='outlook' needs Outlook desktop on Windows; on this platform use "
            "object_type='smtp' with your relay",
            "invalid_config",
        )
    try:
        import win32com.client
    except ImportError as exc:
        raise FluxMailException(
            "object_type='outlook' needs pywin32: pip install 'fluxmail[outlook]'",
            "invalid_config",
        ) from exc
    return win32com.client.Dispatch


class OutlookMailer:
    """Builds and sends Outlook mail items for a :class:`~fluxmail.FluxMail`."""

    def __init__(self, logger: Log) -> None:
        self._dispatch = _dispatch_function()
        self._app: Any = None
        self.logger = logger

    def connect(self) -> Any:
        """The running (or newly started) Outlook application; ``outlook_no_connect`` if none."""
        if self._app is None:
            try:
                self._app = self._dispatch("Outlook.Application")
            except Exception as exc:
                raise FluxMailException(
                    f"Could not start or reach Outlook: {exc}", "outlook_no_connect"
                ) from exc
        return self._app

    def send(self, draft: Draft) -> None:
        """Compose and send; ``outlook_no_send`` if Outlook fails at any step."""
        with _com_errors("Outlook could not send", "outlook_no_send"):
            self._compose(draft).Send()
        self.logger.info("Sent %r through Outlook", draft.subject)

    def display(self, draft: Draft) -> str:
        """Compose and open the compose window; ``display_failed`` if Outlook fails."""
        with _com_errors("Outlook could not open the message", "display_failed"):
            self._compose(draft).Display(False)
        return "Email displayed in Outlook."

    def _compose(self, draft: Draft) -> Any:
        app = self.connect()
        item = app.CreateItem(OL_MAIL_ITEM)
        if draft.sender is not None:
            item.SendUsingAccount = self._account(app, draft.envelope.sender)
        item.Subject = draft.subject
        item.To = "; ".join(draft.to)
        item.CC = "; ".join(draft.cc)
        item.BCC = "; ".join(draft.bcc)
        if draft.reply_to is not None:
            item.ReplyRecipients.Add(draft.reply_to)
        if draft.priority is not None:
            item.Importance = IMPORTANCE[draft.priority]
        if draft.html is not None:
            item.HTMLBody = draft.html
        if draft.text is not None and draft.html is None:
            item.Body = draft.text
        # Absolute paths: Outlook is another process, with its own working directory.
        for attachment in draft.attachments:
            item.Attachments.Add(str(attachment.path.absolute()))
        for cid, image in draft.inline_images.items():
            added = item.Attachments.Add(str(image.path.absolute()))
            added.PropertyAccessor.SetProperty(PR_ATTACH_CONTENT_ID, cid)
        return item

    def _account(self, app: Any, sender: str) -> Any:
        for account in app.Session.Accounts:
            if str(account.SmtpAddress).lower() == sender.lower():
                return account
        raise FluxMailException(
            f"Outlook has no account for sender {sender!r}; add it in Outlook or leave "
            "sender unset to use the default account",
            "outlook_no_sender",
        )


@contextmanager
def _com_errors(what: str, code: str) -> Iterator[None]:
    """Turn an Outlook (COM) failure into ``FluxMailException(code)``, chained.

    Composing talks to Outlook too (creating the item, adding attachments), so it is covered
    as well as the final call; our own errors (no sender, no connection) pass unchanged.
    """
    try:
        yield
    except FluxMailException:
        raise
    except Exception as exc:
        raise FluxMailException(f"{what}: {exc}", code) from exc
