"""The text part of a message, derived from its rendered HTML when the template has no text.

Written on the standard library's ``html.parser`` rather than a converter from PyPI because
what mail needs is narrow and specific: links as ``text (url)`` (html2text writes Markdown
``[text](url)``; inscriptis lays out the layout tables every email is built of as padded
columns, and brings lxml), nothing from ``<head>``, ``<script>``, ``<style>`` or Outlook's
conditional comments, block elements as line breaks, entities decoded. The parser is
forgiving of broken HTML, as the HTML in mail often is.

Contract of :func:`html_to_text`:

* block elements (``p``, ``div``, headings, ``table``, ``tr``, lists, ``blockquote``, ...)
  start and end a line; ``p``, headings, ``ul``/``ol``, ``table`` and ``blockquote`` are set
  apart by a blank line; ``br`` is a line break; ``hr`` a line of dashes;
* a table cell is separated from the next by a space; list items start with ``- ``
  (``1. `` in ordered lists);
* nothing hidden from the reader: a ``div``, ``span``, ``table``, ``center``, ``section`` or
  ``font`` with ``style="display:none"`` (the preheader most mail has) or ``hidden`` is left
  out with all it holds;
* ``<a href="u">t</a>`` is ``t (u)``; when the text is the URL itself, or empty, just ``u``;
  ``javascript:`` links and in-page ``#anchors`` keep only their text; an image inside a
  link counts by its ``alt`` text (images elsewhere too, when they have one);
* runs of white space collapse to one space (inside ``pre`` they are kept); lines are
  stripped; never more than one blank line in a row; entities are decoded and a
  non-breaking space is a space.

:func:`text_template_from_html` applies the same rules to an HTML *template*, making the Liquid
text template a worker renders instead of parsing every rendered HTML.
"""

from __future__ import annotations

import functools
import re
from html.parser import HTMLParser

_SKIP = frozenset({"head", "title", "script", "style", "template", "noscript", "svg", "object"})
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "dl", "pre"}
)
_BLOCK = _PARAGRAPH | frozenset(
    {
        "div", "tr", "li", "section", "article", "header", "footer", "main", "nav", "aside",
        "center", "address", "dt", "dd", "form", "figure", "figcaption", "fieldset", "body",
        "html", "tbody", "thead", "tfoot", "caption",
    }
)  # fmt: skip
_CELL = frozenset({"td", "th"})
#: Elements without content or end tag.
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
#: Elements whose hiding is honoured: those whose end tag HTML requires (a hidden ``<p>``
#: left open would otherwise hide the rest of the message).
_HIDEABLE = frozenset({"div", "span", "table", "center", "section", "font"})
_DISPLAY_NONE = re.compile(r"display\s*:\s*none", re.IGNORECASE)


def _hidden(attributes: dict[str, str | None]) -> bool:
    # A preheader (the inbox's preview line) and other content hidden from the reader.
    style = attributes.get("style")
    return "hidden" in attributes or (style is not None and bool(_DISPLAY_NONE.search(style)))


_SPACES = re.compile(r"[ \t\r\n\f\v\xa0\u200b]+")
_BLANK_LINES = re.compile(r"\n{3,}")
#: Stand-ins inside ``pre``: a space the final stripping must keep, a newline that is not a
#: block break (a NUL never survives in parsed HTML text: it is removed from data first).
_PRE_SPACE = "\x00"
_PRE_BREAK = -1


# Stand-ins for Liquid markup while the HTML parser reads a template: characters of Unicode's
# private use area, which no parser step alters; a tag and an output statement differ.
_TAG_OPEN, _TAG_CLOSE, _OUT_OPEN, _OUT_CLOSE = "\ue000", "\ue001", "\ue002", "\ue003"
_STAND_IN = re.compile("[\ue000\ue002](\\d+)[\ue001\ue003]")
_LIQUID_MARKUP = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
# Line breaks in a text template: one newline, or a paragraph's blank line.
_LINE_MARK, _PARAGRAPH_MARK = "\ue004", "\ue005"
_BREAK_MARKS = {1: _LINE_MARK, 2: _PARAGRAPH_MARK}
_MARKS = (_TAG_OPEN, _TAG_CLOSE, _OUT_OPEN, _OUT_CLOSE, _LINE_MARK, _PARAGRAPH_MARK, _PRE_SPACE)
_BREAK_RUN = re.compile("[ \ue004\ue005]*[\ue004\ue005][ \ue004\ue005]*")
_DOUBLE_SPACE = re.compile(" {2,}")


class _TextBuilder(HTMLParser):
    def __init__(self, *, template: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        #: Making a text template: line breaks are left as marks for :func:`tidy_text`.
        self.template = template
        #: Text pieces, and line breaks wanted (as ints: adjacent ones merge, not add up).
        self.out: list[str | int] = []
        self.skipping: list[str] = []
        self.pre = 0
        #: Open links: (href or None, index in ``out`` where their text starts).
        self.links: list[tuple[str | None, int]] = []
        #: Open lists: the next number of an ``ol``, or None for a ``ul``.
        self.lists: list[int | None] = []

    def _breaks(self, count: int) -> None:
        self.out.append(count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.append(tag)
            return
        attributes = dict(attrs)
        if tag in _SKIP or (tag in _HIDEABLE and _hidden(attributes)):
            self.skipping.append(tag)
            return
        if tag in _BLOCK:
            self._breaks(2 if tag in _PARAGRAPH else 1)
        if tag == "pre":
            self.pre += 1
        elif tag == "ul":
            self.lists.append(None)
        elif tag == "ol":
            self.lists.append(1)
        elif tag == "li":
            number = self.lists[-1] if self.lists else None
            if number is None:
                self.out.append("- ")
            else:
                self.out.append(f"{number}. ")
                self.lists[-1] = number + 1
        elif tag in _CELL:
            self.out.append(" ")
        elif tag == "br":
            self._breaks(1)
        elif tag == "hr":
            self.out.extend((1, "-" * 40, 1))
        elif tag == "a":
            self.links.append((attributes.get("href"), len(self.out)))
        elif tag == "img":
            alt = (attributes.get("alt") or "").strip()
            if alt:
                self.out.append(f" {alt} ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <img .../>: no content, no end tag to wait for.
        if tag == "a":
            return
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.skipping and self.skipping[-1] == tag:
            self.skipping.pop()

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag == "a" and self.links:
            href, start = self.links.pop()
            self._close_link(href, start)
        elif tag == "pre" and self.pre:
            self.pre -= 1
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        elif tag in _CELL:
            self.out.append(" ")
        if tag in _BLOCK:
            self._breaks(2 if tag in _PARAGRAPH else 1)

    def _close_link(self, href: str | None, start: int) -> None:
        text = _SPACES.sub(" ", "".join(p for p in self.out[start:] if isinstance(p, str)))
        text = text.replace(_PRE_SPACE, " ").strip()
        url = (href or "").strip()
        if not url or url.startswith("#") or url.lower().startswith("javascript:"):
            return
        if not text:
            self.out.append(url)
        elif text != url and text != url.removeprefix("mailto:"):
            self.out.append(f" ({url})")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        data = data.replace(_PRE_SPACE, "")
        if self.pre:
            # Kept as written: spaces protected from the final stripping, newlines as breaks.
            lines = data.replace("\r\n", "\n").replace("\xa0", " ").split("\n")
            for number, line in enumerate(lines):
                if number:
                    self.out.append(_PRE_BREAK)
                self.out.append(line.replace(" ", _PRE_SPACE))
        else:
            self.out.append(_SPACES.sub(" ", data))

    def text(self) -> str:
        for href, start in reversed(self.links):  # links never closed: still show the URL
            self._close_link(href, start)
        self.links.clear()
        if self.template:
            # Breaks stay marks: whether two are adjacent is only known once rendered (a
            # loop's rows, a block an if leaves out), so tidy_text merges them then.
            return "".join(
                "\n" if p == _PRE_BREAK else _BREAK_MARKS[p] if isinstance(p, int) else p
                for p in self.out
            )
        pieces: list[str] = []
        pending = 0
        for piece in self.out:
            if isinstance(piece, int):
                # A pre's own newline always counts; block breaks merge into the largest.
                if piece == _PRE_BREAK:
                    pieces.append("\n")
                else:
                    pending = max(pending, piece)
            elif pending and not piece.strip(" "):
                continue
            else:
                if pending:
                    pieces.append("\n" * pending)
                    pending = 0
                pieces.append(piece)
        raw = "".join(pieces)
        lines = [line.strip(" ") for line in raw.split("\n")]
        # Collapsing may leave double spaces where inline pieces met (" text " + " more").
        lines = [_DOUBLE_SPACE.sub(" ", line) if line else line for line in lines]
        text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")
        return text.replace(_PRE_SPACE, " ")


def html_to_text(html: str) -> str:
    """Readable plain text for the text part of a message (contract in the module docstring)."""
    builder = _TextBuilder()
    builder.feed(html)
    builder.close()
    return builder.text()


@functools.lru_cache(maxsize=1024)
def text_template_from_html(source: str) -> str | None:
    """A Liquid text template that renders what :func:`html_to_text` makes of the rendered
    HTML template ``source``, so the text part costs a render, not an HTML parse, per message.

    Liquid markup is kept through the conversion: output statements stand where their text
    will be (a link's ``href="{{ url }}"`` becomes ``({{ url }})``), tags take no room.
    Values are not escaped in text, so what a reader sees is the same (two differences: a
    newline in a value stays a newline, and runs of spaces in a value inside ``pre`` collapse).
    ``None`` when the source uses the private-use characters the conversion borrows; the
    caller then derives the text from each rendered HTML instead (also the fallback when
    Liquid markup was split by the HTML, e.g. a tag inside ``<head>`` closed in the body, and
    the result does not parse). Render the result, then pass it through :func:`tidy_text`.
    Cached per source: included templates are converted each time they are included.
    """
    if any(mark in source for mark in _MARKS):
        return None
    markup: dict[str, int] = {}

    def stand_in(found: re.Match[str]) -> str:
        text = found.group(0)
        number = markup.setdefault(text, len(markup))
        if text.startswith("{%"):
            return f"{_TAG_OPEN}{number}{_TAG_CLOSE}"
        return f"{_OUT_OPEN}{number}{_OUT_CLOSE}"

    builder = _TextBuilder(template=True)
    builder.feed(_LIQUID_MARKUP.sub(stand_in, source))
    builder.close()
    converted = builder.text()
    by_number = {number: text for text, number in markup.items()}
    return _STAND_IN.sub(lambda found: by_number[int(found.group(1))], converted)


def tidy_text(rendered: str) -> str:
    """Finish a rendered text template from :func:`text_template_from_html`: adjacent line
    breaks merge into the largest, lines are stripped, at most one blank line in a row."""
    text = _BREAK_RUN.sub(lambda run: "\n\n" if _PARAGRAPH_MARK in run.group(0) else "\n", rendered)
    lines = [_DOUBLE_SPACE.sub(" ", line.strip(" ")) for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n").replace(_PRE_SPACE, " ")
