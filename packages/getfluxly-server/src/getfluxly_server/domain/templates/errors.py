"""The two ways a template is refused: at save time (its source) and at render time (a limit).

Both are :class:`~getfluxly_server.domain.errors.ValidationFailed` (code ``validation_error``):
the API answers them as 400 with the detail, and a delivery worker records the detail on the
message and goes on with the next one. Neither carries a traceback or a Python class name that
means nothing to the template's author.
"""

from __future__ import annotations

from getfluxly_server.domain.errors import ValidationFailed

#: The template fields, as the API names them.
FIELDS = ("subject", "html", "text", "mjml")


class TemplateSyntaxInvalid(ValidationFailed):
    """A field's source is not valid Liquid (or MJML): says which field, line and column.

    ``extra`` holds ``field``, ``line`` and ``column`` (1-based; ``None`` when the parser could
    not tell) and, when the error is in an included template, ``partial`` (its name).
    """

    def __init__(
        self,
        field: str,
        message: str,
        *,
        line: int | None,
        column: int | None,
        partial: str | None = None,
    ) -> None:
        where = field if partial is None else f"{field} (in included template {partial!r})"
        if line is not None:
            where += f", line {line}" + (f", column {column}" if column is not None else "")
        super().__init__(
            f"{where}: {message}",
            field=field,
            line=line,
            column=column,
            **({"partial": partial} if partial is not None else {}),
        )
        self.field = field
        self.line = line
        self.column = column
        self.partial = partial


class TemplateRenderFailed(ValidationFailed):
    """Rendering stopped: a sandbox limit was reached or the template did something invalid.

    ``extra`` holds ``field``, ``line`` (of the statement, when known) and ``reason``: one of
    ``loop_limit``, ``output_limit``, ``memory_limit`` (assign/capture), ``size_limit`` (what a
    filter takes or makes: items, numbers), ``depth_limit``, ``include_limit``,
    ``time_limit``, ``not_found`` (an
    included template that does not exist), ``syntax`` (an included template that does not
    parse), ``error`` (anything else the template did wrong, e.g. dividing by zero).
    """

    def __init__(self, field: str, reason: str, message: str, *, line: int | None = None) -> None:
        where = field if line is None else f"{field}, line {line}"
        super().__init__(f"{where}: {message}", field=field, reason=reason, line=line)
        self.field = field
        self.reason = reason
        self.line = line
