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


# Setting the slots through their descriptors: what the frozen dataclass's generated
# ``__init__`` does through ``object.__setattr__`` per field, without its Python frame or the
# attribute look-ups (a third of the cost; the pipelined stream makes one per message).
_new = object.__new__
_slots = vars(SendResult)  # the member descriptors (mypy sees the fields' defaults instead)
_set_accepted = _slots["accepted"].__set__
_set_refused = _slots["refused"].__set__
_set_reply = _slots["reply"].__set__


def send_result(
    accepted: tuple[str, ...], refused: Mapping[str, Reply], reply: Reply
) -> SendResult:
    """``SendResult(accepted=..., refused=..., reply=...)``, made faster: the same frozen
    value, equal to one made the usual way."""
    result: SendResult = _new(SendResult)
    _set_accepted(result, accepted)
    _set_refused(result, refused)
    _set_reply(result, reply)
    return result
