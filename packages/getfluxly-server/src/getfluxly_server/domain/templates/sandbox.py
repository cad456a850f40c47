"""The Liquid sandbox: what a user's template may do, and how far it may go.

Templates are written by users, rendered in the delivery worker, so the sandbox is what keeps
one bad template from reading the server's files, reaching Python internals, or taking the
worker down. It is python-liquid 2 configured and extended as follows:

* **No file system.** The only loader is :class:`_PartialLoader`: ``{% include 'x' %}`` and
  ``{% render 'x' %}`` ask the caller's :data:`PartialLoader` (a callable, template name ->
  source or ``None``) given for that one render; storage plugs in there, scoped to the
  template's project. Without one, nothing can be included. A name is only ever a key into
  that callable: ``{% include '/etc/passwd' %}`` looks up a template of that name and finds none.
* **No Python attributes.** Liquid resolves ``a.b`` as ``a["b"]`` (item access), never
  ``getattr``; on top of that :func:`~.values.plain_data` copies what is rendered into plain
  dict/list/str/int/float/bool/None before it reaches a template, refusing anything else, so
  there is no object whose attributes or methods could be reached (``{{ x.__class__ }}``
  renders empty).
* **Bounded work.** Per render: all loop iterations together (:attr:`Limits.max_loop_iterations`),
  output size, the size of variables made with ``assign``/``capture``, nesting of scopes and
  includes (which bounds include recursion), the number of includes, the size of what any one
  filter may produce or take (so ``replace``/``join``/``append`` chains cannot build gigabytes
  on the way to the output), and wall time: a deadline checked at every filter, loop
  iteration, include and partial render. Python cannot interrupt a running filter, so the
  deadline bounds time between those points; the size limits bound each step.
* **Every breach is a :class:`TemplateRenderFailed`** with a ``reason``: the worker records it
  on the message and carries on.

The parsed templates (``BoundTemplate``) are immutable once parsed and rendered with a fresh
context each time, so one compiled template serves every render, from any thread.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from threading import Lock
from typing import Any, TextIO

from liquid import BoundTemplate, Environment, Mode, RenderContext, Undefined
from liquid.builtin.filters.extra import safe
from liquid.builtin.filters.misc import default as liquid_default
from liquid.builtin.tags.for_tag import ForLoop
from liquid.builtin.tags.tablerow_tag import TableRow
from liquid.exceptions import (
    BlockNestingError,
    ContextDepthError,
    LiquidError,
    LiquidSyntaxError,
    LocalNamespaceLimitError,
    LoopIterationLimitError,
    OutputStreamLimitError,
    TemplateNotFoundError,
)
from liquid.filter import with_context
from liquid.loader import BaseLoader, TemplateSource
from liquid.undefined import UNDEFINED

from getfluxly_server.domain.templates.errors import TemplateRenderFailed
from getfluxly_server.domain.templates.plain import render_plain

#: The caller's way to include other templates of the same project: name -> source, or None.
PartialLoader = Callable[[str], "str | None"]

#: The clock of render deadlines (a module global so a test can drive it).
_clock = time.monotonic


@dataclass(frozen=True)
class Limits:
    """How far one render of one field may go. The defaults suit real email with a wide margin.

    Sizes are in characters (of output) or python-liquid's measure (of variables).
    """

    #: Characters of Liquid source per field (checked when a template is compiled).
    max_source_chars: int = 256_000
    #: Output of one field, characters. Gmail clips a message body at about 100 KB.
    max_output_chars: int = 1_000_000
    #: Loop iterations of one render, every loop together (nested and side by side).
    max_loop_iterations: int = 100_000
    #: Items a filter may take or make (``sort``, ``map``, ``split`` of a huge range or string).
    max_items: int = 100_000
    #: Variables made with assign/capture, summed (python-liquid's local namespace measure).
    max_variable_bytes: int = 1_000_000
    #: Nesting of scopes: loops, includes and renders inside each other (bounds recursion).
    max_depth: int = 30
    #: ``include``/``render`` tags executed in one render (a fan-out of includes is not deep).
    max_includes: int = 500
    #: Wall time of one render.
    max_render_seconds: float = 2.0
    #: Largest integer a filter may produce, in bits (``times`` squared again and again).
    max_int_bits: int = 4096
    #: Nesting of elements in MJML (checked before MRML sees it: MRML recurses per level
    #: and crashes the whole process, not with an error, somewhere past 1,000 levels).
    max_mjml_depth: int = 100


DEFAULT_LIMITS = Limits()


class _RenderState:
    """What one render (of one field) has used so far; shared with contexts copied from it."""

    __slots__ = (
        "_met",
        "deadline",
        "includes",
        "iterations",
        "limits",
        "partials",
        "undefined",
    )  # fmt: skip

    def __init__(
        self,
        limits: Limits,
        partials: PartialLoader | None = None,
        undefined: list[str] | None = None,
    ) -> None:
        self.limits = limits
        self.deadline = _clock() + limits.max_render_seconds
        self.iterations = 0
        self.includes = 0
        self.partials = partials
        #: Dotted paths of undefined variables met, when a preview asked for them.
        self.undefined = undefined
        #: The undefined values behind :attr:`undefined`, in the same order.
        self._met: list[object] = []

    def note_undefined(self, value: object, path: str) -> None:
        """A preview met the undefined variable ``path`` (``value`` is its Undefined)."""
        if self.undefined is not None:
            self.undefined.append(path)
            self._met.append(value)

    def defaulted(self, value: object) -> None:
        """``value`` went through ``| default``: the author gave it a fallback, so it is no
        longer worth a warning."""
        for index, met in enumerate(self._met):
            if met is value:
                del self._met[index]
                if self.undefined is not None:
                    del self.undefined[index]
                return

    def check_time(self) -> None:
        if _clock() > self.deadline:
            raise _TimeLimitError(
                f"rendering took longer than {self.limits.max_render_seconds:g} s"
            )


class _TimeLimitError(LiquidError):
    def __init__(self, message: str) -> None:
        super().__init__(message, token=None)


class _ItemLimitError(LiquidError):
    def __init__(self, message: str, reason: str = "size_limit") -> None:
        super().__init__(message, token=None)
        self.reason = reason


class _LoaderFailed(Exception):  # noqa: N818 - a carrier, never seen outside this module
    """Carries an exception of the caller's partial loader through python-liquid."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


_write = StringIO.write


class _LimitedOutput(StringIO):
    """An output buffer that refuses more than ``limit`` characters.

    Every piece of output passes here, so it is written for speed (slots, the base write
    bound once): about twice the cost of a bare StringIO write, a third of a naive override.
    """

    __slots__ = ("limit", "size")

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.size = 0

    def write(self, s: str, /) -> int:
        size = self.size = self.size + len(s)
        if size > self.limit:
            raise OutputStreamLimitError("output stream limit reached", token=None)
        return _write(self, s)


def _dotted(path: Sequence[object]) -> str:
    out = ""
    for segment in path:
        if isinstance(segment, str):
            out += f".{segment}" if out else segment
        else:
            out += f"[{segment}]"
    return out


class _SandboxContext(RenderContext):
    """A render context that keeps the per-render budget (shared with copies made for
    ``render``) and checks it at every filter, loop iteration, include and partial."""

    __slots__ = ("state",)

    def __init__(self, template: BoundTemplate, **kwargs: Any) -> None:
        super().__init__(template, **kwargs)
        parent = kwargs.get("parent_context")
        env = template.env
        assert isinstance(env, SandboxEnvironment)
        self.state: _RenderState = (
            parent.state if isinstance(parent, _SandboxContext) else _RenderState(env.limits)
        )

    def filter(self, name: str, token: Any) -> Callable[..., object]:
        self.state.check_time()
        return super().filter(name, token)

    @contextmanager
    def extend(
        self, namespace: Mapping[str, object], template: BoundTemplate | None = None
    ) -> Iterator[RenderContext]:
        # Every template, include, partial render and loop passes here.
        self.state.check_time()
        with super().extend(namespace, template) as context:
            yield context

    @contextmanager
    def loop(
        self, namespace: Mapping[str, object], forloop: ForLoop | TableRow
    ) -> Iterator[RenderContext]:
        # Each iteration checks the deadline: a loop body of tags that neither output nor
        # filter anything would otherwise never reach a check.
        forloop.it = _deadline_checked(forloop.it, self.state)
        with super().loop(namespace, forloop) as context:
            yield context

    def raise_for_loop_limit(self, length: int = 1) -> None:
        super().raise_for_loop_limit(length)
        state = self.state
        state.iterations += length
        if state.iterations > state.limits.max_loop_iterations:
            raise LoopIterationLimitError("loop iteration limit reached", token=None)
        state.check_time()

    def get_buffer(self, buf: TextIO | None = None) -> StringIO:
        carry = buf.size if isinstance(buf, _LimitedOutput) else 0
        return _LimitedOutput(self.state.limits.max_output_chars - carry)


def _deadline_checked(items: Iterator[object], state: _RenderState) -> Iterator[object]:
    check = state.check_time
    for item in items:
        check()
        yield item


class _PreviewContext(_SandboxContext):
    """The context of a preview: also notes the path of every undefined variable met.

    A class of its own so that real renders do not pay for the check on every lookup.
    """

    __slots__ = ()

    def get(self, path: list[object], *, token: Any, default: object = UNDEFINED) -> object:
        value = super().get(path, token=token, default=default)
        if self.state.undefined is not None and isinstance(value, Undefined):
            self.state.note_undefined(value, _dotted(path))
        return value


@with_context
def _default(
    obj: object, default_: object = "", *, allow_false: bool = False, context: RenderContext
) -> object:
    """Liquid's ``default``, telling a preview that an undefined value has its fallback."""
    if isinstance(obj, Undefined) and isinstance(context, _SandboxContext):
        context.state.defaulted(obj)
    return liquid_default(obj, default_, allow_false=allow_false)


class _SandboxTemplate(BoundTemplate):
    context_class = _SandboxContext


class _PartialLoader(BaseLoader):
    """Loads ``include``/``render`` targets through the current render's :data:`PartialLoader`.

    Parsed partials are kept (keyed by environment, name and source text, so an edited partial
    is parsed again and two projects never share a stale one) in a small LRU.
    """

    def __init__(self, max_cached: int = 512) -> None:
        self._parsed: OrderedDict[tuple[int, str, str], BoundTemplate] = OrderedDict()
        self._max = max_cached
        self._lock = Lock()

    def get_source(
        self,
        env: Environment,
        template_name: str,
        *,
        context: RenderContext | None = None,
        **kwargs: object,
    ) -> TemplateSource:
        if not isinstance(context, _SandboxContext):
            raise TemplateNotFoundError(template_name, token=None)
        state = context.state
        state.includes += 1
        if state.includes > state.limits.max_includes:
            raise _ItemLimitError(
                f"more than {state.limits.max_includes} include/render tags in one render",
                "include_limit",
            )
        state.check_time()
        try:
            source = state.partials(template_name) if state.partials is not None else None
        except Exception as err:
            # The caller's storage failing is not the template's fault: it must reach the
            # caller as it was (a worker retries it), not as a template error.
            raise _LoaderFailed(err) from err
        if source is None:
            raise TemplateNotFoundError(template_name, token=None)
        return TemplateSource(source, template_name, None)

    def load(
        self,
        env: Environment,
        name: str,
        *,
        globals: Mapping[str, object] | None = None,
        context: RenderContext | None = None,
        **kwargs: object,
    ) -> BoundTemplate:
        source = self.get_source(env, name, context=context, **kwargs).text
        key = (id(env), name, source)
        with self._lock:
            template = self._parsed.get(key)
            if template is not None:
                self._parsed.move_to_end(key)
                return template
        template = env.from_string(source, name=name, path=name, globals=globals)
        with self._lock:
            self._parsed[key] = template
            if len(self._parsed) > self._max:
                self._parsed.popitem(last=False)
        return template


def _size_guarded(func: Callable[..., Any], limits: Limits, name: str) -> Callable[..., Any]:
    """Wrap a filter so it can neither take nor make more than the limits allow."""

    @functools.wraps(func)
    def guarded(val: object, *args: object, **kwargs: object) -> object:
        sized = isinstance(val, Sized) and not isinstance(val, str | Mapping)
        if sized and len(val) > limits.max_items:  # type: ignore[arg-type]
            raise _ItemLimitError(f"'{name}' was given more than {limits.max_items} items")
        estimate = _ESTIMATES.get(name)
        if estimate is not None and estimate(val, args, kwargs) > limits.max_output_chars:
            raise OutputStreamLimitError(f"'{name}' would make too large a result", token=None)
        result = func(val, *args, **kwargs)
        if isinstance(result, str):
            if len(result) > limits.max_output_chars:
                raise OutputStreamLimitError(f"'{name}' made too large a result", token=None)
        elif isinstance(result, int):
            if result.bit_length() > limits.max_int_bits:
                raise _ItemLimitError(f"'{name}' made too large a number")
        elif (
            isinstance(result, Sized)
            and not isinstance(result, Mapping)
            and len(result) > limits.max_items
        ):
            raise _ItemLimitError(f"'{name}' made more than {limits.max_items} items")
        return result

    return guarded


def _replace_size(val: object, args: tuple[object, ...], kwargs: Mapping[str, object]) -> int:
    # The one filter whose result can be the product of its inputs' sizes.
    if not isinstance(val, str) or not args:
        return 0
    old = str(args[0]) if len(args) > 0 else ""
    new = str(args[1]) if len(args) > 1 else ""
    count = val.count(old) if old else len(val) + 1
    return len(val) + count * max(0, len(new) - len(old))


def _join_size(val: object, args: tuple[object, ...], kwargs: Mapping[str, object]) -> int:
    if not isinstance(val, Sized) or isinstance(val, str | Mapping):
        return 0
    sep = args[0] if args else kwargs.get("separator", " ")
    return len(val) * len(str(sep))


_ESTIMATES: dict[str, Callable[[object, tuple[object, ...], Mapping[str, object]], int]] = {
    "replace": _replace_size,
    "join": _join_size,
}


class SandboxEnvironment(Environment):
    """A python-liquid environment with the sandbox's limits; see the module docstring.

    Build one with :func:`sandbox_environment` (environments are cached per limits and
    escaping, and safe to share between threads).
    """

    template_class = _SandboxTemplate
    limits: Limits = DEFAULT_LIMITS

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            loader=_PartialLoader(),
            tolerance=Mode.STRICT,
            undefined=Undefined,
            strict_filters=True,
            autoescape=autoescape,
        )
        # ``safe`` lets an author output a value they trust (e.g. HTML they put in ``data``)
        # unescaped in the HTML part; it is the template author's decision, per variable.
        self.add_filter("safe", safe)
        self.add_filter("default", _default)
        self.filters = {
            name: _size_guarded(func, self.limits, name) for name, func in self.filters.items()
        }


@functools.cache
def sandbox_environment(limits: Limits = DEFAULT_LIMITS, *, autoescape: bool) -> SandboxEnvironment:
    """The shared environment for these limits; ``autoescape`` for the HTML part only."""

    class Configured(SandboxEnvironment):
        block_nesting_limit = limits.max_depth
        context_depth_limit = limits.max_depth
        loop_iteration_limit = limits.max_loop_iterations
        local_namespace_limit = limits.max_variable_bytes
        output_stream_limit = limits.max_output_chars

    Configured.limits = limits
    return Configured(autoescape=autoescape)


def render_field(
    template: BoundTemplate,
    data: Mapping[str, object],
    *,
    field: str,
    partials: PartialLoader | None = None,
    undefined: list[str] | None = None,
) -> str:
    """Render one parsed field with ``data`` (already :func:`~.values.plain_data`) inside the
    limits.

    ``undefined``, when given, receives the dotted path of every undefined variable met (for
    preview warnings); rendering itself stays lenient (undefined renders empty).

    Raises:
        TemplateRenderFailed: a limit was reached or the template failed; names ``field``.
    """
    env = template.env
    assert isinstance(env, SandboxEnvironment)
    if undefined is None:  # (a preview lists undefined variables: Liquid's way only)
        plain = render_plain(template, data, env.limits.max_output_chars)
        if plain is not None:
            return plain
    state = _RenderState(env.limits, partials, undefined)
    context_class = _SandboxContext if undefined is None else _PreviewContext
    context = context_class(template, globals=template.make_globals(dict(data)))
    context.state = state
    buffer = _LimitedOutput(env.limits.max_output_chars)
    try:
        template.render_with_context(context, buffer)
    except LiquidError as err:
        raise _render_failure(field, err, env.limits) from None
    except _LoaderFailed as err:
        raise err.original from None
    except Exception as err:
        # Plain data in, no user code: only the template can cause anything else here
        # (RecursionError, MemoryError, a filter's ValueError...). The class name tells an
        # operator enough; the author gets a sentence; the worker goes on.
        raise TemplateRenderFailed(
            field, "error", f"the template could not be rendered ({type(err).__name__})"
        ) from None
    return buffer.getvalue()


def _line_of(err: LiquidError) -> int | None:
    context = err.context()
    return context[0] if context else None


def _render_failure(field: str, err: LiquidError, limits: Limits) -> TemplateRenderFailed:
    line = _line_of(err)
    if isinstance(err, LoopIterationLimitError):
        return TemplateRenderFailed(
            field,
            "loop_limit",
            f"loops ran more than {limits.max_loop_iterations} iterations in one render",
            line=line,
        )
    if isinstance(err, OutputStreamLimitError):
        return TemplateRenderFailed(
            field,
            "output_limit",
            f"output would exceed {limits.max_output_chars} characters ({err.message})",
            line=line,
        )
    if isinstance(err, LocalNamespaceLimitError):
        return TemplateRenderFailed(
            field,
            "memory_limit",
            f"variables made with assign/capture exceed {limits.max_variable_bytes} bytes",
            line=line,
        )
    if isinstance(err, ContextDepthError | BlockNestingError):
        return TemplateRenderFailed(
            field,
            "depth_limit",
            f"loops and includes are nested more than {limits.max_depth} deep "
            "(does a template include itself?)",
            line=line,
        )
    if isinstance(err, _TimeLimitError):
        return TemplateRenderFailed(field, "time_limit", str(err.message), line=line)
    if isinstance(err, _ItemLimitError):
        return TemplateRenderFailed(field, err.reason, str(err.message), line=line)
    if isinstance(err, TemplateNotFoundError):
        return TemplateRenderFailed(
            field,
            "not_found",
            f"no template named {err.message!r} in this project to include or render",
            line=line,
        )
    if isinstance(err, LiquidSyntaxError):
        return TemplateRenderFailed(
            field,
            "syntax",
            f"included template {str(err.template_name or '')!r} is not valid Liquid: "
            f"{err.message}",
            line=line,
        )
    return TemplateRenderFailed(field, "error", str(err.message), line=line)


__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "PartialLoader",
    "SandboxEnvironment",
    "render_field",
    "sandbox_environment",
]
