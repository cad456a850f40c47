"""What one send produced: who was accepted, who was refused and why, and the relay's answer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fluxmail.protocol.replies import Reply

# Postfix and most others: "queued as 4Fz1"; Exim: "OK id=1rAbc-000". Nothing else is guessed.
_QUEUE_ID = re.compile(r"(?:queued as|\bid=)\s*<?([A-Za-z0-9._@-]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one accepted message.

    ``accepted`` lists the envelope recipients the relay took; ``refused`` maps each refused
    one to the reply that refused it (a partial refusal is a result, not an exception);
    ``reply`` is the relay's final answer to the message, which usually carries its queue id.
    """

    accepted: tuple[str, ...]
    refused: Mapping[str, Reply] = field(default_factory=dict)
    reply: Reply = field(default_factory=lambda: Reply(250, ("OK",)))

    @property
    def queue_id(self) -> str | None:
        """The relay's queue id when its final reply names one (best effort)."""
        match = _QUEUE_ID.search(self.reply.text)
        return match.group(1) if match else None
