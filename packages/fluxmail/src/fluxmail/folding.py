"""Writing the headers the email package folds wrong: address lists and non-ASCII text.

The email package of the Pythons FluxMail supports cannot fold a long word in an address
header (it writes an empty line into the header block, or a line over RFC 5322's 998
octets), can encode the comma after a non-ASCII display name (merging two recipients into
one), and drops the blanks between the encoded words of long non-ASCII text (CPython
gh-144156). So FluxMail writes these headers itself, already folded, and the message policy
keeps them as written (``refold_source="none"``):

* a mailbox is its display name (atoms, a quoted string, or RFC 2047 encoded words) and its
  ``<address>``; mailboxes are separated by commas, and lines are folded between words,
  never inside one, to at most 78 characters where the words allow;
* text that must be encoded (non-ASCII in a message that is not SMTPUTF8; in a Subject or
  custom header, also a word too long for a line) becomes UTF-8 ``B`` encoded words of at
  most 75 characters, each holding whole characters, blanks included: decoders join
  adjacent encoded words, so the text reads back exactly.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from email.headerregistry import Address

from fluxmail.addresses import SPECIALS, quoted_string

#: RFC 5322 2.1.1: lines SHOULD be at most 78 characters (998 is the hard limit).
LINE = 78
#: RFC 2047 2: an encoded word is at most 75 characters; "=?utf-8?b?" and "?=" take 12,
#: leaving 63 for base64, whole quanta of 4: 60 characters, 45 octets.
_WORD_OCTETS = 45
#: A word longer than this is written as encoded words: with the blank that starts a
#: continuation line and a comma, any line stays within RFC 5322's 998 octets (in UTF-8 too).
LONG_WORD = 240


def encoded_words(text: str) -> list[str]:
    """``text`` as UTF-8 ``B`` encoded words, each within RFC 2047's 75 characters and none
    splitting a character."""
    words: list[str] = []
    chunk = bytearray()
    for char in text:
        data = char.encode("utf-8")
        if chunk and len(chunk) + len(data) > _WORD_OCTETS:
            words.append(_encoded_word(bytes(chunk)))
            chunk.clear()
        chunk += data
    if chunk:
        words.append(_encoded_word(bytes(chunk)))
    return words


def _encoded_word(data: bytes) -> str:
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="


def text_words(text: str, *, utf8: bool) -> list[str]:
    """Unstructured header text (a Subject) as the words to fold: as it is when it can be
    written so, else encoded words."""
    if _must_encode(text, utf8=utf8):
        return encoded_words(text)
    return text.split(" ")


def address_words(addresses: Sequence[str | Address], *, utf8: bool) -> list[str]:
    """An address list as the words to fold, a comma ending each mailbox but the last (a
    string is a bare address, already checked)."""
    words: list[str] = []
    for index, address in enumerate(addresses):
        if isinstance(address, str):
            mailbox = [address]
        elif address.display_name:
            mailbox = [*_phrase(address.display_name, utf8=utf8), f"<{address.addr_spec}>"]
        else:
            mailbox = [address.addr_spec]
        if index < len(addresses) - 1:
            mailbox[-1] += ","
        words += mailbox
    return words


def fold(name: str, words: Sequence[str]) -> str:
    """The value of header ``name`` made of ``words`` (joined by single blanks), folded
    between words: lines joined by ``"\n "`` (the policy writes its own line ending), each
    at most LINE characters unless one word alone is longer. An empty word (two blanks in a
    row) stays where it is, so the text unfolds exactly as it was."""
    lines: list[str] = []
    line: str | None = None
    room = LINE - len(name) - 2  # "Name: " on the first line
    for word in words:
        if line is None:
            line = word
        elif word and len(line) + 1 + len(word) > room:
            lines.append(line)
            line, room = word, LINE - 1  # a continuation line starts with a blank
        else:
            line = f"{line} {word}"
    lines.append(line or "")
    return "\n ".join(lines)


def _phrase(name: str, *, utf8: bool) -> list[str]:
    """A display name as words: atoms, one quoted string, or encoded words (non-ASCII text
    in a message that is not SMTPUTF8). Its words are short enough for a line already
    (``addresses.MAX_NAME_WORD``): encoded words are not used for length here, because
    Python's own address parser reads the blanks between them back into the name."""
    if not utf8 and not name.isascii():
        return encoded_words(name)
    if any(char in SPECIALS for char in name) or "  " in name or name != name.strip(" \t"):
        # One quoted string, folded at its own blanks if need be (folding white space
        # inside quotes unfolds to the same blank).
        return quoted_string(name).split(" ")
    return name.split(" ")


def _must_encode(text: str, *, utf8: bool) -> bool:
    if not utf8 and not text.isascii():
        return True
    return any(len(word.encode("utf-8")) > LONG_WORD for word in text.split(" "))
