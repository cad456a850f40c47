"""Job handlers that deliver mail: run by workers, composed with their dependencies."""

from __future__ import annotations

from typing import Any

from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import BuildContext, DeliveryError
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.providers import TEST_SEND, TestSend, draft_of, test_email
from getfluxly_server.queue.kinds import JobHandler
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import EmailProvider


def handlers(db: Database, keyring: Keyring, context: BuildContext) -> list[JobHandler[Any]]:
    """The delivery handlers, bound to this process's database and keys."""

    def test_send(payload: TestSend) -> dict[str, Any]:
        # A test send reports its outcome to the person waiting for it; it is never retried
        # behind their back (they can press the button again).
        with db.read() as session:
            row = session.get(EmailProvider, payload.provider_id)
            if row is None:
                return {"accepted": False, "error": "not_found", "detail": "Provider was deleted"}
            try:
                draft = draft_of(row, keyring)
            except DomainError as exc:
                return {"accepted": False, "error": exc.code, "detail": exc.detail}
        try:
            result = draft.client(context).send(test_email(draft, payload.to))
        except DeliveryError as exc:
            return {"accepted": False, "error": exc.code, "detail": exc.detail}
        return {
            "accepted": True,
            "reply": result.reply,
            "provider_message_id": result.provider_message_id,
            "elapsed_ms": result.elapsed_ms,
        }

    return [TEST_SEND.handler(test_send)]
