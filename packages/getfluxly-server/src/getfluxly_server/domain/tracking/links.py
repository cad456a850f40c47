"""The server's tracking and unsubscribe links, and an HTML part rewritten to carry them.

Paths on the public URL (``GETFLUXLY_PUBLIC_URL``), each with a token of :mod:`.tokens`:

- ``/t/o/{token}``: the open pixel (a 1x1 GIF), token ``o`` of the message id;
- ``/t/c/{token}``: a click, token ``c`` of the message id and the link as it was in the
  message; it redirects there and nowhere else;
- ``/unsubscribe/{token}``: the ``List-Unsubscribe`` URL (token ``u`` of the message id):
  ``POST`` unsubscribes at once (RFC 8058 one-click), ``GET`` shows the preference page;
- ``/preferences/{token}``: the preference page (token ``p``), and its form's ``POST``.

:meth:`Links.rewrite_html` points every ``http(s)`` link of an ``<a href>`` at the click
path and adds the pixel before ``</body>``. Left as they are: other schemes (``mailto:``,
``tel:``), in-page anchors, links to the server itself (the unsubscribe and preference
links a template shows) and links marked ``data-gf-notrack``. The text part is left alone
(a rewritten link there is a long opaque URL the reader sees).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from getfluxly_server.domain.tracking.tokens import Signer

OPEN, CLICK, UNSUBSCRIBE, PREFERENCES = "o", "c", "u", "p"
#: A link marked with this attribute is never rewritten.
NO_TRACK = "data-gf-notrack"
_HREF = re.compile(r"""(?<![\w:-])href\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Links:
    """Builds and reads the links of one server (its public URL and signing keys)."""

    public_url: str
    signer: Signer

    def open_url(self, message_id: str) -> str:
        return f"{self.public_url}/t/o/{self.signer.sign(OPEN, message_id)}"

    def click_url(self, message_id: str, url: str) -> str:
        return f"{self.public_url}/t/c/{self.signer.sign(CLICK, message_id, url)}"

    def unsubscribe_url(self, message_id: str) -> str:
        return f"{self.public_url}/unsubscribe/{self.signer.sign(UNSUBSCRIBE, message_id)}"

    def preferences_url(self, message_id: str) -> str:
        return f"{self.public_url}/preferences/{self.signer.sign(PREFERENCES, message_id)}"

    def opened(self, token: str) -> str:
        """The message id of an open token (:class:`~.tokens.InvalidToken` otherwise)."""
        return self.signer.verify(OPEN, token, 1)[0]

    def clicked(self, token: str) -> tuple[str, str]:
        """The message id and the link of a click token."""
        message_id, url = self.signer.verify(CLICK, token, 2)
        return message_id, url

    def unsubscribing(self, token: str) -> str:
        return self.signer.verify(UNSUBSCRIBE, token, 1)[0]

    def preferring(self, token: str) -> str:
        return self.signer.verify(PREFERENCES, token, 1)[0]

    def rewrite_html(self, html: str, message_id: str) -> str:
        """``html`` with its links through the click path and the pixel added."""
        finder = _LinkFinder(self.public_url)
        finder.feed(html)
        finder.close()
        # The parser counts lines by "\n" alone (not splitlines' other breaks).
        starts = [0, *(found.end() for found in re.finditer("\n", html))]
        out: list[str] = []
        done = 0
        for (line, column), raw, url in finder.links:
            at = starts[line - 1] + column
            if at < done or html[at : at + len(raw)] != raw:
                continue  # (never expected: the parser's positions are the text's)
            tracked = self.click_url(message_id, url)
            out += [html[done:at], _HREF.sub(f'href="{tracked}"', raw, count=1)]
            done = at + len(raw)
        out.append(html[done:])
        rewritten = "".join(out)
        pixel = (
            f'<img src="{self.open_url(message_id)}" width="1" height="1" alt="" '
            'style="display:block;border:0;width:1px;height:1px" />'
        )
        ends = list(_BODY_END.finditer(rewritten))
        if not ends:
            return rewritten + pixel
        cut = ends[-1].start()
        return rewritten[:cut] + pixel + rewritten[cut:]


class _LinkFinder(HTMLParser):
    """Collects ``(position, raw start tag, link)`` of each ``<a>`` to rewrite."""

    def __init__(self, public_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.public_url = public_url
        self.links: list[tuple[tuple[int, int], str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        values = dict(attrs)
        url = (values.get("href") or "").strip()
        if NO_TRACK in values or not url.lower().startswith(("http://", "https://")):
            return
        if url.startswith(self.public_url + "/"):
            return  # the server's own links (unsubscribe, preferences): never wrapped
        raw = self.get_starttag_text()
        if raw is not None and _HREF.search(raw):
            self.links.append((self.getpos(), raw, url))

    handle_startendtag = handle_starttag
