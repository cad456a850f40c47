"""The bounce mailbox's SMTP server (aiosmtpd): what MTAs deliver DSNs and complaint
reports to.

With ``domain`` set, only recipients at that domain are accepted (``RCPT TO`` elsewhere:
``550``, so the listener never looks like a relay). Every message is accepted once stored
and parsed: a report that joins no message, an auto-reply, spam or garbage is ``250`` and
ignored (a refusal would only make the sending MTA bounce the bounce). A failure to record
(the database unreachable) is ``451``: the MTA keeps the report and tries again. Messages
larger than :data:`MAX_BYTES` are refused by size (``552``): reports are small.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.controller import Controller

from getfluxly_server.domain.bounce_mailbox.mailbox import receive
from getfluxly_server.storage.db import Database

log = logging.getLogger("getfluxly.bounces")

#: The largest message taken: a DSN quoting a whole original message stays well below.
MAX_BYTES = 10 * 1024 * 1024


class _Handler:
    def __init__(self, db: Database, domain: str | None) -> None:
        self.db = db
        self.domain = domain

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        at = address.rpartition("@")[2].lower().rstrip(".")
        if self.domain is not None and at != self.domain:
            return f"550 5.1.1 This server only receives bounces for {self.domain}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = bytes(envelope.original_content or envelope.content or b"")
        recipients = list(envelope.rcpt_tos)

        def store() -> tuple[int, int, int]:
            with self.db.transaction() as db_session:
                got = receive(db_session, raw, recipients, domain=self.domain)
            return got.findings, got.recorded, got.unmatched

        try:
            # The database blocks: keep the server's event loop free meanwhile.
            findings, recorded, unmatched = await asyncio.get_running_loop().run_in_executor(
                None, store
            )
        except Exception:
            log.exception("bounce mailbox: could not record a report; the sender will retry")
            return "451 4.3.0 Could not store the report now; try again later"
        log.info(
            "bounce mailbox: report with %d finding(s): %d recorded, %d matched no message",
            findings, recorded, unmatched,
        )  # fmt: skip
        return "250 2.0.0 OK"


class BounceListener:
    """The listener on ``host:port``, in a thread of its own between :meth:`start` and
    :meth:`stop`."""

    def __init__(self, db: Database, host: str, port: int, domain: str | None = None) -> None:
        self.host = host
        self._controller = Controller(
            _Handler(db, domain),
            hostname=host,
            port=port,
            ready_timeout=10.0,
            data_size_limit=MAX_BYTES,
            ident="GetFluxly bounce mailbox",
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> None:
        self._controller.start()

    def stop(self, timeout: float = 10.0) -> None:
        del timeout  # the controller's stop waits for its thread itself
        self._controller.stop()
