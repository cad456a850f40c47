"""Property-based fuzz tests: whatever a caller (or a server) sends, nothing breaks the wire.

The promise under test: ``create()`` either raises :class:`FluxMailException` with a contract
code, or what reaches the wire is valid (CRLF lines of at most 998 octets, no NUL, exactly the
headers FluxMail meant to write, no Bcc) and carries no injected header or SMTP command.

How the input space is split. Each property is checked on the widest input class on which
FluxMail keeps its promise. An input class on which it did not was checked by its own
property of the same strength, marked ``xfail(strict=True)`` with the bug in ``reason`` and
pinned by an explicit ``@example`` (the minimal reproduction), until the fix turned it into
a strict XPASS and the mark was dropped. Classes with a property of their own:

* display names with long words: ``test_long_display_names`` (FluxMail folds address
  headers itself, folding.py, and refuses a word over 700 bytes);
* display names of more than 30 characters that need quoting (RFC 5322 specials):
  ``test_long_quoted_display_names``;
* non-ASCII display names in a message that is not SMTPUTF8 (written as encoded words):
  ``test_non_ascii_display_names``;
* exact round trip of long non-ASCII header text: ``test_non_ascii_header_text_exact``.

Classes that were carved out until FluxMail was fixed, and are plain properties now: RFC 2047
encoded words in header text, C1 controls, lone surrogates in headers, commands and bodies,
tabs in envelope addresses, IDNA results that are not host names, NUL in bodies, custom
header names, argument types, a reply buffer nobody reads, long display-name words (they
could end the header block), non-ASCII display names (the comma after one could be encoded,
merging two recipients) and long non-ASCII text (CPython gh-144156 dropped its blanks).

Decisions. A header value must read back as the text given (``same_header_text``): leading
blanks never count, and in a display name (an RFC 5322 phrase) only the words count. ASCII
text must then match exactly; non-ASCII text is compared without its blanks, because the
email package of this Python mishandles blanks next to the encoded words it writes (CPython
gh-144156 and relatives); ``test_non_ascii_header_text_exact`` pins the exact form.
A NUL character is legitimate *input* but must never reach the wire raw: RFC 5322 2.3 and
RFC 2045 2.7 forbid NUL in 7bit data (FluxMail may refuse it or transfer-encode it). The
"control characters" that must never reach a header, an address or a command line are
Unicode category Cc but tab (C0, DEL, C1), U+2028/U+2029, and lone surrogates.

``FLUXMAIL_FUZZ_SCALE=20`` multiplies the number of examples for a deeper local run.
"""

from __future__ import annotations

import base64
import email.policy
import functools
import os
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from flux_testkit.smtpd import SMTPTestServer
from fluxmail import FluxMail, FluxMailException
from fluxmail.addresses import ascii_domain, parse_address
from fluxmail.protocol.commands import (
    CommandInjectionError,
    Envelope,
    Extensions,
    command,
    envelope_address,
    mail_from,
    rcpt_to,
)
from fluxmail.protocol.data import encode_data
from fluxmail.protocol.replies import MAX_LINE, MAX_LINES, ProtocolError, Reply, ReplyParser

SENDER = "a@example.com"
ADDRESS_CODES = frozenset({"no_email", "invalid_email"})
PARAM_CODES = frozenset({"invalid_params", "invalid_email"})
#: What create() may raise for bad arguments (the contract's codes).
CREATE_CODES = frozenset(
    [
        "invalid_params",
        "invalid_email",
        "no_email",
        "invalid_priority",
        "sender_required",
        "attachment_not_found",
        "read_error",
        "css_inline_failed",
    ]
)
SCALE = max(1, int(os.environ.get("FLUXMAIL_FUZZ_SCALE", "1")))


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


FAST = fuzz(80)
MEDIUM = fuzz(50)
SLOW = fuzz(30)

# -- strategies ----------------------------------------------------------------------------------

#: Characters that have broken mail software before: line breaks of every kind, NUL, other
#: controls, address and header syntax, RFC 2047 markers, odd spaces, non-BMP, bidi controls.
NASTY = (
    "\r\n\x00\t\x0b\x0c\x1b\x1c\x1d\x1e\x1f\x7f\x80\x85\x9b\u2028\u2029\ud800\udfff"
    "<>\"',;:@\\()[]. =?_-\u00a0\u3000\u200b\ufeff\u202eé€𝄞"
)
C1_CONTROLS = "".join(map(chr, range(0x80, 0xA0)))
#: Characters that IDNA turns into ASCII punctuation or a space (see ``idna_trap``).
IDNA_TRAPS = "\uff1c\uff1e\uff0c\uff20\u00b4\u00a8\u2474\u2100\ufe64\uff02\uff1b\uff1a\uff3c"

#: Any character, and the usual suspects (lone surrogates among them).
any_char = st.one_of(st.characters(codec="utf-8"), st.sampled_from(NASTY))


@functools.cache
def idna_trap(ch: str) -> bool:
    """A non-ASCII character that the IDNA codec (nameprep, i.e. NFKC) turns into ASCII other
    than letters, digits, "-" and ".": U+FF1C FULLWIDTH LESS-THAN SIGN becomes "<", U+FF0C a
    comma, U+00B4 ACUTE ACCENT a space and a combining accent, and so on."""
    if ch.isascii():
        return False
    try:
        out = ("a" + ch).encode("idna")
    except UnicodeError:
        return False
    return re.fullmatch(rb"[A-Za-z0-9.-]*", out) is None


def idna_ok(label: str) -> bool:
    """Whether the IDNA codec encodes the label (mixed-direction labels, for one, it refuses)."""
    try:
        label.encode("idna")
    except UnicodeError:
        return False
    return True


#: Characters for text that may end up in a domain (IDNA traps included: they must be refused).
addr_char = any_char


def texts(alphabet: st.SearchStrategy[str] = any_char, max_size: int = 40) -> Any:
    """Short text, and now and then a very long repetition of some (folding, line limits)."""
    short = st.text(alphabet, max_size=max_size)
    long = st.tuples(st.text(alphabet, min_size=1, max_size=8), st.integers(100, 600)).map(
        lambda t: t[0] * t[1]
    )
    return st.one_of(short, short, short, long)


def no_ew(text: str) -> bool:
    """No RFC 2047 marker ("=?"): text FluxMail must accept has none."""
    return "=?" not in text


def looks_encoded(text: str) -> bool:
    """Text with something shaped like an RFC 2047 encoded word, which FluxMail refuses (the
    email package would decode it, and write what it decodes to)."""
    return re.search(r"=\?.*?\?=", text, re.DOTALL) is not None


def refusable(text: str) -> bool:
    return injection_chars(text) or looks_encoded(text)


nasty_text = texts()
#: Header text: anything, encoded-word look-alikes and control characters included.
plain_text = st.one_of(nasty_text, st.builds("=?{}?=".format, nasty_text))
#: Characters FluxMail must accept in header text (no injection characters).
clean_char = any_char.filter(lambda ch: not injection_chars(ch))
clean_text = texts(clean_char).filter(no_ew)
#: Header text that create() should mostly accept, and sometimes has to refuse.
header_text = st.one_of(clean_text, clean_text, plain_text)

ATOM_CHARS = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
atom = st.text(st.sampled_from(ATOM_CHARS), min_size=1, max_size=10)
label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\Z")
unicode_label = st.text(
    st.characters(categories=("Ll", "Lu", "Lo"), min_codepoint=0xC0, max_codepoint=0x3000),
    min_size=1,
    max_size=6,
).filter(lambda s: not any(map(idna_trap, s)) and idna_ok(s))
#: Addresses FluxMail must accept with an ASCII local part (ASCII or IDNA domains).
ascii_addresses = st.one_of(
    st.builds(
        lambda local, labels, tld: f"{'.'.join(local)}@{'.'.join([*labels, tld])}",
        st.lists(atom, min_size=1, max_size=3),
        st.lists(label, min_size=1, max_size=3),
        st.sampled_from(["com", "org", "example", "xn--p1ai"]),
    ),
    st.builds(lambda d: f"user@{d}.example", unicode_label),
)
#: Addresses with a non-ASCII local part: they make the message SMTPUTF8 (RFC 6531/6532).
utf8_addresses = st.builds(
    lambda u, d: f"{u}@{d}.example", st.sampled_from(["jörg", "δοκιμή", "用户", "x€"]), label
)
good_addresses = st.one_of(ascii_addresses, utf8_addresses)


def _address_like(chars: st.SearchStrategy[str]) -> Any:
    local = st.text(st.one_of(st.sampled_from(ATOM_CHARS + "."), chars), min_size=1, max_size=12)
    domain = st.text(st.one_of(st.sampled_from("abc-.09"), chars), min_size=1, max_size=12)
    return st.builds(lambda lp, d: f"{lp}@{d}", local, domain)


def quoted(name: str, address: str) -> str:
    """``"name" <address>`` with the name as an RFC 5322 quoted-string."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{address}>'


def with_name(names: Any, addresses: Any, *, raw: bool = True) -> Any:
    """An address alone, or with a display name: quoted, unquoted, or (``raw``) quoted as is,
    stray quotes and backslashes included (which parse_address may refuse)."""
    forms = [
        addresses,
        st.builds(quoted, names, addresses),
        st.builds(
            lambda n, a, sp: f"{n}{sp}<{a}>",
            names if raw else names.filter(lambda n: not n.strip().startswith('"')),
            addresses,
            st.sampled_from(["", " "]),
        ),
    ]
    if raw:
        forms.append(st.builds(lambda n, a: f'"{n}" <{a}>', names, addresses))
    return st.one_of(forms)


addr_text = texts(addr_char)
#: Text meant to stress parse_address: garbage, near-addresses and name-addrs.
address_inputs = st.one_of(
    addr_text,
    good_addresses,
    _address_like(addr_char),
    with_name(addr_text, good_addresses),
    with_name(st.text(addr_char, max_size=10), _address_like(addr_char)),
    st.builds(
        lambda ws1, a, ws2: ws1 + a + ws2,
        st.sampled_from(["", " ", "\t", "\n"]),
        good_addresses,
        st.sampled_from(["", " ", "\t", "\r\n"]),
    ),
)


#: RFC 5322 specials: a display name with one of them is written as a quoted-string.
SPECIALS = '()<>@,:;.\\"[]'


def display_names(chars: st.SearchStrategy[str]) -> Any:
    """Short names (at most 30 characters), and long ones of words of at most 40 characters
    without specials. Longer unbreakable runs are test_long_display_names, long names that
    need quoting test_long_quoted_display_names."""
    word_char = chars.filter(lambda ch: ch not in " \t" and ch not in SPECIALS)
    word = st.text(word_char, min_size=1, max_size=40)
    long = st.lists(word, min_size=1, max_size=60).flatmap(
        lambda words: st.sampled_from([" ", "\t", "  "]).map(lambda sep: sep.join(words))
    )
    return st.one_of(st.text(chars, max_size=30), long).filter(no_ew)


def people_with(
    names: st.SearchStrategy[str],
    addresses: Any = good_addresses,
    *,
    smtputf8: bool = False,
    raw: bool = False,
) -> Any:
    """Recipients, cc, bcc, reply_to and sender for ``create()``, with these display names;
    ``smtputf8`` adds a Bcc with a non-ASCII local part, which makes the message SMTPUTF8.
    ``raw`` adds names quoted without escaping (see ``with_name``)."""
    named = with_name(names, addresses, raw=raw)
    bcc = st.lists(named, max_size=2)
    if smtputf8:
        bcc = st.tuples(utf8_addresses, st.lists(named, max_size=1)).map(lambda t: [t[0], *t[1]])
    return st.fixed_dictionaries(
        {
            "recipients": st.lists(named, min_size=1, max_size=3),
            "cc": st.lists(named, max_size=2),
            "bcc": bcc,
            "reply_to": st.none() | named,
            "sender": st.none() | named,
        }
    )


ascii_char = st.one_of(
    st.characters(codec="ascii"), st.sampled_from([ch for ch in NASTY if ch.isascii()])
)
clean_name_char = clean_char.filter(lambda ch: ch not in "<>")
#: People create() must accept, and people with any display names at all. Non-ASCII display
#: names in a message that is not SMTPUTF8 (RFC 2047 encoded words) are
#: test_non_ascii_display_names.
clean_people = st.one_of(
    people_with(display_names(clean_name_char.filter(str.isascii))),
    people_with(display_names(clean_name_char), smtputf8=True),
)
people = st.one_of(
    clean_people,
    people_with(display_names(ascii_char), raw=True),
    people_with(display_names(any_char), smtputf8=True, raw=True),
)

#: Header names of the kind RFC 5322 allows (printable ASCII but ":"), short enough to fit.
FIELD_NAME = st.from_regex(r"\A[!-9;-~]{1,60}\Z")
#: Headers FluxMail writes or manages itself, and the ones the email package structures.
MANAGED = frozenset(
    [
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "x-priority",
        "x-msmail-priority",
        "importance",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "mime-version",
        "orig-date",
    ]
)


def is_managed(name: str) -> bool:
    lowered = name.lower()
    return lowered in MANAGED or lowered.startswith(("content-", "resent-"))


custom_names = FIELD_NAME.filter(lambda n: not is_managed(n))

# -- helpers -------------------------------------------------------------------------------------


def expect_code(exc: FluxMailException, codes: Iterable[str]) -> None:
    assert exc.code in codes, repr(exc)


def try_create(**kwargs: Any) -> bytes | FluxMailException:
    """The message bytes of ``create(**kwargs)``, or the FluxMailException it raised.

    Any other exception escapes, and that is a bug: the contract allows FluxMailException only.
    """
    args: dict[str, Any] = {"subject": "s", "recipients": ["to@example.com"], "body": "b"}
    args.update(kwargs)
    mailer = FluxMail("smtp", "h", sender=SENDER)
    try:
        mailer.create(**args)
    except FluxMailException as exc:
        event(f"create() refused: {exc.code}")
        return exc
    event("create() accepted")
    assert mailer._draft is not None
    return mailer._draft.as_bytes()


def create_bytes(**kwargs: Any) -> bytes | None:
    """The message bytes of ``create(**kwargs)``, or None if it refused them (with a contract
    code)."""
    result = try_create(**kwargs)
    if isinstance(result, FluxMailException):
        expect_code(result, CREATE_CODES)
        return None
    return result


def injection_chars(text: str) -> bool:
    """What FluxMail refuses in a header or command line: C0 but tab, DEL, C1 (NEL among
    them), LS and PS, and lone surrogates."""
    return any(
        (ord(ch) < 0x20 and ch != "\t")
        or 0x7F <= ord(ch) <= 0x9F
        or ch in "\u2028\u2029"
        or 0xD800 <= ord(ch) <= 0xDFFF
        for ch in text
    )


def has_cc(text: str) -> bool:
    """Unicode control characters (C0, DEL, C1) and the line and paragraph separators."""
    return any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in text)


def assert_wire_lines(raw: bytes) -> None:
    """CRLF line ends only, at most 998 octets per line, no NUL."""
    assert raw.endswith(b"\r\n")
    for line in raw[:-2].split(b"\r\n"):
        assert b"\r" not in line, f"bare CR in {line[:120]!r}"
        assert b"\n" not in line, f"bare LF in {line[:120]!r}"
        assert len(line) <= 998, f"line of {len(line)} octets: {line[:80]!r}..."
    assert b"\x00" not in raw, "NUL on the wire"


def parse_bytes(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def parse_values(raw: bytes) -> EmailMessage:
    """The message as a reader sees it. BytesParser reads 8-bit headers as surrogate escapes,
    so an SMTPUTF8 message (UTF-8 headers, RFC 6532) is decoded before parsing."""
    if raw.isascii():
        return parse_bytes(raw)
    msg = Parser(policy=email.policy.default).parsestr(raw.decode("utf-8"))
    assert isinstance(msg, EmailMessage)
    return msg


def expected_headers(
    *,
    cc: bool = False,
    reply_to: bool = False,
    in_reply_to: bool = False,
    references: bool = False,
    priority: bool = False,
    unsubscribe: bool = False,
    custom: Iterable[str] = (),
) -> Counter[str]:
    names = ["from", "to", "subject", "date", "message-id", "mime-version", "content-type"]
    names.append("content-transfer-encoding")  # the body is a single text part here
    names += ["cc"] * cc + ["reply-to"] * reply_to
    names += ["in-reply-to"] * in_reply_to + ["references"] * references
    names += ["x-priority", "x-msmail-priority", "importance"] * priority
    names += ["list-unsubscribe", "list-unsubscribe-post"] * unsubscribe
    names += [name.lower() for name in custom]
    return Counter(names)


def check_headers(raw: bytes | None, expected: Counter[str]) -> EmailMessage | None:
    """Valid lines, exactly the expected header fields (so none injected), never a Bcc.

    Returns the message parsed for reading values, or None if ``create()`` refused the input.
    """
    if raw is None:
        return None
    assert_wire_lines(raw)
    head = raw[: raw.index(b"\r\n\r\n") + 2]
    counts = Counter(name.lower() for name in parse_bytes(raw))
    assert "bcc" not in counts, head.decode("utf-8", "replace")
    assert counts == expected, head.decode("utf-8", "replace")
    return parse_values(raw)


def same_header_text(got: str, want: str, *, exact: bool = False, phrase: bool = False) -> bool:
    """Whether a header value read back as ``got`` carries the text ``want`` that was written.

    Leading blanks never count (the parser drops them, and the folder may move the first word
    to a continuation line). A ``phrase`` (a display name) is a sequence of words and only the
    words count: the email package splits it with ``str.split()``, so any run of white space
    (U+00A0 and the other Unicode spaces included) reads as one space, at the ends as none.
    ASCII text (or ``exact``) must then match exactly. Non-ASCII text is compared without its
    blanks: CPython's folder mishandles blanks next to the encoded words it writes, dropping
    a run between two of them (gh-144156) or moving a tab into the folding white space, and
    its address parser puts a space between two adjacent encoded words of one display name,
    which RFC 2047 6.2 says to join (test_non_ascii_header_text_exact pins the exact form).
    """
    written_ascii = want.isascii()  # as given: U+00A0 is non-ASCII even where split() drops it
    if phrase:
        got, want = " ".join(got.split()), " ".join(want.split())
    got, want = got.lstrip(" \t"), want.lstrip(" \t")
    if exact or written_ascii:
        return got == want
    return re.sub(r"[ \t]+", "", got) == re.sub(r"[ \t]+", "", want)


def assert_header_text(got: object, want: str, *, phrase: bool = False) -> None:
    assert isinstance(got, str), got
    assert same_header_text(got, want, phrase=phrase), (got, want)


def check_addresses(header: Any, inputs: Iterable[str]) -> None:
    """The header lists exactly the given addresses, with their display names."""
    want = [parse_address(value) for value in inputs]
    got = list(header.addresses)
    assert [a.addr_spec for a in got] == [a.addr_spec for a in want]
    for have, given_ in zip(got, want, strict=True):
        assert_header_text(have.display_name, given_.display_name, phrase=True)


def nl(text: str) -> str:
    """Text with every line break as LF and a final LF (what a MIME text part carries)."""
    text = re.sub(r"\r\n|\r", "\n", text)
    return text if text.endswith("\n") else text + "\n"


def unstuff(wire: bytes) -> bytes:
    """Undo encode_data, checking the terminator and the transparency dots on the way."""
    assert wire.endswith(b"\r\n.\r\n")
    bare = wire.replace(b"\r\n", b"")
    assert b"\r" not in bare
    assert b"\n" not in bare
    lines = wire.split(b"\r\n")
    out = []
    for line in lines[:-2]:
        assert line != b".", "a lone dot before the end of DATA"
        if line.startswith(b"."):
            assert line.startswith(b".."), f"leading dot not doubled in {line[:40]!r}"
            line = line[1:]
        out.append(line + b"\r\n")
    return b"".join(out)


def normalized(data: bytes) -> bytes:
    """``data`` with CRLF line ends and a final CRLF (an empty message is one empty line)."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


# == 1. address parsing ==========================================================================


def check_parsed_address(value: str) -> Address | None:
    """parse_address: a contract error, or an Address that is safe everywhere it goes."""
    try:
        addr = parse_address(value)
    except FluxMailException as exc:
        expect_code(exc, ADDRESS_CODES)
        return None
    assert isinstance(addr, Address)
    assert addr.username
    # Headers carry the DNS form of the domain: letters, digits, hyphens and dots only.
    assert re.fullmatch(r"[A-Za-z0-9.-]+", addr.domain), addr.domain
    assert not injection_chars(addr.addr_spec), addr.addr_spec
    assert not injection_chars(str(addr)), str(addr)
    assert parse_address(str(addr)).addr_spec == addr.addr_spec
    assert parse_address(addr.addr_spec).addr_spec == addr.addr_spec
    for smtputf8 in (False, True):
        try:
            wire = envelope_address(addr.addr_spec, smtputf8=smtputf8)
        except FluxMailException as exc:
            expect_code(exc, {"invalid_email"})
            assert not smtputf8
            assert not addr.username.isascii()
            continue
        assert not any(ch in wire for ch in "\r\n <>"), wire
        assert not injection_chars(wire), wire
    return addr


def check_envelope_text(value: str, smtputf8: bool) -> None:
    try:
        wire = envelope_address(value, smtputf8=smtputf8)
    except FluxMailException as exc:
        expect_code(exc, PARAM_CODES)
        return
    assert not any(ch in wire for ch in "\r\n <>"), wire
    assert not injection_chars(wire), wire


@FAST
@given(address_inputs)
@example("a@example.com\u2028")
@example("Eve\u2029 <eve@example.com>")
@example("\x00a@example.com")
@example("a@" + "b" * 64 + ".com")
@example("<>")
@example('"" <a@example.com>')
@example('"a\\" <a@example.com>')
@example("x" * 300 + "@example.com")
@example("a@bücher.example")
@example("\u3000a@example.com")
def test_parse_address(value: str) -> None:
    """A contract error, or an Address without injection characters, with a DNS domain, that
    re-parses to itself and has a safe envelope form."""
    check_parsed_address(value)


@FAST
@given(texts(addr_char, max_size=30), st.booleans())
@example("a\r\nRCPT TO:<x@y>", True)
@example("a@b>\r\nDATA", False)
def test_envelope_address_arbitrary_text(value: str, smtputf8: bool) -> None:
    """Whatever the text, envelope_address refuses it or yields one token without CR, LF,
    space or angle brackets."""
    check_envelope_text(value, smtputf8)


@FAST
@given(
    st.builds(
        lambda a, c, b: f"{a}{c}{b}@example.com",
        atom,
        st.text(st.sampled_from(C1_CONTROLS.replace("\x85", "")), min_size=1, max_size=3),
        atom,
    )
)
@example("a\x9bb@example.com")
def test_address_c1_controls_refused(value: str) -> None:
    """No control character at all (Unicode Cc) in an accepted address."""
    addr = check_parsed_address(value)
    if addr is not None:
        assert not has_cc(addr.addr_spec), ascii(addr.addr_spec)
        assert not has_cc(str(addr)), ascii(str(addr))


@FAST
@given(st.builds(lambda a, ws, b: f"{a}{ws}{b}@example.com", atom, st.sampled_from(" \t"), atom))
@example("a\t@example.com")
def test_envelope_address_whitespace(value: str) -> None:
    try:
        wire = envelope_address(value, smtputf8=True)
    except FluxMailException:
        return
    assert " " not in wire
    assert "\t" not in wire


@FAST
@given(
    st.builds(
        lambda local, pre, trap, post: f"{local}@{pre}{trap}{post}.com",
        atom,
        st.text(st.sampled_from("abc-"), max_size=3),
        st.text(st.sampled_from(IDNA_TRAPS), min_size=1, max_size=3),
        st.text(st.sampled_from("abc-"), max_size=3),
    ),
    st.booleans(),
)
@example("victim@x\uff0cevil\uff20attacker.example", False)
def test_idna_traps_in_domains(value: str, smtputf8: bool) -> None:
    """A domain whose IDNA form is not letters, digits and hyphens is refused everywhere."""
    check_parsed_address(value)
    check_envelope_text(value, smtputf8)


# == 2. header writing ===========================================================================


@FAST
@given(header_text)
@example("x\r\nBcc: victim@example.com")
@example("x\nBcc: victim@example.com")
@example("x\u2028Bcc: victim@example.com")
@example(" \t leading and trailing blanks \t ")
@example("0" * 70)
@example("a" * 2000)
@example("é" * 500)
@example("word " * 300)
@example("aa é" * 10)
def test_subject(subject: str) -> None:
    msg = check_headers(create_bytes(subject=subject), expected_headers())
    if msg is None:
        assert not subject.strip() or refusable(subject)
        return
    assert_header_text(msg["Subject"], subject)


@MEDIUM
@given(people)
@example(
    {
        "recipients": ['"Eve\r\nBcc: x@example.com" <eve@example.com>'],
        "cc": [],
        "bcc": [],
        "reply_to": None,
        "sender": None,
    }
)
@example(
    {
        "recipients": ["a@example.com"],
        "cc": ['"a, b" <c@example.com>'],
        "bcc": ["Secret <secret@example.com>"],
        "reply_to": '"x@y" <r@example.com>',
        "sender": '"Name (comment)" <s@example.com>',
    }
)
@example(
    {
        "recipients": ['"Jö, rg" <jörg@x.example>'],
        "cc": ["用户@y.example"],
        "bcc": [],
        "reply_to": None,
        "sender": None,
    }
)
def test_address_headers(people: dict[str, Any]) -> None:
    """Addresses and display names as given, each header once, Bcc only in the envelope."""
    check_people(people)


def check_people(people: dict[str, Any]) -> None:
    raw = create_bytes(**people)
    expected = expected_headers(cc=bool(people["cc"]), reply_to=people["reply_to"] is not None)
    msg = check_headers(raw, expected)
    if msg is None:
        values = [*people["recipients"], *people["cc"], *people["bcc"]]
        values += [v for v in (people["reply_to"], people["sender"]) if v is not None]
        # create() may only refuse what parse_address refuses on its own.
        assert any(check_parsed_address(v) is None for v in values)
        return
    check_addresses(msg["To"], people["recipients"])
    check_addresses(msg["From"], [people["sender"] or SENDER])
    if people["cc"]:
        check_addresses(msg["Cc"], people["cc"])
    if people["reply_to"] is not None:
        check_addresses(msg["Reply-To"], [people["reply_to"]])


@FAST
@given(
    st.lists(
        st.builds(
            lambda piece, times: piece * times,
            st.text(clean_name_char.filter(lambda ch: ch not in " \t"), min_size=1, max_size=4),
            st.integers(41, 1000),
        ).filter(no_ew),
        min_size=1,
        max_size=3,
    ).map(" ".join),
    good_addresses,
)
@example("0" * 100 + " " + "0" * 100, "n@example.com")
@example("0" * 1000, "a@example.com")
@example("é" * 600, "jörg@x.example")
def test_long_display_names(name: str, address: str) -> None:
    """A display name with long unbreakable words is refused (a word over 700 bytes), or
    written on lines that fit, never with an empty line in the header block."""
    value = quoted(name, address)
    msg = check_headers(create_bytes(recipients=[value]), expected_headers())
    if msg is not None:
        check_addresses(msg["To"], [value])


@MEDIUM
@given(people_with(display_names(clean_name_char), ascii_addresses))
@example(
    {
        "recipients": [
            "team@example.com",
            "José García <jgarcia1@example.com>",
            "bob@example.com",
        ],
        "cc": [],
        "bcc": [],
        "reply_to": None,
        "sender": None,
    }
)
def test_non_ascii_display_names(people: dict[str, Any]) -> None:
    """Non-ASCII display names in a message that is not SMTPUTF8: as test_address_headers."""
    check_people(people)


@FAST
@given(
    st.text(clean_name_char, min_size=1, max_size=10).filter(no_ew),
    st.builds(lambda local, d: f"{local}@{d}.com", atom, label),
)
@example("Zoë", "z@example.com")
def test_short_non_ascii_display_name(name: str, address: str) -> None:
    """One short encoded display name on a line of its own reads back as given."""
    check_people(
        {
            "recipients": [quoted(name, address)],
            "cc": [],
            "bcc": [],
            "reply_to": None,
            "sender": None,
        }
    )


@FAST
@given(
    st.one_of(
        st.lists(
            st.text(
                clean_name_char.filter(lambda ch: ch not in " \t"), min_size=1, max_size=20
            ).filter(no_ew),
            min_size=2,
            max_size=12,
        ).map(" ".join),
        st.text(st.sampled_from('"\\,@<> a'), min_size=31, max_size=60),
    ).filter(lambda name: len(name) > 30 and any(ch in SPECIALS for ch in name)),
    good_addresses,
)
@example(
    "Support Team of Example Corporation International Limited, billing@evil.example",
    "ceo@example.com",
)
@example('"' * 30 + ",evil@attacker.example", "ceo@example.com")
def test_long_quoted_display_names(name: str, address: str) -> None:
    """Long names that need quoting: refused, or written so that they read back as given."""
    value = quoted(name, address)
    msg = check_headers(create_bytes(recipients=[value]), expected_headers())
    if msg is not None:
        check_addresses(msg["To"], [value])


@FAST
@given(
    in_reply_to=st.none() | header_text,
    references=st.none() | header_text | st.lists(header_text, max_size=4),
    unsubscribe=st.none() | header_text | header_text.map(lambda s: "https://example.com/" + s),
    priority=st.none() | st.sampled_from(["high", "LOW", "Normal"]),
)
@example(
    in_reply_to="<a@example.com>\r\nBcc: x@example.com",
    references=None,
    unsubscribe=None,
    priority=None,
)
@example(in_reply_to=None, references=["<a@b>", "<c@d>\nBcc: x@y"], unsubscribe=None, priority=None)
@example(
    in_reply_to=None,
    references=None,
    unsubscribe="https://x.example/u>\r\nBcc: x@y",
    priority=None,
)
@example(
    in_reply_to="<" + "x" * 2000 + "@example.com>",
    references=["<r@x>"] * 200,
    unsubscribe="https://example.com/" + "u" * 2000,
    priority="high",
)
def test_threading_priority_unsubscribe(
    in_reply_to: str | None,
    references: str | list[str] | None,
    unsubscribe: str | None,
    priority: str | None,
) -> None:
    raw = create_bytes(
        in_reply_to=in_reply_to,
        references=references,
        unsubscribe_url=unsubscribe,
        priority=priority,
    )
    expected = expected_headers(
        in_reply_to=in_reply_to is not None,
        references=references is not None,
        priority=priority is not None,
        unsubscribe=unsubscribe is not None,
    )
    msg = check_headers(raw, expected)
    if msg is None:
        return
    if in_reply_to is not None:
        assert_header_text(msg["In-Reply-To"], in_reply_to)
    if references is not None:
        refs = references if isinstance(references, list) else [references]
        assert_header_text(msg["References"], " ".join(refs))
    if unsubscribe is not None:
        assert unsubscribe.lower().startswith("https://")
        assert_header_text(msg["List-Unsubscribe"], f"<{unsubscribe}>")


PRIORITY_HEADERS = {"high": ("1", "High"), "normal": ("3", "Normal"), "low": ("5", "Low")}


@FAST
@given(st.one_of(st.sampled_from(["high", "LOW", "Normal", "urgent", "", " high"]), nasty_text))
def test_priority(priority: str) -> None:
    """high/normal/low in any case give the three priority headers; the rest invalid_priority."""
    raw = try_create(priority=priority)
    if isinstance(raw, FluxMailException):
        expect_code(raw, {"invalid_priority"})
        assert priority.lower() not in PRIORITY_HEADERS
        return
    msg = check_headers(raw, expected_headers(priority=True))
    assert msg is not None
    number, word = PRIORITY_HEADERS[priority.lower()]
    assert (msg["X-Priority"], msg["X-MSMail-Priority"], msg["Importance"]) == (number, word, word)


@MEDIUM
@given(st.dictionaries(custom_names, header_text, max_size=4))
@example({"X-Tag": "x\r\nBcc: victim@example.com"})
@example({"X-Long": "v" * 3000})
@example({"X-" + "n" * 58: "value"})
@example({"x-dup": "1", "X-DUP": "2"})
def test_custom_headers(headers: dict[str, str]) -> None:
    """Well-formed custom header names: each written once, its value read back unchanged."""
    msg = check_headers(create_bytes(headers=headers), expected_headers(custom=headers))
    if msg is None:
        assert any(map(refusable, headers.values()))
        return
    for name, value in headers.items():
        values = msg.get_all(name, [])
        assert any(same_header_text(v, value) for v in values), (name, value, values)


@SLOW
@given(
    subject=clean_text.filter(str.strip),
    people=clean_people,
    in_reply_to=st.none() | clean_text,
    references=st.none() | st.lists(clean_text, max_size=3),
    priority=st.none() | st.sampled_from(["high", "normal", "low"]),
    headers=st.dictionaries(custom_names, clean_text, max_size=3),
)
def test_all_headers_together(
    subject: str,
    people: dict[str, Any],
    in_reply_to: str | None,
    references: list[str] | None,
    priority: str | None,
    headers: dict[str, str],
) -> None:
    raw = create_bytes(
        subject=subject,
        **people,
        in_reply_to=in_reply_to,
        references=references,
        priority=priority,
        unsubscribe_url="https://example.com/unsubscribe",
        headers=headers,
    )
    expected = expected_headers(
        cc=bool(people["cc"]),
        reply_to=people["reply_to"] is not None,
        in_reply_to=in_reply_to is not None,
        references=references is not None,
        priority=priority is not None,
        unsubscribe=True,
        custom=headers,
    )
    msg = check_headers(raw, expected)
    assert msg is not None  # nothing here is invalid
    assert_header_text(msg["Subject"], subject)
    check_addresses(msg["To"], people["recipients"])


@FAST
@given(
    st.tuples(st.text(st.sampled_from("ab é\t"), min_size=1, max_size=6), st.integers(5, 60)).map(
        lambda t: t[0] * t[1]
    )
)
@example("aa é" * 10)
def test_non_ascii_header_text_exact(subject: str) -> None:
    msg = check_headers(create_bytes(subject=subject), expected_headers())
    if msg is not None:
        assert same_header_text(msg["Subject"], subject, exact=True), msg["Subject"]


#: Short text for ODD_VALUES (no lone surrogates: in bodies they are test_surrogates_in_bodies).
odd_text = st.text(st.characters(codec="utf-8"), max_size=5)
#: Values of every type a caller might pass by mistake.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=5),
    odd_text,
    st.lists(odd_text | st.integers(), max_size=2),
    st.tuples(odd_text),
    st.dictionaries(odd_text, st.integers(), max_size=2),
    st.dictionaries(odd_text, odd_text, max_size=2),
    st.sets(st.integers(), max_size=2),
    st.builds(object),
)
CREATE_ARGS = [
    "subject",
    "recipients",
    "body",
    "sender",
    "cc",
    "bcc",
    "reply_to",
    "attachments",
    "html_body",
    "plain_body",
    "in_reply_to",
    "references",
    "priority",
    "unsubscribe_url",
    "inline_images",
    "inline_css",
]


@FAST
@given(st.sampled_from(CREATE_ARGS), ODD_VALUES)
def test_argument_types(name: str, value: object) -> None:
    """A value of the wrong type is a FluxMailException, never a TypeError from inside."""
    raw = create_bytes(**{"html_body": True, "plain_body": "p", name: value})
    if raw is not None:
        assert_wire_lines(raw)


@FAST
@given(ODD_VALUES | st.dictionaries(custom_names, clean_text, max_size=2))
@example([("X-A", "v")])
@example({"X-A": "v"})
@example({"X-A": 5})
@example(None)
def test_headers_argument_type(value: object) -> None:
    """headers= of any type: None adds nothing; a dict of valid names and text values is
    written, one field per name; anything else (a list of pairs, a value that is not text)
    is refused with invalid_params, never an exception of another kind."""
    result = try_create(headers=value)
    if value is None:
        assert isinstance(result, bytes)
        check_headers(result, expected_headers())
    elif not isinstance(value, dict):
        assert isinstance(result, FluxMailException), f"{type(value).__name__} was accepted"
        assert result.code == "invalid_params"
    elif isinstance(result, bytes):
        msg = check_headers(result, expected_headers(custom=value))
        assert msg is not None
        for name, text in value.items():
            assert isinstance(text, str)
            assert_header_text(msg[name], text)
    else:
        assert result.code == "invalid_params", repr(result)
        assert not all(
            isinstance(n, str) and isinstance(v, str) and not is_managed(n)
            and re.fullmatch(r"[!-9;-~]{1,60}", n) and not refusable(v)
            for n, v in value.items()
        ), f"valid headers refused: {result}"  # fmt: skip


@FAST
@given(st.sampled_from(["dsn_notify", "dsn_ret", "dsn_envid"]), ODD_VALUES)
@example("dsn_notify", 5)
def test_dsn_argument_types(name: str, value: object) -> None:
    raw = create_bytes(**{name: value})
    if raw is not None:
        assert_wire_lines(raw)


# -- header names (xfail: FluxMail writes any name it is given) ----------------------------------

custom_name_inputs = st.one_of(
    st.sampled_from(sorted(MANAGED | {"content-type", "content-id", "resent-to"})).flatmap(
        lambda n: st.sampled_from([n, n.upper(), n.title()])
    ),
    texts(max_size=20).filter(lambda s: not injection_chars(s)),
    st.from_regex(r"\A[!-9;-~]{990,1100}\Z"),
    st.builds(lambda a, b: f"{a}: {b}", FIELD_NAME, FIELD_NAME),
)


@FAST
@given(st.dictionaries(custom_name_inputs, plain_text, min_size=1, max_size=2))
@example({"Bcc": "victim@example.com"})
@example({"To": "victim@example.com"})
@example({"X-A: b": "v"})
@example({"To: victim@example.com, X-Y": "v"})
@example({"X-" + "a" * 1000: "v"})
@example({"": "v"})
def test_custom_header_names_refused_or_written_exactly(headers: dict[str, str]) -> None:
    """Any name: refused with FluxMailException, or written once under exactly that name."""
    raw = create_bytes(headers=headers, priority="high")
    msg = check_headers(raw, expected_headers(priority=True, custom=headers))
    if msg is not None:
        for name, value in headers.items():
            assert any(same_header_text(v, value) for v in msg.get_all(name, []))


# -- encoded words (xfail: the email package decodes them into the header it writes) -------------


def encoded_word(text: str, encoding: str) -> str:
    data = text.encode("utf-8")
    if encoding == "b":
        return f"=?utf-8?b?{base64.b64encode(data).decode()}?="
    body = "".join(chr(b) if chr(b).isalnum() else f"={b:02X}" for b in data)
    return f"=?utf-8?q?{body}?="


def encoded_word_variant(word: str, variant: str) -> str:
    """Spellings of an encoded word that the email package decodes all the same: a blank or
    a tab inside the encoded text, an empty charset, a language tag, upper-case markers."""
    prefix, charset, enc, text, _ = word.split("?")
    match variant:
        case "blank":
            text = text[:1] + " " + text[1:]
        case "tab":
            text = text[:1] + "\t" + text[1:]
        case "no-charset":
            charset = ""
        case "language":
            charset += "*en"
        case "upper":
            charset, enc = charset.upper(), enc.upper()
    return "?".join((prefix, charset, enc, text, "="))


encoded_words = st.builds(
    lambda text, inject, enc, variant: encoded_word_variant(
        encoded_word(text + inject, enc), variant
    ),
    st.text(any_char, max_size=10),
    st.sampled_from(["\r\nBcc: v@example.com", "\nTo: v@x", "\rCc: v@x", "\r\n\r\nbody", "\x00"]),
    st.sampled_from("qb"),
    st.sampled_from(["plain", "blank", "tab", "no-charset", "language", "upper"]),
)
#: Short plain text around the encoded words (long display names are test_long_display_names).
with_encoded_words = st.lists(
    st.one_of(st.text(any_char, max_size=20).filter(no_ew), encoded_words),
    min_size=1,
    max_size=3,
).map(" ".join)
EW_FIELDS = [
    "subject",
    "to_name",
    "reply_to_name",
    "sender_name",
    "in_reply_to",
    "references",
    "custom",
]


@FAST
@given(st.sampled_from(EW_FIELDS), with_encoded_words)
@example("subject", "=?utf-8?q?x=0D=0ABcc:_v@x.com?=")
@example("subject", "=?utf-8?q?a b=0D=0ABcc:_v@x.com?=")
@example("to_name", "=??q?=0D=0ABcc:_v@x.com?=")
def test_encoded_words_in_headers(field: str, value: str) -> None:
    """Text that looks like RFC 2047 is refused, or written so that it reads back verbatim."""
    named = quoted(value, "n@example.com")
    args: dict[str, Any] = {
        "subject": {"subject": value},
        "to_name": {"recipients": [named]},
        "reply_to_name": {"reply_to": named},
        "sender_name": {"sender": named},
        "in_reply_to": {"in_reply_to": value},
        "references": {"references": [value]},
        "custom": {"headers": {"X-Custom": value}},
    }[field]
    expected = expected_headers(
        reply_to=field == "reply_to_name",
        in_reply_to=field == "in_reply_to",
        references=field == "references",
        custom=["X-Custom"] if field == "custom" else [],
    )
    msg = check_headers(create_bytes(**args), expected)
    if msg is None:
        return
    header = {"to_name": "To", "reply_to_name": "Reply-To", "sender_name": "From"}.get(field)
    if header is not None:
        check_addresses(msg[header], [named])
    else:
        name = {"subject": "Subject", "custom": "X-Custom"}.get(field, field)
        assert_header_text(msg[name.replace("_", "-")], value)


# -- surrogates (xfail: UnicodeEncodeError from inside) -----------------------------------------

#: Text with at least one lone surrogate (UTF-8 cannot encode it).
with_surrogates = st.builds(
    lambda a, surrogate, b: a + surrogate + b,
    st.text(any_char, max_size=4),
    st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]),
    st.text(any_char, max_size=4),
)
HEADER_FIELDS = ["subject", "recipient_local", "display_name", "in_reply_to", "custom"]


@FAST
@given(st.sampled_from(HEADER_FIELDS), with_surrogates)
@example("subject", "\ud800")
def test_surrogates_in_headers(field: str, value: str) -> None:
    """A lone surrogate anywhere in header text or an address is refused (FluxMailException)."""
    args: dict[str, Any] = {
        "subject": {"subject": "s" + value},
        "recipient_local": {"recipients": [f"a{value}@example.com"]},
        "display_name": {"recipients": [f"{value} <t@example.com>"]},
        "in_reply_to": {"in_reply_to": value},
        "custom": {"headers": {"X-A": value}},
    }[field]
    assert create_bytes(**args) is None


@FAST
@given(st.sampled_from(["body", "html", "plain_body"]), with_surrogates)
@example("body", "\ud800")
def test_surrogates_in_bodies(field: str, value: str) -> None:
    """A lone surrogate in a body is refused (FluxMailException), or written as something."""
    args: dict[str, Any] = {
        "body": {"body": value},
        "html": {"body": value, "html_body": True},
        "plain_body": {"body": "<p>", "html_body": True, "plain_body": value},
    }[field]
    raw = create_bytes(**args)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        assert raw is None, "a lone surrogate in a body must be refused"
    elif raw is not None:
        assert_wire_lines(raw)


# == 3. message encoding =========================================================================

#: Line-ending and dot sequences that have ended DATA early somewhere, and very long lines.
body_fragments = st.sampled_from(
    [
        "\r",
        "\n",
        "\r\n",
        ".",
        ".\r\n",
        "\n.\n",
        "\r\n.\r\n",
        "\r.\r",
        "\n.\r\n",
        "..",
        " \n",
        "\t",
        "From ",
        "=",
        "=\n",
        "--",
        "é",
        "\u2028",
        "\x0c",
        "\x00",
        "x" * 1200,
        "." + "y" * 1100,
    ]
)
#: Body text: any character (lone surrogates are test_surrogates_in_bodies).
body_text = st.text(st.characters(codec="utf-8"), max_size=20)
bodies = st.lists(st.one_of(body_fragments, body_text), max_size=12).map("".join)


def check_body_round_trip(raw: bytes, body: str, html: bool, plain: str | None) -> None:
    """DATA is well formed and un-stuffing it gives the message, whose parts read back."""
    assert_wire_lines(raw)
    wire = encode_data(raw)
    assert wire.endswith(b"\r\n.\r\n")
    assert wire.count(b"\r\n.\r\n") == 1
    for line in wire.split(b"\r\n")[:-1]:
        assert len(line) + 2 <= 1000, f"DATA line of {len(line) + 2} octets"
    data = unstuff(wire)
    assert data == raw  # FluxMail's own bytes need no line-ending repair
    msg = parse_bytes(data.replace(b"\r\n", b"\n"))

    def content(kind: str) -> str:
        part = msg.get_body((kind,))
        assert part is not None, kind
        text = part.get_content()
        assert isinstance(text, str)
        return text.replace("\r\n", "\n")  # base64 parts keep the CRLF they were encoded with

    if not html:
        assert content("plain") == nl(body)
    else:
        assert content("html") == nl(body)
        if plain is not None:
            assert content("plain") == nl(plain)


@SLOW
@given(bodies, st.booleans(), st.none() | bodies)
@example("a\r\n.\r\nMAIL FROM:<evil@example.com>\r\n", False, None)
@example(".\n", False, None)
@example("x\n.\nRSET\n", True, "\r.\r")
@example("é" * 1000, False, None)
@example("." + "a" * 997, False, None)
@example("", True, "")
def test_body_encoding(body: str, html: bool, plain: str | None) -> None:
    """Bodies: one terminator, CRLF only, short lines, and the text comes back (line ends as
    LF, plus a final LF)."""
    raw = create_bytes(body=body, html_body=html, plain_body=plain)
    assert raw is not None  # every str body is acceptable
    check_body_round_trip(raw, body, html, plain)


@FAST
@given(st.lists(bodies, min_size=2, max_size=3).map("\x00".join), st.booleans())
@example("\x00", False)
def test_body_nul_never_raw(body: str, html: bool) -> None:
    raw = create_bytes(body=body, html_body=html)
    assert raw is not None
    check_body_round_trip(raw, body, html, None)


@FAST
@given(
    st.lists(
        st.one_of(st.binary(max_size=30), st.sampled_from([b"\r", b"\n", b".", b"\r\n.\r\n"])),
        max_size=20,
    ).map(b"".join)
)
@example(b"")
@example(b".")
@example(b"\n.\n")
@example(b"a\r.\rb")
@example(b"\r\n.\r\n")
@example(b".\r\n.\r\n.")
def test_encode_data_raw_bytes(data: bytes) -> None:
    """Any bytes: one terminator, CRLF only, and un-stuffing gives the input with its line ends
    made CRLF (and a final CRLF)."""
    wire = encode_data(data)
    assert wire.count(b"\r\n.\r\n") == 1
    assert unstuff(wire) == normalized(data)


# == 4. SMTP commands ============================================================================

VERBS = ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "AUTH", "VRFY"]


def check_command(verb: str, args: list[str]) -> None:
    try:
        line = command(verb, *args)
    except CommandInjectionError as exc:
        expect_code(exc, {"invalid_params"})
        assert any(map(injection_chars, args))
        return
    assert line.endswith(b"\r\n")
    assert line.count(b"\r") == 1
    assert line.count(b"\n") == 1
    assert not any(b < 0x20 and b != 0x09 for b in line[:-2])
    assert b"\x7f" not in line
    text = line[:-2].decode("utf-8")
    assert not any(ch in text for ch in "\x85\u2028\u2029")
    assert text == " ".join([verb, *args])


@FAST
@given(st.sampled_from(VERBS), st.lists(texts(max_size=30), max_size=3))
@example("RCPT", ["TO:<a@example.com>\r\nRCPT TO:<b@example.com>"])
@example("MAIL", ["FROM:<a@example.com>\nDATA"])
@example("EHLO", ["host\u2028QUIT"])
def test_command_is_one_line(verb: str, args: list[str]) -> None:
    check_command(verb, args)


@FAST
@given(st.sampled_from(VERBS), with_surrogates)
@example("EHLO", "\ud800")
def test_surrogates_in_command(verb: str, arg: str) -> None:
    """A lone surrogate (which UTF-8 cannot encode) is refused like a control character."""
    check_command(verb, [arg])


extension_sets = st.sets(
    st.sampled_from(["SMTPUTF8", "SIZE 1000", "8BITMIME", "PIPELINING", "DSN"])
)
envelope_addresses = st.one_of(good_addresses, address_inputs, texts(addr_char, max_size=20))
dsn_options = st.tuples(
    st.lists(
        st.sampled_from(["SUCCESS", "failure", "Delay", "NEVER"]) | texts(max_size=8), max_size=3
    ).map(tuple),
    st.none() | st.sampled_from(["FULL", "hdrs"]) | texts(max_size=8),
    st.none() | texts(max_size=12) | st.text(st.characters(min_codepoint=33, max_codepoint=126)),
)
#: One command line: verb, path (a tab is test_envelope_address_whitespace), then ESMTP
#: parameters, each keyword[=value] with no space, no "=" and nothing unprintable in the value.
ONE_LINE = re.compile(
    rb"(?:MAIL FROM|RCPT TO):<[^<>\x00-\x08\x0a-\x20\x7f]*>"
    rb"(?: [A-Za-z0-9][A-Za-z0-9-]*(?:=[!-<>-~]+)?)*\r\n"
)


@FAST
@given(
    envelope_addresses,
    st.lists(envelope_addresses, min_size=1, max_size=3),
    extension_sets,
    st.integers(0, 10**9),
    st.booleans(),
    dsn_options,
)
@example(
    "a@example.com",
    ["b@example.com>\r\nRCPT TO:<c@example.com"],
    set(),
    10,
    False,
    ((), None, None),
)
@example("", ["jörg@example.com"], {"SMTPUTF8"}, 10, True, ((), None, None))
@example("a@example.com", ["b@example.com SIZE=1"], {"SIZE 1000"}, 10, False, ((), None, None))
@example(
    "a@example.com",
    ["b+x=y@example.com"],
    {"DSN"},
    10,
    False,
    (("SUCCESS", "FAILURE"), "HDRS", "id+= x"),
)
def test_mail_from_and_rcpt_to_one_line_each(
    sender: str,
    recipients: list[str],
    keywords: set[str],
    size: int,
    eight_bit: bool,
    dsn: tuple[tuple[str, ...], str | None, str | None],
) -> None:
    extensions = Extensions.from_ehlo(["mx", *keywords])
    try:
        envelope = Envelope(sender, tuple(recipients), *dsn)
    except FluxMailException as exc:
        expect_code(exc, {"invalid_params"})
        return
    lines: list[bytes] = []
    try:
        lines.append(mail_from(envelope, extensions, size, eight_bit=eight_bit))
    except FluxMailException as exc:
        expect_code(exc, PARAM_CODES)
    for address in recipients:
        try:
            lines.append(rcpt_to(address, extensions, envelope.notify))
        except FluxMailException as exc:
            expect_code(exc, PARAM_CODES)
    for line in lines:
        assert ONE_LINE.fullmatch(line), line


#: SIZE values, with digits that are not decimal ("²", "①": str.isdigit() but not int()).
size_values = st.text(st.sampled_from("0123456789²³¹⁴①⑽٣ -+x"), max_size=6)
ehlo_text = texts(max_size=20)
ehlo_lines = st.lists(
    st.one_of(
        ehlo_text,
        size_values.map(lambda v: f"SIZE {v}"),
        st.builds(
            lambda k, v: f"{k} {v}",
            st.sampled_from(["SIZE", "AUTH", "size", "AUTH=PLAIN", "DSN"]),
            ehlo_text,
        ),
    ),
    max_size=6,
)


@FAST
@given(ehlo_lines)
@example(["SIZE", "SIZE 0", "SIZE -1", "SIZE 99999999999999999999", "AUTH=LOGIN", "AUTH"])
@example(["SIZE ²"])
@example(["SIZE ٣"])
@example(["\u2126"])
def test_ehlo_extensions_never_raise(lines: list[str]) -> None:
    """Whatever the server advertises, reading its extensions raises nothing."""
    ext = Extensions.from_ehlo(["mx", *lines])
    size = ext.max_size
    assert size is None or size > 0
    assert all(ext.auth_mechanisms)
    for keyword in ext.keywords:
        assert ext.has(keyword)
        if keyword.isascii():  # EHLO keywords are ASCII, case-insensitive (RFC 5321 4.1.1.1)
            assert ext.has(keyword.lower())


# == 5. reply parsing ============================================================================

#: RFC 5321 reply text: at most 512 octets per line with the code and CRLF.
reply_text = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=60),
    st.text(st.sampled_from("abc -.5"), min_size=400, max_size=500),
)
replies = st.builds(
    Reply,
    st.builds(
        lambda a, b, c: 100 * a + 10 * b + c,
        st.integers(2, 5),
        st.integers(0, 5),
        st.integers(0, 9),
    ),
    st.lists(reply_text, min_size=1, max_size=4).map(tuple),
)


def encode_reply(reply: Reply, eol: bytes) -> bytes:
    out = []
    for i, line in enumerate(reply.lines):
        last = i == len(reply.lines) - 1
        text = f"{reply.code}{' ' if last else '-'}{line}" if line or not last else str(reply.code)
        out.append(text.encode("utf-8") + eol)
    return b"".join(out)


def feed_chunks(chunks: Iterable[bytes], *, drain_each: bool = True) -> list[Reply]:
    """Feed the chunks in order, reading replies after each one (as the sync transport does)
    or only at the end (as a reader that lags behind its feeds)."""
    parser = ReplyParser()
    got: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        while drain_each and (reply := parser.next_reply()) is not None:
            got.append(reply)
    while (reply := parser.next_reply()) is not None:
        got.append(reply)
    return got


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FAST
@given(
    st.lists(replies, min_size=1, max_size=4),
    st.sampled_from([b"\r\n", b"\n"]),
    st.lists(st.integers(0, 10**6), max_size=12),
    st.booleans(),
)
@example([Reply(250, ("",))], b"\r\n", [1, 2, 3], True)
@example([Reply(220, ("a", "b"))], b"\r\n", [4], False)
@example([Reply(250, ("", "x", ""))], b"\n", [5, 6], True)
def test_reply_chunking_is_transparent(
    reply_list: list[Reply], eol: bytes, cuts: list[int], drain_each: bool
) -> None:
    data = b"".join(encode_reply(r, eol) for r in reply_list)
    whole = feed_chunks([data])
    assert whole == reply_list
    assert feed_chunks(split_at(data, cuts), drain_each=drain_each) == whole
    assert feed_chunks(data[i : i + 1] for i in range(len(data))) == whole


@FAST
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"250-", b"250 ", b"\r\n", b"\n", b"2", b"\xff\xfe", b"550 x\n"]),
        ),
        max_size=20,
    ),
    st.booleans(),
)
@example([b"250 ok\r\n", b"\r\n"], True)
@example([b"250-a\r\n251 b\r\n"], True)
@example([b"2" * (MAX_LINE + 1)], False)
def test_reply_garbage(chunks: list[bytes], drain_each: bool) -> None:
    """Garbage gives replies or ProtocolError, nothing else."""
    try:
        got = feed_chunks(chunks, drain_each=drain_each)
    except ProtocolError as exc:
        expect_code(exc, {"protocol_error"})
        return
    for reply in got:
        assert 100 <= reply.code <= 999


@FAST
@given(st.integers(1, 64), st.integers(1, 4096))
def test_reply_endless_line_refused(length_kb: int, chunk_size: int) -> None:
    """A line that never ends is refused once it passes MAX_LINE, whatever the read size."""
    data = b"250 " + b"x" * (MAX_LINE + 1024 * length_kb)
    with pytest.raises(ProtocolError):
        feed_chunks(data[i : i + chunk_size] for i in range(0, len(data), chunk_size))


@FAST
@given(st.integers(MAX_LINE + 1, 4 * MAX_LINE), st.lists(st.integers(0, 10**6), max_size=3))
@example(100_000, [])
def test_reply_long_lines_refused(length: int, cuts: list[int]) -> None:
    """A line over MAX_LINE is refused whether it arrives in one read or in many."""
    data = b"250 " + b"x" * length + b"\r\n"
    with pytest.raises(ProtocolError):
        feed_chunks(split_at(data, cuts))


@fuzz(3)
@given(st.sampled_from([b"250-x\r\n", b"250 ok\r\n", b"2\n"]))
@example(b"250-x\r\n")
def test_reply_unread_buffer_is_bounded(line: bytes) -> None:
    """Far more unread data than the largest acceptable reply is refused."""
    chunk = line * (65536 // len(line))
    limit = 16 * MAX_LINE * MAX_LINES  # 64 MiB: 16 times the largest reply
    with pytest.raises(ProtocolError):
        feed_without_reading([chunk] * (limit // len(chunk) + 1))


def feed_without_reading(chunks: Iterable[bytes]) -> None:
    parser = ReplyParser()
    for chunk in chunks:
        parser.feed(chunk)


# == 6. end to end ===============================================================================

ALLOWED_VERBS = {"EHLO", "MAIL", "RCPT", "DATA", "QUIT", "RSET", "NOOP"}


def test_end_to_end_on_a_real_server() -> None:
    """Fuzzed messages through a real SMTP server: one message per accepted send, exactly the
    envelope asked for, and nothing but the expected commands."""
    with SMTPTestServer() as server:
        mailer = FluxMail("smtp", server.host, port=server.port, sender=SENDER, timeout=10)

        @fuzz(25)
        @given(subject=header_text, body=bodies, people=people, html=st.booleans())
        @example(
            subject="Hi\r\nBcc: x@example.com",
            body="b",
            people={
                "recipients": ["t@example.com"],
                "cc": [],
                "bcc": [],
                "reply_to": None,
                "sender": None,
            },
            html=False,
        )
        @example(
            subject="smuggle",
            body="a\n.\r\nMAIL FROM:<e@example.com>\r\nRCPT TO:<v@e.com>\r\nDATA\r\nevil\r\n.\r\n",
            people={
                "recipients": ["t@example.com"],
                "cc": ['"Jö" <jörg@x.example>'],
                "bcc": ["b@example.com"],
                "reply_to": None,
                "sender": None,
            },
            html=False,
        )
        def send_one(subject: str, body: str, people: dict[str, Any], html: bool) -> None:
            server.clear()
            try:
                mailer.create(subject, body=body, html_body=html, **people)
            except FluxMailException as exc:
                expect_code(exc, CREATE_CODES)
                assert server.commands == []
                return
            mailer.send()
            sender = parse_address(people["sender"] or SENDER).addr_spec
            everyone = [*people["recipients"], *people["cc"], *people["bcc"]]
            rcpts = [parse_address(a).addr_spec for a in everyone]
            [received] = server.messages
            assert received.mail_from == sender
            assert received.rcpt_tos == rcpts
            verbs = [re.split(r"[ :]", c, maxsplit=1)[0].upper() for c in server.commands]
            assert set(verbs) <= ALLOWED_VERBS, server.commands
            assert verbs == ["EHLO", "MAIL", *["RCPT"] * len(rcpts), "DATA", "QUIT"]
            rcpt_lines = [c for c in server.commands if c.startswith("RCPT")]
            assert rcpt_lines == [f"RCPT TO:<{a}>" for a in rcpts]
            msg = parse_values(received.data.replace(b"\r\n", b"\n"))
            assert "Bcc" not in msg
            assert_header_text(msg["Subject"], subject)
            part = msg.get_body(("html",) if html else ("plain",))
            assert part is not None
            assert part.get_content().replace("\r\n", "\n") == nl(body)

        send_one()


# -- every path builds the same, well-formed message -------------------------------------------
#
# create(), BulkSender.send_batch (captured with fluxmail.testing.capture) and
# MessageTemplate.render all write through fluxmail.mime. Whatever they build must read back,
# with the email package AND with flux_testkit.mime_reader (a strict reader written from the
# RFCs, sharing no code with email; see its docstring for why not a PyPI parser), to the
# subject, addresses, bodies and attachments given, with exactly the header fields meant.
# (The Django backend is left out here: its messages are built by Django's own EmailMessage.)

#: Text without injection characters or encoded-word markers, with a visible character (a
#: subject must not be blank) and no leading blank (a header value's leading blanks are
#: folding, not content).
subject_text = texts(clean_char).filter(lambda s: s.strip() != "" and s[:1] not in " \t")
#: Display names that read back exactly from a quoted string or encoded words: no blank at
#: either end and no doubled blanks (the phrase is its words), at most 30 characters.
exact_names = (
    st.text(clean_name_char.filter(lambda ch: ch not in "\t"), max_size=30)
    .map(lambda s: " ".join(s.split()))
    .filter(no_ew)
)
#: An attachment or inline image: a file name and its bytes. Names are any printable text a
#: file can have; control characters are left out because the email package drops them from
#: the names it reads (FluxMail writes them, percent-encoded, and the strict reader reads
#: them back exactly).
file_names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="/"),
    min_size=1,
    max_size=80,
).filter(lambda n: n not in (".", "..") and len(n.encode("utf-8")) <= 200)
files = st.lists(
    st.tuples(file_names, st.binary(max_size=300)), max_size=2, unique_by=lambda f: f[0]
)
mailboxes = st.tuples(exact_names, ascii_addresses)
message_inputs = st.fixed_dictionaries(
    {
        "subject": subject_text,
        "to": st.lists(mailboxes, min_size=1, max_size=3),
        "text": bodies,
        "html": st.none() | bodies,
        "attachments": files,
        "images": files,
    }
)


def mailbox_text(name: str, address: str) -> str:
    return quoted(name, address) if name else address


def write_files(directory: Any, entries: list[tuple[str, bytes]], prefix: str) -> list[str]:
    paths = []
    for index, (name, content) in enumerate(entries):
        folder = directory / f"{prefix}{index}"
        folder.mkdir()
        path = folder / name
        path.write_bytes(content)
        paths.append(str(path))
    return paths


def built_by(path: str, spec: dict[str, Any], tmp: Any) -> bytes:
    """The message ``spec`` describes, as the path ``path`` writes it."""
    import tempfile
    from pathlib import Path

    from fluxmail import BulkSender, MessageTemplate
    from fluxmail.testing import capture

    folder = Path(tempfile.mkdtemp(dir=tmp))
    attachments = write_files(folder, spec["attachments"], "a")
    images = write_files(folder, spec["images"], "i") if spec["html"] is not None else []
    to = [mailbox_text(n, a) for n, a in spec["to"]]
    html = spec["html"]
    args: dict[str, Any] = {"subject": spec["subject"], "recipients": to}
    if html is None:
        args["body"] = spec["text"]
    else:
        args.update(body=html, html_body=True, plain_body=spec["text"])
        if images:
            args["inline_images"] = {f"img{i}": p for i, p in enumerate(images)}
    if attachments:
        args["attachments"] = attachments
    if path == "create":
        mailer = FluxMail("smtp", "h", sender=SENDER)
        mailer.create(**args)
        assert mailer._draft is not None
        return mailer._draft.as_bytes()
    if path == "bulksender":
        with capture() as outbox:
            report = BulkSender(FluxMail("smtp", "h", sender=SENDER)).send_batch(
                [args], progress=False
            )
        assert report["sent"] == 1, report["errors"]
        return outbox[0].raw
    if path == "django":
        return django_bytes(spec)
    # MessageTemplate: the fields come in as context values, so Jinja sees no syntax in them;
    # HTML context values are autoescaped, so the template's HTML is the field itself.
    template = MessageTemplate(
        sender=SENDER,
        subject="{{ subject }}",
        text="{{ text }}",
        html=None if html is None else "{{ html|safe }}",
        attachments=attachments,
    )
    _envelope, data = template.render(to, subject=spec["subject"], text=spec["text"], html=html)
    return data


def django_bytes(spec: dict[str, Any]) -> bytes:
    """What the Django backend sends for ``spec``: an ``EmailMultiAlternatives`` (the HTML
    as its alternative, the files and, with HTML, the images as attachments), written by
    :func:`fluxmail.backends.django_message.wire_bytes`."""
    import django
    from django.conf import settings as django_settings

    if not django_settings.configured:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flux_testkit.django_settings")
    django.setup()
    from django.core.mail import EmailMultiAlternatives

    from fluxmail.backends.django_message import wire_bytes

    message = EmailMultiAlternatives(
        subject=spec["subject"],
        body=spec["text"],
        from_email=SENDER,
        to=[mailbox_text(n, a) for n, a in spec["to"]],
    )
    if spec["html"] is not None:
        message.attach_alternative(spec["html"], "text/html")
    files = spec["attachments"] + (spec["images"] if spec["html"] is not None else [])
    for name, content in files:
        message.attach(name, content, "application/octet-stream")
    return wire_bytes(message)


def idna(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{ascii_domain(domain)}"


def check_both_readers(raw: bytes, spec: dict[str, Any], path: str) -> None:
    from flux_testkit.mime_reader import read_message

    assert_wire_lines(raw)
    strict = read_message(raw)
    lenient = parse_values(raw)
    # Exactly the fields meant, each once: nothing injected, no Bcc.
    names = Counter(name.lower() for name, _ in strict.headers)
    assert names == Counter(name.lower() for name in lenient)
    assert names["subject"] == names["to"] == names["from"] == names["message-id"] == 1
    assert "bcc" not in names
    assert not (set(names) - {"from", "to", "subject", "date", "message-id", "mime-version",
                              "content-type", "content-transfer-encoding"}), names  # fmt: skip
    # Subject and addresses.
    assert strict.text("Subject") == spec["subject"]
    assert_header_text(lenient["Subject"], spec["subject"])
    to = [(n, idna(a)) for n, a in spec["to"]]  # headers carry the DNS form of a domain
    assert strict.addresses("To") == to
    lenient_to = lenient["To"].addresses
    assert [m.addr_spec for m in lenient_to] == [a for _n, a in to]
    for mailbox, (name, _address) in zip(lenient_to, to, strict=True):
        # the email package's own blanks next to encoded words (see same_header_text)
        assert same_header_text(mailbox.display_name, name, phrase=True), (mailbox, name)
    assert strict.addresses("From") == [("", SENDER)]
    # Bodies.
    leaves = strict.leaves()
    texts_by_type = {p.content_type: p for p in leaves if p.disposition is None}
    others = spec["html"] is not None or spec["attachments"]
    if path == "django" and not spec["text"] and others:
        # Django leaves an empty body out when there is anything else (its message() does).
        assert "text/plain" not in texts_by_type
    else:
        assert texts_by_type["text/plain"].decoded_text() == nl(spec["text"]) + (
            "" if nl(spec["text"]).endswith("\n") else "\n"
        )
        plain = lenient.get_body(("plain",))
        assert plain is not None
        plain_text = plain.get_content().replace("\r\n", "\n")
        assert plain_text == texts_by_type["text/plain"].decoded_text()
    if spec["html"] is not None:
        html_text = texts_by_type["text/html"].decoded_text()
        assert html_text.rstrip("\n") == nl(spec["html"]).rstrip("\n")
        html = lenient.get_body(("html",))
        assert html is not None
        assert html.get_content().replace("\r\n", "\n") == html_text
    # Attachments and inline images: names and bytes, in both readers.
    expected = list(spec["attachments"])
    if spec["html"] is not None and path != "template":
        expected += spec["images"]
    strict_files = sorted((p.filename or "", p.content) for p in leaves if p.disposition)
    lenient_files = sorted(
        ((p.get_filename() or "").strip(), p.get_payload(decode=True))
        for p in lenient.walk()
        if p.get_content_disposition() in ("attachment", "inline")
    )
    assert strict_files == sorted(expected)
    # (the email package strips the blanks around a file name it reads)
    assert lenient_files == sorted((name.strip(), data) for name, data in strict_files)


@SLOW
@given(path=st.sampled_from(["create", "bulksender", "template", "django"]), spec=message_inputs)
@example(
    path="create",
    spec={"subject": "Grüße", "to": [("Zoë, the \"boss\"", "z@example.com")], "text": "hi",
     "html": "<p>hi</p>", "attachments": [("ünïcode name.pdf", b"%PDF")],
     "images": [("logo.png", b"\x89PNG")]},
)  # fmt: skip
@example(
    path="django",
    spec={"subject": "Grüße =?utf-8?q?x?=", "to": [("Zoë, the \"boss\"", "z@example.com")],
     "text": "hi", "html": "<p>hi</p>", "attachments": [("ünïcode name.pdf", b"%PDF")],
     "images": [("logo.png", b"\x89PNG")]},
)  # fmt: skip
def test_every_path_reads_back_with_two_parsers(
    path: str, spec: dict[str, Any], tmp_path_factory: Any
) -> None:
    tmp = tmp_path_factory.mktemp("files", numbered=True)
    raw = built_by(path, spec, tmp)
    check_both_readers(raw, spec, path)
