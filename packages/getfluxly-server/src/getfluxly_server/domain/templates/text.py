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
* ``<a href="u">t</a>`` is ``t (u)``; when the text is the URL itself, or empty, just ``u``;
  ``javascript:`` links and in-page ``#anchors`` keep only their text; an image inside a
  link counts by its ``alt`` text (images elsewhere too, when they have one);
* runs of white space collapse to one space (inside ``pre`` they are kept); lines are
  stripped; never more than one blank line in a row; entities are decoded and a
  non-breaking space is a space.
"""

from __future__ import annotations

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
_SPACES = re.compile(r"[ \t\r\n\f\v\xa0\u200b]+")
_BLANK_LINES = re.compile(r"\n{3,}")
#: Stand-ins inside ``pre``: a space the final stripping must keep, a newline that is not a
#: block break (a NUL never survives in parsed HTML text: it is removed from data first).
_PRE_SPACE = "\x00"
_PRE_BREAK = -1


class _TextBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
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
        if tag in _SKIP:
            self.skipping.append(tag)
            return
        attributes = dict(attrs)
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
        if tag in _SKIP and self.skipping and self.skipping[-1] == tag:
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
        lines = [re.sub(r" {2,}", " ", line) if line else line for line in lines]
        text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")
        return text.replace(_PRE_SPACE, " ")


def html_to_text(html: str) -> str:
    """Readable plain text for the text part of a message (contract in the module docstring)."""
    builder = _TextBuilder()
    builder.feed(html)
    builder.close()
    return builder.text()
