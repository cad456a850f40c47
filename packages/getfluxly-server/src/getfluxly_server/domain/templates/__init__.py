"""Templates: Liquid (sandboxed) subject, HTML and text, optional MJML, the text part from HTML.

No HTTP and no SQL here: the API validates and stores with :func:`prepare`, a worker renders
with a :class:`TemplateCache` and :func:`render_message`, the preview endpoint calls
:func:`preview`. Errors are domain errors with code ``validation_error`` naming the field.

The modules: :mod:`.sandbox` (the Liquid environment and its limits), :mod:`.compile`
(save-time checks, MJML, parsing), :mod:`.cache` (compiled templates per version),
:mod:`.values` (the variables, as plain data), :mod:`.render` (rendering, preview,
escaping), :mod:`.text` (HTML to text), :mod:`.errors`.
"""

from getfluxly_server.domain.templates.cache import TemplateCache
from getfluxly_server.domain.templates.compile import (
    CompiledTemplate,
    TemplateFields,
    compile_template,
    mjml_to_html,
    prepare,
)
from getfluxly_server.domain.templates.errors import TemplateRenderFailed, TemplateSyntaxInvalid
from getfluxly_server.domain.templates.render import RenderedMessage, preview, render_message
from getfluxly_server.domain.templates.sandbox import DEFAULT_LIMITS, Limits, PartialLoader
from getfluxly_server.domain.templates.text import html_to_text
from getfluxly_server.domain.templates.values import variables

__all__ = [
    "DEFAULT_LIMITS",
    "CompiledTemplate",
    "Limits",
    "PartialLoader",
    "RenderedMessage",
    "TemplateCache",
    "TemplateFields",
    "TemplateRenderFailed",
    "TemplateSyntaxInvalid",
    "compile_template",
    "html_to_text",
    "mjml_to_html",
    "prepare",
    "preview",
    "render_message",
    "variables",
]
