"""The event loop FluxMail runs when the loop is its own to choose.

Where the caller owns the loop (``send_async``, ``async_pool``, ``send_batch_async``), FluxMail
runs on whatever loop that is: the default asyncio loop, or uvloop if the application chose it
(``uvloop.run(main())``). Where FluxMail starts a loop itself, in the worker processes of
``BulkSender.send_rows(processes=N)`` and so of ``fluxmail bulk --processes N``, it takes
uvloop when it is installed (``pip install 'fluxmail[speed]'``): the same conversations, the
loop's own reading, writing and scheduling in C (somewhat less CPU per message, see
``bench/README.md``); nothing else changes.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_available() -> bool:
    """Whether uvloop can be imported (the ``speed`` extra; not on Windows)."""
    return importlib.util.find_spec("uvloop") is not None


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop's loop when uvloop is installed."""
    if uvloop_available():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
