"""Broadcasts (engine spec section 5): a template sent to a segment's members, snapshotted
when it starts, now or at ``send_at``, at a rate; paused, resumed and cancelled without
anyone mailed twice.

Modules: :mod:`.service` (the API's actions and the counts), :mod:`.runner` (the worker's
runner that starts scheduled broadcasts and records messages a slice at a time),
:mod:`.pace` (the rate's token bucket), :mod:`.errors`.
"""

from getfluxly_server.domain.broadcasts.errors import InvalidTransition
from getfluxly_server.domain.broadcasts.runner import BroadcastRunner, advance
from getfluxly_server.domain.broadcasts.service import (
    CHANGEABLE,
    BroadcastPage,
    Counts,
    begin,
    cancel,
    counts,
    create,
    find,
    page,
    pause,
    resume,
    start,
    update,
)

__all__ = [
    "CHANGEABLE",
    "BroadcastPage",
    "BroadcastRunner",
    "Counts",
    "InvalidTransition",
    "advance",
    "begin",
    "cancel",
    "counts",
    "create",
    "find",
    "page",
    "pause",
    "resume",
    "start",
    "update",
]
