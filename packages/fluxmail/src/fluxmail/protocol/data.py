"""The DATA payload: every line ending made CRLF and every leading dot doubled (RFC 5321 4.5.2).

Normalising *all* of ``\\r\\n``, lone ``\\r`` and lone ``\\n`` to CRLF before stuffing is what
closes SMTP smuggling: a bare ``\\n.\\r\\n`` in a message can never end the DATA early on a
server that is lax about line endings, because it reaches the wire as ``\\r\\n..\\r\\n``.
"""

from __future__ import annotations


class CRLFBytes(bytes):
    """Message bytes whose every line break is CRLF already: what :mod:`fluxmail.mime` writes
    (its contract), so :func:`encode_data` does not normalise them again (~40 % of the cost of
    preparing a 2 KB message). Any change to them (adding a header, DKIM signing, slicing)
    gives plain ``bytes``, normalised as usual."""

    __slots__ = ()


class DataReady(CRLFBytes):
    """Message bytes that go after DATA as they are: 7-bit ASCII, every line break CRLF, the
    last line ended, and no line beginning with a dot (nothing to stuff). What
    ``MessageTemplate`` writes when its compiled pieces and a row's values guarantee it, so
    :func:`encode_data` skips its scans of the whole message for dots and line breaks and
    the transaction its 8-bit check (together ~4 % of the pool's instructions per message). As with
    :class:`CRLFBytes`, any change to them gives plain ``bytes``, checked as usual."""

    __slots__ = ()


def normalize_newlines(message: bytes) -> bytes:
    """Return ``message`` with every line break as CRLF."""
    # Three C-level passes beat one regex substitution several times over. (find(), not
    # ``in``: for bytes, ``in`` first tries its operand as an integer, raising and clearing a
    # TypeError, before it searches.)
    if message.find(b"\r") >= 0:
        message = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return message.replace(b"\n", b"\r\n")


#: What ends the content after DATA (the body's last line break comes before it).
END_OF_DATA = b".\r\n"


def encode_data(message: bytes) -> bytes:
    """Return the bytes to write after a 354 reply: normalised, dot-stuffed, terminated."""
    return data_body(message) + END_OF_DATA


def data_body(message: bytes) -> bytes:
    """:func:`encode_data` without the terminator :data:`END_OF_DATA` (for a caller that
    writes it together with what follows, one copy of the message fewer)."""
    if type(message) is DataReady:
        return message
    body = message if type(message) is CRLFBytes else normalize_newlines(message)
    if body.startswith(b"."):
        body = b"." + body
    if body.find(b"\r\n.") >= 0:  # (not ``in``: see normalize_newlines)
        body = body.replace(b"\r\n.", b"\r\n..")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body
