"""The bounce mailbox: GetFluxly's own SMTP listener for relays without webhooks (Postfix,
Haraka, Exim), set as the MX of the VERP return paths' domain.

- :mod:`.verp`: the return path ``bounces+<message id>@<domain>`` SMTP providers send with
  when ``GETFLUXLY_BOUNCE_DOMAIN`` is set, and reading the id back.
- :mod:`.reports`: parsing what arrives (stdlib ``email``): delivery status notifications
  (RFC 3464 ``multipart/report; report-type=delivery-status``) and feedback-loop complaints
  (ARF, RFC 5965, ``report-type=feedback-report``) into :class:`~.reports.Finding`s.
- :mod:`.mailbox`: joining findings to ledger messages (by VERP id, else the returned
  original's ``X-GetFluxly-Message-Id`` or ``Message-ID``) and recording them through
  ``domain.feedback.record`` (source ``bounce_mailbox``).
- :mod:`.listener`: the aiosmtpd server (``getfluxly bounces --listen``, or inside ``serve``
  with ``GETFLUXLY_BOUNCE_LISTEN``).
"""
