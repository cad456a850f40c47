"""MessageTemplate: the compiled fast path produces the same, valid MIME as create()."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxmail import FluxMail, FluxMailException, MessageTemplate
from fluxmail.protocol.data import encode_data


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    for part in message.walk():
        assert not part.defects, part.defects
    return message


def lines_ok(data: bytes) -> None:
    assert data.endswith(b"\r\n")
    for line in data[:-2].split(b"\r\n"):
        assert b"\r" not in line
        assert b"\n" not in line
        assert len(line) <= 998


BODIES = [
    "Short ASCII body\nwith two lines",
    "Grüße, Jürgen! ✓ non-ASCII but mostly Latin\n" * 3,
    "日本語のメールです。" * 20,
    "x" * 3000,  # one over-long line
    ".leading dot\n.\nand a lone dot line",
    "trailing spaces   \nand\ttabs\t\n",
]


@pytest.mark.parametrize("body", BODIES)
def test_text_matches_create(body: str) -> None:
    tpl = MessageTemplate(sender="News <news@example.com>", subject="Hi {{ name }}", text=body)
    envelope, data = tpl.render("ada@example.com", name="Ada")
    lines_ok(data)
    fast = parse(data)
    slow_mailer = FluxMail("smtp", "h", sender="News <news@example.com>")
    assert slow_mailer.create("Hi Ada", ["ada@example.com"], body)._draft is not None
    slow = parse(slow_mailer._draft.as_bytes())
    assert fast.get_content() == slow.get_content()
    for name in ("From", "To", "Subject"):
        assert fast[name] == slow[name]
    assert envelope.sender == "news@example.com"
    assert envelope.recipients == ("ada@example.com",)


def test_alternative_with_attachment(tmp_path: Path) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(bytes(range(256)) * 20)
    tpl = MessageTemplate(
        sender="billing@example.com",
        subject="Invoice {{ number }}",
        text="Dear {{ name }}, invoice {{ number }} attached.",
        html="<p>Dear {{ name }}</p>",
        attachments=[pdf],
        reply_to="Support <support@example.com>",
        headers={"X-Campaign": "spring"},
        unsubscribe_url="https://example.com/u/{{ token }}",
    )
    envelope, data = tpl.render("Ada L <ada@example.com>", name="<Ada & co>", number=7, token="t1")
    lines_ok(data)
    msg = parse(data)
    assert msg.get_content_type() == "multipart/mixed"
    body, attachment = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    text, html = body.iter_parts()
    assert text.get_content().strip() == "Dear <Ada & co>, invoice 7 attached."
    assert html.get_content().strip() == "<p>Dear &lt;Ada &amp; co&gt;</p>"  # escaped in HTML
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content() == pdf.read_bytes()
    assert msg["Reply-To"] == "Support <support@example.com>"
    assert msg["X-Campaign"] == "spring"
    assert msg["List-Unsubscribe"] == "<https://example.com/u/t1>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["To"] == "Ada L <ada@example.com>"
    assert envelope.recipients == ("ada@example.com",)


def test_each_message_gets_its_own_id() -> None:
    tpl = MessageTemplate(sender="a@example.com", subject="Hi", text="x")
    ids = {parse(tpl.render(f"u{i}@example.com")[1])["Message-ID"] for i in range(50)}
    assert len(ids) == 50


def test_jinja_beyond_substitution() -> None:
    tpl = MessageTemplate(
        sender="a@example.com",
        subject="{{ items | length }} items",
        text="{% for i in items %}- {{ i }}\n{% endfor %}",
    )
    _, data = tpl.render("b@example.com", items=["x", "y"])
    msg = parse(data)
    assert msg["Subject"] == "2 items"
    assert msg.get_content().replace("\r\n", "\n") == "- x\n- y\n"


def test_templates_are_sandboxed() -> None:
    tpl = MessageTemplate(
        sender="a@example.com", subject="x", text="{{ x.__class__.__mro__[1].__subclasses__() }}"
    )
    with pytest.raises(FluxMailException) as info:
        tpl.render("b@example.com", x=1)
    assert info.value.code == "template_error"


@pytest.mark.parametrize(
    ("kwargs", "context", "code"),
    [
        ({"subject": "Hi {{ name }}"}, {"name": "x\r\nBcc: evil@example.com"}, "invalid_params"),
        ({"subject": "{{ name }}"}, {"name": " "}, "invalid_params"),
        ({"subject": "Hi {{ missing }}"}, {}, "template_error"),
        ({"subject": "Hi {% if %}"}, {}, "template_error"),
        ({"subject": "Hi", "sender": "not an address"}, {}, "invalid_email"),
        ({"subject": "Hi", "unsubscribe_url": "http://{{ h }}"}, {"h": "x"}, "invalid_params"),
        ({"subject": "Hi", "headers": {"X-A": "b\nc"}}, {}, "invalid_params"),
        ({"subject": "Hi", "attachments": ["/no/such.pdf"]}, {}, "attachment_not_found"),
    ],
)
def test_bad_input(kwargs: dict[str, object], context: dict[str, object], code: str) -> None:
    arguments: dict[str, object] = {"sender": "a@example.com", "text": "x", **kwargs}
    with pytest.raises(FluxMailException) as info:
        MessageTemplate(**arguments).render("b@example.com", **context)  # type: ignore[arg-type]
    assert info.value.code == code


@pytest.mark.parametrize("to", ["bad", "a@b.c\r\nRCPT TO:<x@y.z>", ""])
def test_bad_recipient(to: str) -> None:
    tpl = MessageTemplate(sender="a@example.com", subject="Hi", text="x")
    with pytest.raises(FluxMailException) as info:
        tpl.render(to)
    assert info.value.code in ("invalid_email", "no_email")


def test_rendered_text_cannot_pose_as_a_boundary(tmp_path: Path) -> None:
    note = tmp_path / "n.txt"
    note.write_text("note")
    tpl = MessageTemplate(sender="a@example.com", subject="Hi", text="{{ t }}", html="<p>x</p>",
                          attachments=[note])  # fmt: skip
    forged = f"--{tpl._alternative.decode()}\r\n--{tpl._mixed.decode()}--\r\nContent-Type: x/y"
    msg = parse(tpl.render("b@example.com", t=forged)[1])
    text, _html = next(msg.iter_parts()).iter_parts()
    assert forged.replace("\r\n", "\n") in text.get_content().replace("\r\n", "\n")
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "text/plain"
    ]  # fmt: skip


def test_dkim_hook_and_smuggling() -> None:
    tpl = MessageTemplate(sender="a@example.com", subject="Hi", text="{{ t }}",
                          sign=lambda data: b"X-Signed: yes\r\n" + data)  # fmt: skip
    _, data = tpl.render("b@example.com", t="x\r\n.\r\nMAIL FROM:<e@example.com>")
    assert data.startswith(b"X-Signed: yes\r\n")
    assert encode_data(data).count(b"\r\n.\r\n") == 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=2100), min_size=1, max_size=6)
    | st.lists(st.sampled_from([0, 1, 498, 499, 500, 996, 997, 998, 999]), min_size=1),
    st.booleans(),
)
def test_the_long_line_check_is_exact(lengths: list[int], final_break: bool) -> None:
    from fluxmail.mime import LONGEST_LINE, has_long_line

    body = b"\r\n".join(b"x" * n for n in lengths) + (b"\r\n" if final_break else b"")
    assert has_long_line(body) == (max(lengths) > LONGEST_LINE)


_PIECE = st.text(st.sampled_from("ab .<&\r\n\t\x00é{}x"), max_size=12) | st.sampled_from(
    ["", "\n", "\r\n", "\r", "x" * 990, "line\n" * 3]
)
_VALUE = (
    st.text(st.sampled_from("ab <>&\"'\r\n\x00ü."), max_size=8)
    | st.sampled_from(["", "Ada", "x" * 1000, "a\nb", "a\r\nb", "ü"])
    | st.integers()
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_PIECE, min_size=1, max_size=5),
    st.lists(_VALUE, min_size=4, max_size=4),
    st.booleans(),
)
def test_compiled_text_parts_write_what_the_writer_writes(
    texts: list[str], values: list[object], html: bool
) -> None:
    """Where a substitution-only part is written from its compiled pieces, the bytes are
    exactly what ``mime.text_part`` writes for the rendered text; where they cannot be, the
    general way writes them (same template, any values: non-ASCII, line breaks, NUL, long).
    A part said to be ready for DATA as it is is so: 7-bit, and nothing to stuff."""
    from fluxmail import mime
    from fluxmail.compose import _PlainPart, _Substitution, _write_part

    texts = [t.replace("{", "(").replace("}", ")") for t in texts]
    names = [f"v{i}" for i in range(len(texts) - 1)]
    render = _Substitution(texts, names, html=html)
    context = dict(zip(names, values, strict=False))
    subtype = b"html" if html else b"plain"
    expected = mime.text_part(render(context), subtype)
    plain = _PlainPart.of(render, subtype)
    part, ready = _write_part(render, plain, subtype, context)
    assert part == expected
    written = plain(render.values(context)) if plain is not None else None
    assert written is None or written == expected
    if ready:
        assert expected.isascii()
        assert encode_data(expected) == expected + b".\r\n"


def test_the_workload_template_takes_the_compiled_path() -> None:
    """A typical campaign (ASCII text and HTML, short values) is written from the pieces."""
    tpl = MessageTemplate(
        sender="news@example.com", subject="Hi {{ name }}",
        text="Dear {{ name }},\n\nnumber {{ n }}\n", html="<p>Dear {{ name }}</p>",
    )  # fmt: skip
    assert tpl._text_part is not None
    assert tpl._html_part is not None
    _, data = tpl.render("ada@example.com", name="Ada & <Bob>", n=7)
    message = parse(data)
    plain, html = (part.get_content().replace("\r\n", "\n") for part in message.iter_parts())
    assert plain == "Dear Ada & <Bob>,\n\nnumber 7\n"
    assert html == "<p>Dear Ada &amp; &lt;Bob&gt;</p>\n"


def test_rendered_messages_are_marked_ready_for_data_only_when_they_are() -> None:
    """A row whose text needs no dot stuffing and is 7-bit is DataReady (sent unscanned);
    a value that begins a line with a dot (or leaves the line to the text after it), a
    non-ASCII value or a Jinja part leaves it plain CRLF bytes, stuffed when sent."""
    from fluxmail.protocol.data import CRLFBytes, DataReady

    tpl = MessageTemplate(
        sender="news@example.com", subject="Hi {{ name }}",
        text="Dear {{ name }},\n{{ lead }} starts this line\nnumber {{ n }}\n",
    )  # fmt: skip
    _, ready = tpl.render("ada@example.com", name="Ada", lead="Ada", n=1)
    assert type(ready) is DataReady
    assert encode_data(ready) == ready + b".\r\n"
    for lead, name in ((".hidden", "Ada"), ("", "Ada"), ("Ada", "Adä")):
        _, data = tpl.render("ada@example.com", name=name, lead=lead, n=1)
        assert type(data) is CRLFBytes, (lead, name)
        assert encode_data(data).count(b"\r\n.\r\n") == 1
    jinja = MessageTemplate(sender="news@example.com", subject="Hi", text="{% if 1 %}x{% endif %}")
    assert type(jinja.render("ada@example.com")[1]) is CRLFBytes


def test_a_static_line_beginning_with_a_dot_is_never_ready() -> None:
    from fluxmail.protocol.data import CRLFBytes

    tpl = MessageTemplate(sender="news@example.com", subject="Hi", text="Hi {{ name }}\n.sig\n")
    _, data = tpl.render("ada@example.com", name="Ada")
    assert type(data) is CRLFBytes
    assert b"\r\n..sig\r\n" in encode_data(data)
