"""Delivery workers: the back of the message ledger (engine spec section 2).

The message row is the queue. A worker claims due rows in batches, checks and renders them,
hands them to the provider in chunks and records every outcome; no message is lost and none
is sent twice behind the ledger's back, whatever moment a worker dies at.

The state machine (``status``; ``due_at`` is when a worker may next take the row, and while a
worker holds it, the end of its lease):

```
 queued / deferred --claim--> (same status, locked_by=worker, due_at=lease end)
      |                              |              |                 |
      |                              |   suppressed address or erased profile -> suppressed
      |                              |   no provider, template gone or unrenderable -> failed
      |                              |              |
      |                              |   worker stops / rate limit says wait: handed back
      |                              |   (locked_by NULL, due now or when the limit allows)
      |                              |
      |  lease lapses (worker died   |   committed just before the bytes go out
      |  before sending): claimable  v
      +<-------------------------- sending (attempts + 1, due_at = lease end)
                                     |
        relay accepted ------------> sent      (reply, queue id, Message-ID recorded)
        4xx / timeout / network ---> deferred  (due after capped full-jitter backoff;
                                                failed once older than the maximum age)
        5xx / refused for good ----> failed
        lost after the data -------> unknown   (never resent automatically)
        lease lapsed in sending ---> unknown   (the next claim finds it; the worker may have
                                                handed it over: never resent automatically)
```

So a worker killed at any moment leaves its rows either waiting (claimed, not yet marked
``sending``: another worker takes them once the lease lapses, nothing lost) or ``sending``
(possibly on the relay: they become ``unknown``, nothing doubled). The window where a
message may become ``unknown`` without having been sent is one chunk (``chunk`` messages)
between its ``sending`` commit and its outcome commit. A worker that was only slow, not
dead, still records its real outcome over the ``unknown``.

Modules: :mod:`.compose` (checks and rendering), :mod:`.classify` (answers -> statuses and
retry times), :mod:`.gate` (providers' limits, the port a shared limiter plugs into),
:mod:`.dispatcher` (the threads and the loop); the SQL is :mod:`getfluxly_server.storage.outbox`.
"""

from getfluxly_server.domain.delivery.classify import RetryRules
from getfluxly_server.domain.delivery.dispatcher import Dispatcher
from getfluxly_server.domain.delivery.gate import LocalSendGate, ProviderLimits, SendGate

__all__ = ["Dispatcher", "LocalSendGate", "ProviderLimits", "RetryRules", "SendGate"]
