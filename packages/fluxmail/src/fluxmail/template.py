"""``EmailTemplate``: Jinja2 templates for subjects and bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from fluxmail.errors import FluxMailException


class EmailTemplate:
    """A Jinja2 template. ``autoescape=True`` HTML-escapes every substituted value.

    Undefined names render as empty text, as in Jinja2's default; a syntax error is a
    ``template_error`` naming the line.
    """

    def __init__(self, template: str, autoescape: bool = False) -> None:
        self.source = template
        self.autoescape = autoescape
        # The contract defaults to no escaping (plain-text mail); HTML callers opt in.
        environment = jinja2.Environment(autoescape=autoescape, keep_trailing_newline=True)  # noqa: S701
        try:
            self._template = environment.from_string(template)
        except jinja2.TemplateSyntaxError as exc:
            raise FluxMailException(
                f"Template syntax error on line {exc.lineno}: {exc.message}", "template_error"
            ) from exc

    @classmethod
    def from_file(cls, path: str | Path, autoescape: bool = False) -> EmailTemplate:
        """Load a UTF-8 template file; ``read_error`` if it is missing or unreadable."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FluxMailException(f"Could not read template {path}: {exc}", "read_error") from exc
        return cls(text, autoescape=autoescape)

    def render(self, **context: Any) -> str:
        try:
            return self._template.render(**context)
        except jinja2.TemplateError as exc:
            raise FluxMailException(f"Template failed to render: {exc}", "template_error") from exc

    def __repr__(self) -> str:
        return f"EmailTemplate({self.source[:40]!r}, autoescape={self.autoescape})"
