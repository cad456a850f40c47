"""The resumable log of a bulk send: one JSON object per line, one line per settled row.

Format (JSON Lines, UTF-8, every line pure ASCII because non-ASCII is \\u-escaped)::

    {"row": 3, "address": "ada@example.com", "status": "sent", "code": null,
     "reply": "250 2.0.0 Ok: queued as 4Fz1", "queue_id": "4Fz1", "at": "2025-06-01T09:30:12Z"}

(one line in the file). ``row`` is the data row's number (1 = the first row after the header),
``address`` the text of its address column, ``status`` ``"sent"`` or ``"failed"``, ``code`` the
FluxMail error code of a failure (null when sent), ``reply`` the relay's final reply or the
error text on one line, ``queue_id`` the relay's queue id when its reply names one, ``at`` the
UTC time the row settled.

Why it survives a crash: each line is written with a single ``os.write`` on a file opened with
``O_APPEND``, as soon as its row is settled. Once the call returns the line is in the kernel,
so killing the process (even SIGKILL) cannot lose it or leave half of it; only a machine crash
or a full disk can. A torn last line (from those) is ignored on reading, and a newline is
written after it before anything is appended, so it never swallows the next record.

Resuming: an address counts as sent when some line with status ``sent`` has it, compared
after stripping surrounding blanks, case-insensitively. Failed lines are history only.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from fluxmail.cli.common import BadFlagsError, one_line, squash
from fluxmail.errors import FluxMailException
from fluxmail.protocol.transaction import Outcome

_LONGEST_TEXT = 1000  # a relay may answer with many lines; the log wants one short line


def address_key(address: str) -> str:
    """How the log recognises an address (``""`` for a blank one, which never matches)."""
    return address.strip().lower()


@dataclass
class History:
    """What an existing log says: the keys of the addresses sent, and how many lines of it
    could not be read (a torn last line, or lines someone edited badly)."""

    sent: set[str] = field(default_factory=set)
    unreadable: int = 0
    ends_cleanly: bool = True  # empty, or ends with a newline

    @classmethod
    def read(cls, path: Path) -> History:
        """The history in ``path``; an empty one if the file does not exist."""
        history = cls()
        try:
            with path.open("rb") as file:
                last = b""
                for last in file:
                    history._take(last)
        except FileNotFoundError:
            return history
        except OSError as exc:
            raise BadFlagsError(f"cannot read --log {path}: {exc.strerror or exc}") from None
        history.ends_cleanly = last.endswith(b"\n") or not last
        return history

    def _take(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            self.unreadable += 1
            return
        if not (isinstance(record, dict) and isinstance(record.get("address"), str)):
            self.unreadable += 1
        elif record.get("status") == "sent" and (key := address_key(record["address"])):
            self.sent.add(key)


class SendLog:
    """The log open for appending, locked against a second run on the same file.

    Use as a context manager. Raises BadFlagsError (exit 1) if the file cannot be opened or
    another process holds it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Owner-only: the log lists the recipients, which is personal data.
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise BadFlagsError(f"cannot write --log {path}: {exc.strerror or exc}") from None
        try:
            _lock(self._fd, path)
            # Read only under the lock, so no other run is adding lines meanwhile; a torn last
            # line is ended here so that it cannot swallow our first record.
            self.history = History.read(path)
            if not self.history.ends_cleanly:
                self._write(b"\n")
        except BaseException:
            os.close(self._fd)
            raise

    def append(self, number: int, address: str, outcome: Outcome) -> None:
        """Record that row ``number`` (to ``address``) settled with ``outcome``, durably."""
        self._write(_line(number, address, outcome))

    def _write(self, data: bytes) -> None:
        while data:  # os.write may write less than asked (a signal, a nearly full disk)
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        os.close(self._fd)  # also releases the lock

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _line(number: int, address: str, outcome: Outcome) -> bytes:
    record: dict[str, Any] = {"row": number, "address": address.strip()}
    if isinstance(outcome, FluxMailException):
        record |= {"status": "failed", "code": outcome.code, "reply": one_line(outcome)}
        record["queue_id"] = None
    else:
        record |= {"status": "sent", "code": None, "reply": squash(str(outcome.reply))}
        record["queue_id"] = outcome.queue_id
    record["reply"] = record["reply"][:_LONGEST_TEXT]
    record["at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (json.dumps(record) + "\n").encode("ascii")


if sys.platform == "win32":

    def _lock(fd: int, path: Path) -> None:
        """No advisory locks on Windows: two runs on one log are the user's to avoid."""

else:
    import fcntl

    def _lock(fd: int, path: Path) -> None:
        """Take an exclusive lock on the log, or refuse: two runs on one log could mail the
        same rows twice. The kernel drops the lock when the process ends, however it ends."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadFlagsError(
                f"--log {path} is in use by another fluxmail bulk run; wait for it to finish"
            ) from None
