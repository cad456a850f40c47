"""Save-time compilation: check every field, turn MJML into HTML, parse Liquid once.

A template is saved as :class:`TemplateFields` (what the author wrote). :func:`prepare` checks
it and returns the fields to store: the same, with ``html`` made from ``mjml`` when MJML was
given. :func:`compile_template` parses prepared fields into a :class:`CompiledTemplate`, the
thing a worker renders many times (see :mod:`.cache`). Both raise
:class:`~.errors.TemplateSyntaxInvalid` (``validation_error``) naming the field, line and
column, or :class:`~getfluxly_server.domain.errors.ValidationFailed` for a missing field.

MJML goes through MRML (``mjml-python``: Rust, no Node, no network). Liquid inside MJML
survives it: the MJML source is first parsed as Liquid (so a Liquid mistake is reported at
its line in the MJML the author wrote), then compiled to HTML, then the HTML is parsed as
Liquid. Liquid in text content and attribute values passes through MRML unchanged; control
flow between MJML components belongs in ``<mj-raw>`` (MRML rejects bare text there).
``<mj-include>`` is refused: reuse goes through Liquid's ``include``/``render``, resolved
at render time so an edited partial takes effect without re-saving every template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import mjml
from liquid import BoundTemplate
from liquid.exceptions import LiquidError

from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.templates.errors import FIELDS, TemplateSyntaxInvalid
from getfluxly_server.domain.templates.sandbox import (
    DEFAULT_LIMITS,
    Limits,
    SandboxEnvironment,
    sandbox_environment,
)
from getfluxly_server.domain.templates.text import text_template_from_html


@dataclass(frozen=True)
class TemplateFields:
    """A template's sources as the author gave them (each Liquid; ``mjml`` is MJML + Liquid)."""

    subject: str
    html: str | None = None
    text: str | None = None
    mjml: str | None = None


@dataclass(frozen=True)
class CompiledTemplate:
    """Prepared fields and their parsed Liquid: immutable, rendered by many threads at once."""

    fields: TemplateFields
    subject: BoundTemplate
    html: BoundTemplate | None
    text: BoundTemplate | None
    #: Without a text field: the text template derived from the HTML template (see
    #: :func:`~.text.text_template_from_html`), or None to derive from each rendered HTML.
    text_from_html: BoundTemplate | None
    limits: Limits


def prepare(fields: TemplateFields, *, limits: Limits = DEFAULT_LIMITS) -> TemplateFields:
    """Check ``fields`` and compile MJML: what to store. Idempotent on its own output.

    Rules: ``subject`` is required text; at least one of ``html``, ``text``, ``mjml``; not both
    ``html`` and ``mjml`` (the HTML is made from the MJML), unless ``html`` is what this MJML
    compiles to (fields as prepared and stored); every field within
    ``limits.max_source_chars``; every field valid Liquid with only known filters. (So an
    update that changes the MJML passes the new ``mjml`` with ``html=None``.) Templates named
    in ``include``/``render`` are not looked up here: they may be saved later, and a missing
    one is a render error naming it (a preview shows it at once).
    """
    if not isinstance(fields.subject, str) or not fields.subject.strip():
        raise ValidationFailed("subject is required (Liquid text)", field="subject")
    for name in FIELDS:
        value = getattr(fields, name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValidationFailed(f"{name} must be text", field=name)
        if len(value) > limits.max_source_chars:
            raise ValidationFailed(
                f"{name} is longer than {limits.max_source_chars} characters", field=name
            )
    if not (fields.html or fields.text or fields.mjml):
        raise ValidationFailed("give at least one of html, text, mjml", field="html")
    plain = sandbox_environment(limits, autoescape=False)
    html_env = sandbox_environment(limits, autoescape=True)
    _parse("subject", fields.subject, plain)
    if fields.text:
        _parse("text", fields.text, plain)
    if fields.mjml:
        _parse("mjml", fields.mjml, html_env)
        html = mjml_to_html(fields.mjml, max_depth=limits.max_mjml_depth)
        if fields.html and fields.html != html:
            # Both given, and the HTML is not the MJML's own (as stored after a save).
            raise ValidationFailed(
                "give html or mjml, not both: the HTML part is compiled from the MJML",
                field="mjml",
            )
        try:
            html_env.from_string(html, name="mjml")
        except LiquidError as err:
            raise TemplateSyntaxInvalid(
                "mjml",
                f"the HTML compiled from the MJML is not valid Liquid ({_message(err)}); "
                "put Liquid tags between components inside <mj-raw>",
                line=None,
                column=None,
            ) from None
        return replace(fields, html=html)
    if fields.html:
        _parse("html", fields.html, html_env)
    return fields


def compile_template(
    fields: TemplateFields, *, limits: Limits = DEFAULT_LIMITS
) -> CompiledTemplate:
    """Parse prepared (or raw: :func:`prepare` runs again) fields into a renderable template."""
    prepared = prepare(fields, limits=limits)
    plain = sandbox_environment(limits, autoescape=False)
    html_env = sandbox_environment(limits, autoescape=True)
    html = html_env.from_string(prepared.html, name="html") if prepared.html else None
    return CompiledTemplate(
        fields=prepared,
        subject=plain.from_string(prepared.subject, name="subject"),
        html=html,
        text=plain.from_string(prepared.text, name="text") if prepared.text else None,
        text_from_html=(
            _text_from_html(html, prepared.html or "", plain)
            if html and not prepared.text
            else None
        ),
        limits=limits,
    )


def _text_from_html(
    html: BoundTemplate, source: str, plain: SandboxEnvironment
) -> BoundTemplate | None:
    """The text template derived from the HTML template, when it can stand for it.

    Not when the HTML outputs values unescaped with ``safe`` (HTML in a value, which the text
    would show as is): then, and when the derived template does not parse, the text is
    derived from each rendered HTML instead. Included templates are converted the same way
    when rendered (see :mod:`.render`).
    """
    if "safe" in html.analyze(include_partials=False).filters:
        return None
    derived = text_template_from_html(source)
    if not derived:
        return None
    try:
        return plain.from_string(derived, name="html")
    except LiquidError:
        return None


def _refuse_mj_include(path: str) -> str:
    raise ValueError(f"<mj-include path={path!r}> is not available: use Liquid's include")


_MRML_POSITION = re.compile(r"at position (\d+):(\d+)")


def mjml_to_html(source: str, *, max_depth: int = DEFAULT_LIMITS.max_mjml_depth) -> str:
    """Compile MJML to HTML with MRML; an error is a ``validation_error`` on field ``mjml``.

    Elements nested deeper than ``max_depth`` are refused before MRML parses anything: its
    parser recurses per level and, a little past 1,000 levels, crashes the process (a
    segmentation fault, which no ``except`` catches).
    """
    depth, line = _nesting(source)
    if depth > max_depth:
        raise TemplateSyntaxInvalid(
            "mjml",
            f"elements are nested more than {max_depth} deep",
            line=line,
            column=None,
        )
    try:
        return mjml.mjml2html(source, include_loader=_refuse_mj_include)
    except BaseException as err:
        # MRML reports bad MJML as ValueError; a panic in its Rust code arrives as pyo3's
        # PanicException, which derives from BaseException. Both are the MJML's fault.
        if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
            raise
        message = str(err)
        line = column = None
        found = _MRML_POSITION.search(message)
        if found:
            line, column = _line_col(source.encode("utf-8"), int(found.group(1)))
        raise TemplateSyntaxInvalid(
            "mjml", f"not valid MJML: {message}", line=line, column=column
        ) from None


_COMMENT = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>", re.DOTALL)
_TAG = re.compile(r"<(/?)([A-Za-z][\w:.-]*)(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(/?)>")
_VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


def _nesting(source: str) -> tuple[int, int | None]:
    """The deepest element nesting in markup, and the line where it is first passed.

    A scan, not a parse: comments are skipped, self-closing and void elements do not nest,
    an end tag closes one level. Unclosed ``<p>``s count as nested, which only errs towards
    the safe side.
    """
    text = _COMMENT.sub(lambda found: "\n" * found.group(0).count("\n"), source)
    depth = deepest = 0
    deepest_at = 0
    for tag in _TAG.finditer(text):
        closing, name, self_closing = tag.groups()
        if closing:
            depth = max(0, depth - 1)
        elif not self_closing and name.lower() not in _VOID_ELEMENTS:
            depth += 1
            if depth > deepest:
                deepest, deepest_at = depth, tag.start()
    return deepest, (text.count("\n", 0, deepest_at) + 1 if deepest else None)


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    before = data[:offset].decode("utf-8", "replace")
    line = before.count("\n") + 1
    return line, len(before) - (before.rfind("\n") + 1) + 1


def _parse(field: str, source: str, env: SandboxEnvironment) -> BoundTemplate:
    try:
        template = env.from_string(source, name=field)
    except LiquidError as err:
        line, column = _locate(err, source, env)
        raise TemplateSyntaxInvalid(field, _message(err), line=line, column=column) from None
    # Filters are looked up at render time; a misspelt one is the author's mistake to hear
    # about now, at its place, not when a worker sends.
    unknown = [
        (name, spans)
        for name, spans in template.analyze(include_partials=False).filters.items()
        if name not in env.filters
    ]
    if unknown:
        name, spans = unknown[0]
        line, column = spans[0].line_col(source)
        raise TemplateSyntaxInvalid(field, f"unknown filter {name!r}", line=line, column=column + 1)
    return template


def _message(err: LiquidError) -> str:
    if isinstance(err.__cause__, RecursionError):
        # python-liquid's parser recurses per level of an expression and says only
        # "unexpected liquid parsing error" when Python's stack runs out.
        return "an expression is nested too deeply"
    return str(err.message)


# A Liquid output statement or tag, for finding where a parse error without position is.
_MARKUP = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)


def _locate(
    err: LiquidError, source: str, env: SandboxEnvironment
) -> tuple[int | None, int | None]:
    """Line and column (1-based) of a parse error.

    python-liquid gives the position for most errors; for those found at the end of an
    expression (``{{ x | }}``, ``{% if a == %}``) it does not, so each statement is parsed
    alone and the one failing with the same message is the culprit (for an unclosed block,
    the last such opening tag).
    """
    context = err.context()
    if context is not None:
        return context[0], context[1] + 1
    message = _message(err)
    hits: list[int] = []
    for match in _MARKUP.finditer(source):
        try:
            env.from_string(match.group(0))
        except LiquidError as alone:
            if _message(alone) == message:
                hits.append(match.start())
    if not hits:
        return None, None
    offset = hits[-1] if message.startswith("expected tag end") else hits[0]
    return _line_col(source[:offset].encode("utf-8"), len(source[:offset].encode("utf-8")))
