"""Rendering a message from a compiled template, and the preview of one.

The values a template sees are made by :mod:`.values`.

Escaping: the ``html`` field is rendered with autoescaping on (python-liquid's ``autoescape``,
markupsafe): every value output with ``{{ }}`` is HTML-escaped, so a trait holding
``<script>`` shows as text instead of injecting markup into the mail, and ``&`` in a URL
becomes the ``&amp;`` HTML requires. Markup written in the template itself is untouched. An
author who deliberately puts HTML in ``data`` outputs it with ``{{ data.block | safe }}``:
the decision is the template author's, per variable, never the data's (data cannot carry
"safe" strings in: :func:`~.values.plain_data` turns every string plain). ``subject`` and
``text`` are not HTML and are never escaped. The subject is one line: line breaks and runs of
white space in the rendered subject become single spaces, so a trait cannot add a header.

The text part, when the template has none, is what :func:`~.text.html_to_text` makes of the
rendered HTML. To spare the worker an HTML parse per message it is rendered from a text
template derived from the HTML template once (and from each included template as it is
included); where that cannot stand for the HTML (``| safe`` values, Liquid split by HTML
elements) the rendered HTML is parsed. Tests hold the two ways to the same text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from getfluxly_server.domain.templates.compile import CompiledTemplate
from getfluxly_server.domain.templates.errors import TemplateRenderFailed
from getfluxly_server.domain.templates.sandbox import PartialLoader, render_field
from getfluxly_server.domain.templates.text import html_to_text, text_template_from_html, tidy_text
from getfluxly_server.domain.templates.values import plain_values

#: The most warnings a preview lists (a template looping over an undefined list could repeat).
MAX_WARNINGS = 100

_ONE_LINE = re.compile(r"\s+")


@dataclass(frozen=True)
class RenderedMessage:
    """The parts of one message: ``html`` is None for a text-only template."""

    subject: str
    html: str | None
    text: str


def render_message(
    template: CompiledTemplate,
    values: Mapping[str, object],
    *,
    partials: PartialLoader | None = None,
) -> RenderedMessage:
    """Render subject, HTML and text with ``values`` (from :func:`~.values.variables`; any
    mapping is copied to plain data first, refusing objects with ``validation_error``).

    ``partials`` resolves ``include``/``render`` names to sources of the same project's
    templates. Without a text field, the text is derived from the rendered HTML.

    Raises:
        TemplateRenderFailed: a sandbox limit or a template error; names the field.
    """
    return _render(template, plain_values(values), partials, None)


def preview(
    template: CompiledTemplate,
    values: Mapping[str, object],
    *,
    partials: PartialLoader | None = None,
) -> dict[str, Any]:
    """``{"subject", "html", "text", "warnings"}`` as the preview endpoint answers.

    Each warning is ``{"type": "undefined_variable", "variable": <dotted path, e.g.
    "profile.first_name" or "data.items[0].name">, "fields": [fields where it is used]}``,
    in the order first met, at most :data:`MAX_WARNINGS`. Rendering is the same as a real
    send (undefined renders empty), so what the preview shows is what would be sent.
    """
    seen: dict[str, list[str]] = {}
    message = _render(template, plain_values(values), partials, seen)
    warnings = [
        {"type": "undefined_variable", "variable": variable, "fields": fields}
        for variable, fields in list(seen.items())[:MAX_WARNINGS]
    ]
    return {
        "subject": message.subject,
        "html": message.html,
        "text": message.text,
        "warnings": warnings,
    }


def _render(
    template: CompiledTemplate,
    values: Mapping[str, object],
    partials: PartialLoader | None,
    seen: dict[str, list[str]] | None,
) -> RenderedMessage:
    def field(name: str, parsed: Any, loader: PartialLoader | None = partials) -> str:
        undefined: list[str] | None = [] if seen is not None else None
        out = render_field(parsed, values, field=name, partials=loader, undefined=undefined)
        if seen is not None and undefined:
            for variable in undefined:
                fields = seen.setdefault(variable, [])
                if name not in fields:
                    fields.append(name)
        return out

    subject = _ONE_LINE.sub(" ", field("subject", template.subject)).strip()
    html = field("html", template.html) if template.html is not None else None
    if template.text is not None:
        text = field("text", template.text)
    elif template.text_from_html is not None:
        # No text field: the text part is what the HTML reads as, rendered from the text
        # template derived at compile time (the same text as html_to_text of the HTML), its
        # includes converted alike; where one cannot be, from the rendered HTML after all.
        try:
            text_partials = None if partials is None else _TextPartials(partials)
            text = tidy_text(field("html", template.text_from_html, text_partials))
        except _NoTextTemplate:
            text = html_to_text(html or "")
        except TemplateRenderFailed as err:
            if err.reason != "syntax":
                raise
            text = html_to_text(html or "")  # an include's Liquid split by its HTML
    else:
        text = html_to_text(html or "")
    return RenderedMessage(subject=subject, html=html, text=text)


class _NoTextTemplate(Exception):  # noqa: N818 - a signal, not an error
    """An included template cannot be read as text without rendering it as HTML."""


#: ``| safe`` in an included template: a value's own HTML, which only the rendered HTML shows.
_SAFE_FILTER = re.compile(r"\|\s*safe\b")


class _TextPartials:
    """The caller's partial loader, handing out each HTML partial as a text template."""

    def __init__(self, partials: PartialLoader) -> None:
        self._partials = partials

    def __call__(self, name: str) -> str | None:
        source = self._partials(name)
        if source is None:
            return None
        derived = text_template_from_html(source)
        if derived is None or _SAFE_FILTER.search(source):
            raise _NoTextTemplate(name)
        return derived
