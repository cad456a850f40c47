"""Compiled templates kept per template version: parse once, render many.

A worker sending a broadcast renders one template thousands of times; parsing Liquid (and
compiling MJML) each time would cost more than the render. :class:`TemplateCache` keeps
:class:`~.compile.CompiledTemplate` objects in a bounded LRU keyed by what the caller says
identifies a version (``(template_id, version)`` or ``(template_id, updated_at)`` from
storage), so a changed template is a new key and a stale one ages out. Thread-safe: two
threads missing the same key may both compile; one result wins, both are correct.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from threading import Lock

from getfluxly_server.domain.templates.compile import (
    CompiledTemplate,
    TemplateFields,
    compile_template,
)
from getfluxly_server.domain.templates.sandbox import DEFAULT_LIMITS, Limits


class TemplateCache:
    """A bounded LRU of compiled templates (see the module docstring)."""

    def __init__(self, max_entries: int = 1024, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self._entries: OrderedDict[Hashable, CompiledTemplate] = OrderedDict()
        self._max = max_entries
        self._limits = limits
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def get(
        self, key: Hashable, fields: TemplateFields | Callable[[], TemplateFields]
    ) -> CompiledTemplate:
        """The compiled template for ``key``, compiling ``fields`` on a miss.

        ``fields`` may be a callable, so a caller only loads the sources from storage when
        the key is not cached. Raises what :func:`~.compile.compile_template` raises.
        """
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        compiled = compile_template(fields() if callable(fields) else fields, limits=self._limits)
        with self._lock:
            self._entries[key] = compiled
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return compiled

    def __len__(self) -> int:
        return len(self._entries)
