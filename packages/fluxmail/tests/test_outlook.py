"""Outlook desktop through a fake of its COM object model (pywin32 is Windows-only).

The fake mirrors the parts of Outlook's object model that ``fluxmail.outlook`` touches and is
strict where Outlook is: a mail item accepts only its real property names (a typo such as
``item.Cc`` would fail instead of passing silently), ``SendUsingAccount`` takes an Account from
``Session.Accounts``, ``Attachments.Add`` needs an absolute path to an existing file (Outlook
resolves a relative one against its own working directory, not ours), and a sent item is gone
(touching it raises, as the real "item has been moved or deleted" error does).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import fluxmail.outlook
from fluxmail import BulkSender, EmailObject, FluxMail, FluxMailException
from fluxmail.outlook import PR_ATTACH_CONTENT_ID
from fluxmail.testing import capture

SUCCESS = "Email sent successfully via Outlook."
OL_IMPORTANCE_LOW, OL_IMPORTANCE_NORMAL, OL_IMPORTANCE_HIGH = 0, 1, 2


# -- the fake object model ------------------------------------------------------------------


class ComError(Exception):
    """Stands in for ``pywintypes.com_error``: (hresult, text, excepinfo, argerr)."""

    def __init__(self, text: str, hresult: int = -2147352567) -> None:
        super().__init__(hresult, text, None, None)


class ComObject:
    """Base of the fakes: only the properties the real interface has can be set."""

    PROPERTIES: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in self.PROPERTIES:
            raise AttributeError(f"{type(self).__name__} has no property {name!r}")
        super().__setattr__(name, value)


class PropertyAccessor(ComObject):
    def __init__(self) -> None:
        self._properties: dict[str, object] = {}

    def SetProperty(self, schema_name: str, value: object) -> None:  # noqa: N802 - COM names
        self._properties[schema_name] = value

    def GetProperty(self, schema_name: str) -> object:  # noqa: N802
        if schema_name not in self._properties:
            raise ComError(f"The property {schema_name!r} is unknown or cannot be found.")
        return self._properties[schema_name]


class Attachment(ComObject):
    PROPERTIES = frozenset({"PropertyAccessor"})

    def __init__(self, source: str) -> None:
        self._source = source
        self.PropertyAccessor = PropertyAccessor()

    @property
    def FileName(self) -> str:  # noqa: N802
        return Path(self._source).name

    @property
    def source(self) -> str:
        return self._source


class Attachments(ComObject):
    def __init__(self) -> None:
        self._items: list[Attachment] = []

    def Add(  # noqa: N802
        self, source: str, attach_type: int = 1, position: int = 1, display_name: str = ""
    ) -> Attachment:
        if not Path(source).is_absolute() or not Path(source).is_file():
            raise ComError(f"Cannot find this file. Verify the path and file name: {source}")
        attachment = Attachment(source)
        self._items.append(attachment)
        return attachment

    @property
    def Count(self) -> int:  # noqa: N802
        return len(self._items)

    def Item(self, index: int) -> Attachment:  # noqa: N802 - COM collections count from 1
        return self._items[index - 1]

    def __iter__(self) -> Iterator[Attachment]:
        return iter(self._items)


class Recipients(ComObject):
    def __init__(self) -> None:
        self._names: list[str] = []

    def Add(self, name: str) -> object:  # noqa: N802
        self._names.append(name)
        return types.SimpleNamespace(Name=name, Resolved=True)

    @property
    def names(self) -> list[str]:
        return list(self._names)


class Account(ComObject):
    PROPERTIES = frozenset({"SmtpAddress", "DisplayName"})

    def __init__(self, address: str) -> None:
        self.SmtpAddress = address
        self.DisplayName = address


class Accounts(ComObject):
    def __init__(self, accounts: list[Account]) -> None:
        self._accounts = accounts

    @property
    def Count(self) -> int:  # noqa: N802
        return len(self._accounts)

    def Item(self, index: int) -> Account:  # noqa: N802
        return self._accounts[index - 1]

    def __iter__(self) -> Iterator[Account]:
        return iter(self._accounts)


class MailItem(ComObject):
    PROPERTIES = frozenset(
        {"Subject", "To", "CC", "BCC", "Body", "HTMLBody", "Importance", "SendUsingAccount"}
    )

    def __init__(self, app: Application) -> None:
        self._app = app
        self._gone = False
        self.Subject = ""
        self.To = ""
        self.CC = ""
        self.BCC = ""
        self.Body = ""
        self.HTMLBody = ""
        self.Importance = OL_IMPORTANCE_NORMAL
        self.SendUsingAccount: Account | None = None
        self._reply_recipients = Recipients()
        self._attachments = Attachments()
        self._displayed: list[bool] = []

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_gone", False):
            raise ComError("The item has been moved or deleted.")
        if (
            name == "SendUsingAccount"
            and value is not None
            and not any(value is account for account in self._app.Session.Accounts)
        ):
            raise ComError("SendUsingAccount must be an Account of this session")
        super().__setattr__(name, value)

    @property
    def displayed(self) -> list[bool]:
        """The ``Modal`` argument of every ``Display`` call."""
        return list(self._displayed)

    @property
    def ReplyRecipients(self) -> Recipients:  # noqa: N802
        return self._reply_recipients

    @property
    def Attachments(self) -> Attachments:  # noqa: N802
        return self._attachments

    def Send(self) -> None:  # noqa: N802
        if self._app.send_error is not None:
            raise self._app.send_error
        if not self.To and not self.CC and not self.BCC:
            raise ComError("There must be at least one name or contact group in the To box.")
        self._app.sent.append(self)
        object.__setattr__(self, "_gone", True)

    def Display(self, modal: bool = False) -> None:  # noqa: N802
        if self._app.display_error is not None:
            raise self._app.display_error
        self._displayed.append(modal)


@dataclass
class Session:
    Accounts: Accounts


@dataclass
class Application:
    """``Outlook.Application``: what ``Dispatch("Outlook.Application")`` returns."""

    accounts: list[str]
    created: list[MailItem] = field(default_factory=list)
    sent: list[MailItem] = field(default_factory=list)
    send_error: Exception | None = None
    display_error: Exception | None = None

    def __post_init__(self) -> None:
        self.Session = Session(Accounts([Account(a) for a in self.accounts]))

    def CreateItem(self, item_type: int) -> MailItem:  # noqa: N802
        if item_type != 0:  # olMailItem; other types are appointments, contacts...
            raise ComError(f"This test fake only makes mail items, not type {item_type}")
        item = MailItem(self)
        self.created.append(item)
        return item

    def account(self, address: str) -> Account:
        return next(a for a in self.Session.Accounts if a.SmtpAddress == address)


@dataclass
class FakeCOM:
    """The installed fake: the application Dispatch returns, and every Dispatch call."""

    app: Application
    calls: list[str] = field(default_factory=list)
    dispatch_error: Exception | None = None

    def Dispatch(self, prog_id: str) -> Application:  # noqa: N802
        self.calls.append(prog_id)
        if self.dispatch_error is not None:
            raise self.dispatch_error
        if prog_id != "Outlook.Application":
            raise ComError("Invalid class string")
        return self.app


class Win32ComClient(types.ModuleType):
    """``win32com.client``, reduced to what ``fluxmail.outlook`` uses."""

    Dispatch: Callable[[str], Application]


class Win32Com(types.ModuleType):
    """The ``win32com`` package: ``import win32com.client`` reads its ``client``."""

    client: Win32ComClient


@pytest.fixture
def com(monkeypatch: pytest.MonkeyPatch) -> FakeCOM:
    """Pretend to be Windows with pywin32 and a running Outlook with two accounts."""
    fake = FakeCOM(Application(["me@example.com", "team@example.com"]))
    package, client = Win32Com("win32com"), Win32ComClient("win32com.client")
    client.Dispatch = fake.Dispatch
    package.client = client
    monkeypatch.setitem(sys.modules, "win32com", package)
    monkeypatch.setitem(sys.modules, "win32com.client", client)
    monkeypatch.setattr(fluxmail.outlook, "on_windows", lambda: True)
    return fake


@pytest.fixture
def outlook(com: FakeCOM) -> FluxMail:
    return FluxMail("outlook", "")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("report.pdf", "notes.txt", "logo.png")}
    for path in paths.values():
        path.write_bytes(b"content of " + path.name.encode())
    return paths


def only_sent(com: FakeCOM) -> MailItem:
    (item,) = com.app.sent
    return item


# -- availability ---------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="describes every other platform")
def test_outlook_is_refused_off_windows() -> None:
    with pytest.raises(FluxMailException) as info:
        FluxMail("outlook", "")
    assert info.value.code == "invalid_config"
    assert "Windows" in str(info.value)


def test_outlook_needs_pywin32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluxmail.outlook, "on_windows", lambda: True)
    monkeypatch.setitem(sys.modules, "win32com", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "win32com.client", None)
    with pytest.raises(FluxMailException) as info:
        FluxMail("outlook", "")
    assert info.value.code == "invalid_config"
    assert "pywin32" in str(info.value)


@pytest.mark.parametrize("kind", ["outlook", "OUTLOOK", "Outlook", EmailObject.OUTLOOK])
def test_object_type_forms(com: FakeCOM, kind: str | EmailObject) -> None:
    mailer = FluxMail(kind, "", sender="me@example.com")
    assert mailer.object_type is EmailObject.OUTLOOK
    assert mailer.create("Hi", ["to@example.com"], "Body").send() == SUCCESS
    assert len(com.app.sent) == 1


def test_outlook_is_reached_lazily_and_once(com: FakeCOM, outlook: FluxMail) -> None:
    assert com.calls == []  # constructing the mailer does not start Outlook
    outlook.create("One", ["to@example.com"], "Body").send()
    outlook.create("Two", ["to@example.com"], "Body").send()
    assert com.calls == ["Outlook.Application"]
    assert [item.Subject for item in com.app.sent] == ["One", "Two"]


# -- sending --------------------------------------------------------------------------------


def test_send_sets_every_field(com: FakeCOM) -> None:
    mailer = FluxMail("outlook", "", sender="Me <me@example.com>")
    result = mailer.create(
        "Quarterly report",
        ["a@example.com", "Bee <b@example.com>"],
        "Numbers attached.",
        cc=["c@example.com"],
        bcc=["d@example.com", "e@example.com"],
        reply_to="replies@example.com",
        priority="high",
    ).send()
    assert result == SUCCESS
    item = only_sent(com)
    assert item.Subject == "Quarterly report"
    assert item.To == "a@example.com; Bee <b@example.com>"
    assert item.CC == "c@example.com"
    assert item.BCC == "d@example.com; e@example.com"
    assert item.ReplyRecipients.names == ["replies@example.com"]
    assert item.Body == "Numbers attached."
    assert item.HTMLBody == ""
    assert item.Importance == OL_IMPORTANCE_HIGH
    assert item.SendUsingAccount is com.app.account("me@example.com")
    assert item.Attachments.Count == 0


def test_unset_fields_keep_outlooks_defaults(com: FakeCOM, outlook: FluxMail) -> None:
    assert outlook.create("Minimal", ["to@example.com"], "Body").send() == SUCCESS
    item = only_sent(com)
    assert item.SendUsingAccount is None  # no sender: Outlook's default account
    assert item.CC == ""
    assert item.BCC == ""
    assert item.ReplyRecipients.names == []
    assert item.Importance == OL_IMPORTANCE_NORMAL


def test_html_body(com: FakeCOM, outlook: FluxMail) -> None:
    outlook.create(
        "HTML", ["to@example.com"], "<p>Hello</p>", html_body=True, plain_body="Hello"
    ).send()
    item = only_sent(com)
    assert item.HTMLBody == "<p>Hello</p>"
    assert item.Body == ""  # Outlook derives the text from the HTML itself


@pytest.mark.parametrize(
    ("priority", "importance"),
    [("low", OL_IMPORTANCE_LOW), ("normal", OL_IMPORTANCE_NORMAL), ("HIGH", OL_IMPORTANCE_HIGH)],
)
def test_priority_sets_importance(
    com: FakeCOM, outlook: FluxMail, priority: str, importance: int
) -> None:
    outlook.create("Priority", ["to@example.com"], "Body", priority=priority).send()
    assert only_sent(com).Importance == importance


def test_sender_picks_the_matching_account_case_insensitively(com: FakeCOM) -> None:
    mailer = FluxMail("outlook", "")
    mailer.create("Team", ["to@example.com"], "Body", sender="Team@Example.COM").send()
    assert only_sent(com).SendUsingAccount is com.app.account("team@example.com")


def test_username_address_is_the_sender(com: FakeCOM) -> None:
    mailer = FluxMail("outlook", "", username="team@example.com")
    mailer.create("Team", ["to@example.com"], "Body").send()
    assert only_sent(com).SendUsingAccount is com.app.account("team@example.com")


def test_unknown_sender(com: FakeCOM, outlook: FluxMail) -> None:
    with pytest.raises(FluxMailException) as info:
        outlook.create("Hi", ["to@example.com"], "Body", sender="stranger@example.com").send()
    assert info.value.code == "outlook_no_sender"
    assert "stranger@example.com" in str(info.value)
    assert com.app.sent == []


def test_attachments_and_inline_images(
    com: FakeCOM, outlook: FluxMail, files: dict[str, Path]
) -> None:
    outlook.create(
        "Files",
        ["to@example.com"],
        '<p>Logo: <img src="cid:logo"></p>',
        html_body=True,
        attachments=[str(files["report.pdf"]), str(files["notes.txt"])],
        inline_images={"logo": str(files["logo.png"])},
    ).send()
    item = only_sent(com)
    attachments = list(item.Attachments)
    assert [a.source for a in attachments] == [
        str(files["report.pdf"]),
        str(files["notes.txt"]),
        str(files["logo.png"]),
    ]
    report, notes, logo = attachments
    assert logo.PropertyAccessor.GetProperty(PR_ATTACH_CONTENT_ID) == "logo"
    for plain in (report, notes):
        with pytest.raises(ComError):
            plain.PropertyAccessor.GetProperty(PR_ATTACH_CONTENT_ID)
    assert item.HTMLBody == '<p>Logo: <img src="cid:logo"></p>'


def test_relative_attachment_paths_reach_outlook_absolute(
    com: FakeCOM,
    outlook: FluxMail,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Outlook is another process: a path relative to our working directory means nothing to it.
    monkeypatch.chdir(files["notes.txt"].parent)
    outlook.create(
        "Relative",
        ["to@example.com"],
        '<img src="cid:logo">',
        html_body=True,
        attachments=["notes.txt"],
        inline_images={"logo": "logo.png"},
    ).send()
    sources = [a.source for a in only_sent(com).Attachments]
    assert sources == [str(files["notes.txt"]), str(files["logo.png"])]


def test_bcc_is_handed_to_outlook_not_to_headers(com: FakeCOM, outlook: FluxMail) -> None:
    outlook.create("Blind", ["to@example.com"], "Body", bcc=["hidden@example.com"]).send()
    item = only_sent(com)
    assert item.BCC == "hidden@example.com"
    assert "hidden" not in item.To + item.CC


# -- failures -------------------------------------------------------------------------------


def test_dispatch_failure(com: FakeCOM, outlook: FluxMail) -> None:
    com.dispatch_error = ComError("Server execution failed")
    with pytest.raises(FluxMailException) as info:
        outlook.create("Hi", ["to@example.com"], "Body").send()
    assert info.value.code == "outlook_no_connect"
    assert info.value.__cause__ is com.dispatch_error


def test_send_failure(com: FakeCOM, outlook: FluxMail) -> None:
    com.app.send_error = ComError("Outlook does not recognize one or more names.")
    with pytest.raises(FluxMailException) as info:
        outlook.create("Hi", ["to@example.com"], "Body").send()
    assert info.value.code == "outlook_no_send"
    assert info.value.__cause__ is com.app.send_error
    assert com.app.sent == []


def test_outlook_failing_while_composing(
    com: FakeCOM, outlook: FluxMail, files: dict[str, Path]
) -> None:
    # The file was read by create(), then moved away before Outlook could attach it.
    outlook.create("Gone", ["to@example.com"], "Body", attachments=[str(files["notes.txt"])])
    files["notes.txt"].unlink()
    with pytest.raises(FluxMailException) as info:
        outlook.send()
    assert info.value.code == "outlook_no_send"
    assert isinstance(info.value.__cause__, ComError)
    with pytest.raises(FluxMailException) as info:
        outlook.display()
    assert info.value.code == "display_failed"
    assert isinstance(info.value.__cause__, ComError)
    assert com.app.sent == []


async def test_send_async_is_refused(com: FakeCOM, outlook: FluxMail) -> None:
    with pytest.raises(FluxMailException) as info:
        await outlook.create("Hi", ["to@example.com"], "Body").send_async()
    assert info.value.code == "outlook_no_async"
    assert com.calls == []


def test_send_before_create(com: FakeCOM, outlook: FluxMail) -> None:
    with pytest.raises(FluxMailException) as info:
        outlook.send()
    assert info.value.code == "not_created"


# -- display, dry run, connection check, capture --------------------------------------------


def test_display_opens_the_compose_window(com: FakeCOM, outlook: FluxMail) -> None:
    result = outlook.create("Look", ["to@example.com"], "Body", priority="low").display()
    assert result == "Email displayed in Outlook."
    (item,) = com.app.created
    assert item.displayed == [False]  # not modal: the script goes on
    assert item.Subject == "Look"
    assert item.Importance == OL_IMPORTANCE_LOW
    assert com.app.sent == []


def test_display_failure(com: FakeCOM, outlook: FluxMail) -> None:
    com.app.display_error = ComError("A dialog box is open.")
    with pytest.raises(FluxMailException) as info:
        outlook.create("Look", ["to@example.com"], "Body").display()
    assert info.value.code == "display_failed"
    assert info.value.__cause__ is com.app.display_error


def test_display_before_create(com: FakeCOM, outlook: FluxMail) -> None:
    with pytest.raises(FluxMailException) as info:
        outlook.display()
    assert info.value.code == "not_created"


def test_dry_run_does_not_touch_outlook(com: FakeCOM, outlook: FluxMail) -> None:
    preview = outlook.create("Dry", ["to@example.com"], "Body").send(dry_run=True)
    assert preview.startswith("Email Preview:\n")
    assert "Subject: Dry" in preview
    assert com.calls == []


def test_connection_check(com: FakeCOM, outlook: FluxMail) -> None:
    assert outlook.test_connection()["ok"] is True
    failing = FluxMail("outlook", "")  # a new mailer: the first one keeps its Outlook
    com.dispatch_error = ComError("Server execution failed")
    with pytest.raises(FluxMailException) as info:
        failing.test_connection()
    assert info.value.code == "outlook_no_connect"


def test_capture_records_outlook_sends_without_outlook(com: FakeCOM, outlook: FluxMail) -> None:
    with capture() as outbox:
        outlook.create("Captured", ["to@example.com"], "Body", bcc=["b@example.com"]).send()
    assert com.calls == []
    (captured,) = outbox
    assert captured.via == "outlook"
    assert captured.subject == "Captured"
    assert captured.bcc == ["b@example.com"]


def test_bulk_sender_sends_through_outlook(com: FakeCOM, outlook: FluxMail) -> None:
    """BulkSender with an Outlook mailer sends each message through Outlook, not SMTP."""
    batch = [
        {"subject": f"Hi {i}", "recipients": [f"u{i}@example.com"], "body": "x"} for i in range(3)
    ]
    report = BulkSender(outlook).send_batch(batch, progress=False)
    assert (report["sent"], report["failed"]) == (3, 0)
    assert [item.Subject for item in com.app.sent] == ["Hi 0", "Hi 1", "Hi 2"]


async def test_bulk_sender_async_with_outlook_is_invalid_config(
    com: FakeCOM, outlook: FluxMail
) -> None:
    # Outlook cannot send asynchronously: the whole batch is refused up front, as in 0.3.x.
    batch = [{"subject": "Hi", "recipients": ["u@example.com"], "body": "x"}] * 2
    with pytest.raises(FluxMailException) as error:
        await BulkSender(outlook).send_batch_async(batch, progress=False)
    assert error.value.code == "invalid_config"
    assert com.app.sent == []
