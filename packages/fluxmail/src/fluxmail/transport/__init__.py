"""The sync and async shells: the only code in FluxMail that touches sockets.

Each runs the conversations of :mod:`fluxmail.protocol.session`; they differ only in how they
wait, so they cannot drift apart in what they say to a server.
"""

from fluxmail.transport.aio import AsyncConnection
from fluxmail.transport.base import ConnectionSettings
from fluxmail.transport.sync import SyncConnection

__all__ = ["AsyncConnection", "ConnectionSettings", "SyncConnection"]
