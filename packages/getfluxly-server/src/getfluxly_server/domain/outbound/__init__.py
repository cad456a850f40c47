"""Outbound webhooks: a project's message events sent to its customers' own endpoints
(engine spec section 7, "Outbound").

- :mod:`.events`: the event types an endpoint subscribes to (``message.bounced``, ...) and
  the body each delivery carries.
- :mod:`.signing`: Standard Webhooks secrets (``whsec_<base64>``) and signatures.
- :mod:`.endpoints`: the endpoints' service (create, list, get, change, delete) and their
  delivery log.
- :mod:`.fanout`: :func:`~.fanout.queue_deliveries`, which ``domain.feedback.record`` calls
  with the rows it wrote: a delivery and a job per subscribed endpoint and event, set-based.
- :mod:`.sender`: the job kind that sends one delivery, signed, through the multi-tenant
  network guard, retried with capped, jittered backoff, every attempt logged.
"""
