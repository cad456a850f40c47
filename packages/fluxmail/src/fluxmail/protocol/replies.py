"""SMTP replies as small immutable values, and an incremental parser for them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fluxmail.errors import FluxMailException

# RFC 5321 asks for 512-octet reply lines; real servers send longer ones, so allow plenty but
# refuse a peer that streams without end.
MAX_LINE = 8192
MAX_LINES = 512
#: Bytes buffered but not yet read as replies: a server answering far ahead of the client
#: (or flooding it) is cut off rather than allowed to fill memory.
MAX_BUFFER = 1 << 20

#: One-line replies already parsed, by their raw line: a reply is immutable, so every
#: occurrence of "250 2.1.0 Ok" can be the same object. Bounded: lines that never recur
#: (queue ids) stop being added once it is full, and the ones seen first stay.
_SEEN: dict[bytes, Reply] = {}
_SEEN_MAX = 256
_SEEN_LINE = 120

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


class ProtocolError(FluxMailException):
    """The peer broke the SMTP grammar; the connection cannot be trusted any more."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "protocol_error")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a three-digit ``code`` and its text ``lines`` (without the code)."""

    code: int
    lines: tuple[str, ...] = ("",)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def ok(self) -> bool:
        """2xx and 3xx: the command succeeded or the server waits for more."""
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        """4xx: a failure that may succeed if tried again later."""
        return 400 <= self.code < 500

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code (``"5.1.1"``) that opens the text, if any."""
        match = _ENHANCED.match(self.lines[0])
        return ".".join(match.groups()) if match else None

    def __str__(self) -> str:
        return f"{self.code} {' / '.join(line for line in self.lines if line)}".rstrip()


class ReplyParser:
    """Turns the bytes a server sends into :class:`Reply` values.

    Feed it whatever arrived with :meth:`feed`; :meth:`next_reply` returns a complete reply or
    ``None`` when more bytes are needed. ``pending`` tells whether unread bytes remain, which is
    how a client notices a server that answers ahead of its commands (a STARTTLS injection).
    """

    def __init__(self) -> None:
        # Most reads find the buffer empty: what arrived is kept as it is (bytes, no copy),
        # and each line is then one slice. Bytes that arrive while some wait are appended to
        # a bytearray (amortised, however small the pieces a server trickles).
        self._buffer: bytes | bytearray = b""
        self._lines: list[str] = []
        self._code: int | None = None

    def feed(self, data: bytes) -> None:
        if not self._buffer:
            self._buffer = bytes(data)
        else:
            if type(self._buffer) is bytes:
                self._buffer = bytearray(self._buffer)
            self._buffer += data
        if len(self._buffer) > MAX_BUFFER:
            raise ProtocolError(f"Server sent more than {MAX_BUFFER} bytes nobody asked for")
        if len(self._buffer) > MAX_LINE and b"\n" not in self._buffer:
            raise ProtocolError(f"Server sent a reply line longer than {MAX_LINE} bytes")

    @property
    def pending(self) -> bool:
        return bool(self._buffer) or bool(self._lines)

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None when more bytes are needed."""
        replies = self.take(1)
        return replies[0] if replies else None

    def take(self, count: int) -> list[Reply]:
        """Up to ``count`` complete replies, in order (fewer when more bytes are needed).

        A pipelining client reads several replies per exchange; taking them in one call scans
        the buffer once and compacts it once.
        """
        buffer = self._buffer
        if self._code is None and buffer[-1:] == b"\n" and type(buffer) is bytes:
            # The common case: the buffer holds whole lines only, each a reply seen before
            # ("250 2.0.0 Ok", "354 End data..."): one split, one look-up each (every line
            # in _SEEN is a complete one-line reply, shorter than MAX_LINE).
            raws = buffer.split(b"\n")
            raws.pop()  # the empty piece after the last line break
            if len(raws) <= count:
                every = list(map(_SEEN.get, raws))
                if all(every):  # (a Reply is always true; ``None in`` would call __eq__)
                    self._buffer = b""
                    return every  # type: ignore[return-value]  # no None in it
        replies: list[Reply] = []
        start = 0
        while len(replies) < count and (end := buffer.find(b"\n", start)) >= 0:
            if end - start > MAX_LINE:  # however the bytes arrived, in one read or many
                raise ProtocolError(f"Server sent a reply line longer than {MAX_LINE} bytes")
            raw = buffer[start:end]
            if type(raw) is not bytes:
                raw = bytes(raw)
            start = end + 1
            if self._code is None:
                # The common case, a one-line reply: no state to carry between lines, and
                # most such lines ("250 2.1.5 Ok") recur on every message.
                if (known := _SEEN.get(raw)) is not None:
                    replies.append(known)
                    continue
                line = raw.rstrip(b"\r")
                if line[3:4] == b" " and line[:3].isdigit():
                    one = Reply(int(line[:3]), (line[4:].decode("utf-8", errors="replace"),))
                    if len(_SEEN) < _SEEN_MAX and len(raw) <= _SEEN_LINE:
                        _SEEN[raw] = one
                    replies.append(one)
                    continue
            else:
                line = raw.rstrip(b"\r")
            if (last := self._take_line(line)) is not None:
                replies.append(last)
        if start:
            self._buffer = buffer[start:]
        return replies

    def _take_line(self, raw: bytes) -> Reply | None:
        if len(raw) < 3 or not raw[:3].isdigit() or (len(raw) > 3 and raw[3:4] not in b" -"):
            raise ProtocolError(f"Server sent a malformed reply line: {raw[:80]!r}")
        code = int(raw[:3])
        if self._code is not None and code != self._code:
            raise ProtocolError(f"Server changed reply code mid-reply: {self._code} then {code}")
        self._code = code
        self._lines.append(raw[4:].decode("utf-8", errors="replace"))
        if len(self._lines) > MAX_LINES:
            raise ProtocolError(f"Server sent a reply of more than {MAX_LINES} lines")
        if raw[3:4] == b"-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._lines, self._code = [], None
        return reply
