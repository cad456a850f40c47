"""The message ledger's front: recording messages (the API's transactional sends, and later
automations' and broadcasts'), reading the ledger, retrying by hand, scrubbing an erased
person's messages. The delivery workers (the back) claim what is recorded here.

Call these, in a transaction the caller opens:

* :func:`enqueue` (one message) and :func:`enqueue_many` (a broadcast's recipients, set-based),
  with keys from :func:`automation_key` / :func:`broadcast_key`;
* :func:`send` for the API's ``POST /v1/messages`` (its ``Idempotency-Key``), and
  :func:`writer`, the group commit the API records sends through;
* :func:`page`, :func:`detail`, :func:`retry` for the ledger API.

What a recorded message holds for the workers that send it: ``status`` ``queued`` and
``due_at`` now (``suppressed`` messages have no ``due_at`` and are never attempted); the
provider resolved; ``to_email``, and ``profile_id`` when a profile was named (its traits are
the template's ``profile``); ``data`` (the template's ``data``), ``tags``, ``transactional``;
either ``template_id`` with ``template_version`` (the version when it was queued) or inline
Liquid in ``subject``/``html``/``text``, never rendered here. An erasure turns a pending
message ``failed`` and sets ``erased_at``: a worker never sends a message with ``erased_at``
set, and records an outcome only on a message it still holds as it left it.

Modules: :mod:`.recipients` (who a message goes to), :mod:`.enqueue` (recording),
:mod:`.transactional` (the API's send), :mod:`.ledger` (reading, retrying),
:mod:`.erasure` (an erased person's messages), :mod:`.errors`.
"""

from getfluxly_server.domain.messages.addresses import canonical_address
from getfluxly_server.domain.messages.enqueue import (
    BulkRecipient,
    BulkResult,
    Content,
    Enqueued,
    NewMessage,
    Source,
    automation_key,
    broadcast_key,
    enqueue,
    enqueue_many,
)
from getfluxly_server.domain.messages.errors import (
    NoEmail,
    NoProvider,
    NotRetryable,
    ProfileErased,
)
from getfluxly_server.domain.messages.ledger import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Filters,
    MessageDetail,
    Page,
    detail,
    history,
    page,
    retry,
)
from getfluxly_server.domain.messages.recipients import Recipient
from getfluxly_server.domain.messages.transactional import Recorded, SendRequest, send, writer

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BulkRecipient",
    "BulkResult",
    "Content",
    "Enqueued",
    "Filters",
    "MessageDetail",
    "NewMessage",
    "NoEmail",
    "NoProvider",
    "NotRetryable",
    "Page",
    "ProfileErased",
    "Recipient",
    "Recorded",
    "SendRequest",
    "Source",
    "automation_key",
    "broadcast_key",
    "canonical_address",
    "detail",
    "enqueue",
    "enqueue_many",
    "history",
    "page",
    "retry",
    "send",
    "writer",
]
