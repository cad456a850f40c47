"""What a bounce mailbox receives, parsed with the stdlib ``email`` package.

:func:`parse` reads one raw message and returns :class:`Finding`\\ s, one per recipient a
report speaks of, or none for anything else (an auto-reply, spam, garbage: ignored, never
an error):

- a delivery status notification (RFC 3464: ``multipart/report;
  report-type=delivery-status``, what Postfix, Exim, Haraka, Sendmail and Exchange send):
  per recipient, ``Action`` ``failed`` is a bounce, ``hard`` for a ``Status`` of 5.x.x and
  ``soft`` for 4.x.x (an MTA that gave up retrying); ``delayed`` is ``deferred``;
  ``delivered``/``relayed``/``expanded`` is ``delivered``. Without a ``Status`` the class is
  read from the ``Diagnostic-Code`` (an enhanced code, else the SMTP reply code); a failure
  of unknown class is hard. The reason is the ``Diagnostic-Code`` (one line).
- a feedback-loop report (ARF, RFC 5965: ``report-type=feedback-report``) of
  ``Feedback-Type`` ``abuse`` or ``fraud`` is a complaint about ``Original-Rcpt-To``.

Either kind quotes the original message (``message/rfc822`` or ``text/rfc822-headers``): its
``X-GetFluxly-Message-Id``, ``Message-ID`` and ``Return-Path`` are kept on the finding for
the join; so is the report's own ``Message-ID`` (a report delivered twice is recorded once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from typing import Any

#: The longest reason kept (the events table keeps text; a diagnostic is a line or two).
REASON_MAX = 500
#: ARF feedback types that are a recipient's complaint (``not-spam``, ``auth-failure``,
#: ``virus`` and ``other`` are not).
COMPLAINT_TYPES = frozenset({"abuse", "fraud"})
_ENHANCED = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_REPLY = re.compile(r"(?:^|;\s*|\s)([245])\d\d(?:[\s-]|$)")
_LEDGER_ID = re.compile(r"msg_[0-9a-z]{20}")


@dataclass(frozen=True)
class Original:
    """What a report quotes of the message it is about (the join's keys)."""

    getfluxly_id: str | None = None
    message_id: str | None = None
    return_path: str | None = None


@dataclass(frozen=True)
class Finding:
    """One recipient's outcome in one report. ``kind``: ``bounced`` | ``deferred`` |
    ``delivered`` | ``complained``; ``bounce_type`` ``hard`` | ``soft`` for bounces."""

    kind: str
    #: The recipient as the report names it (a DSN's Final-Recipient, an ARF report's
    #: Original-Rcpt-To), lower-cased; None when absent or redacted.
    recipient: str | None
    reason: str | None
    bounce_type: str | None = None
    status: str | None = None
    #: The report's own Message-ID (de-duplication of a report delivered twice).
    report_id: str | None = None
    original: Original = field(default_factory=Original)
    #: The VERP address the report names as the original's sender, if any (X-Postfix-Sender,
    #: ARF's Original-Mail-From).
    sender: str | None = None


def parse(raw: bytes) -> list[Finding]:
    """The findings of one received message (see the module doc); ``[]`` when it is not a
    report this mailbox understands. Never raises on malformed input."""
    try:
        message = BytesParser(policy=policy.compat32).parsebytes(raw)
        return _findings(message)
    except Exception:  # any mail may arrive: a broken one is ignored, never an error
        return []


def _findings(message: Message) -> list[Finding]:
    if message.get_content_type() != "multipart/report" or not message.is_multipart():
        return []
    report_type = str(message.get_param("report-type") or "").lower()
    parts = list(message.walk())
    original = _original(parts)
    report_id = _clean(message.get("Message-ID"))
    if report_type == "delivery-status":
        return _dsn(parts, original, report_id)
    if report_type == "feedback-report":
        return _arf(parts, original, report_id)
    return []


def _dsn(parts: list[Message], original: Original, report_id: str | None) -> list[Finding]:
    status_part = next(
        (p for p in parts if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        return []
    blocks = _blocks(status_part)
    if not blocks:
        return []
    per_message, recipients = blocks[0], blocks[1:]
    sender = _clean(per_message.get("X-Postfix-Sender") or per_message.get("Original-Envelope-Id"))
    found = []
    for block in recipients:
        action = (_clean(block.get("Action")) or "").lower()
        status = _clean(block.get("Status"))
        diagnostic = _one_line(block.get("Diagnostic-Code"))
        recipient = _address(block.get("Final-Recipient")) or _address(
            block.get("Original-Recipient")
        )
        klass = _class(status, diagnostic)
        if action == "failed":
            kind, bounce_type = "bounced", "soft" if klass == "4" else "hard"
        elif action == "delayed":
            kind, bounce_type = "deferred", None
        elif action in ("delivered", "relayed", "expanded"):
            kind, bounce_type = "delivered", None
        else:
            continue
        reason = diagnostic or (f"Status {status}" if status else None)
        found.append(
            Finding(
                kind=kind, recipient=recipient, reason=reason,
                bounce_type=bounce_type, status=status, report_id=report_id,
                original=original, sender=sender,
            )
        )  # fmt: skip
    return found


def _arf(parts: list[Message], original: Original, report_id: str | None) -> list[Finding]:
    report = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if report is None:
        return []
    fields = _fields_of(report)
    feedback_type = (_clean(fields.get("Feedback-Type")) or "").lower()
    if feedback_type not in COMPLAINT_TYPES:
        return []
    agent = _one_line(fields.get("User-Agent"))
    reason = f"feedback-type {feedback_type}" + (f" ({agent})" if agent else "")
    return [
        Finding(
            kind="complained", recipient=_address(fields.get("Original-Rcpt-To")),
            reason=reason[:REASON_MAX], report_id=report_id, original=original,
            sender=_clean(fields.get("Original-Mail-From")),
        )
    ]  # fmt: skip


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a ``message/delivery-status`` part (the parser splits them)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):  # a part the parser left as text (an odd encoding)
        text = payload.replace("\r\n", "\n")
        return [HeaderParser().parsestr(chunk) for chunk in re.split(r"\n\s*\n", text) if chunk]
    return []


def _fields_of(part: Message) -> Message:
    """The fields of a ``message/feedback-report`` part: the parser reads any ``message/*``
    part as an embedded message, whose headers they are."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    if isinstance(payload, str):
        return HeaderParser().parsestr(payload)
    return EmailMessage()


def _original(parts: list[Message]) -> Original:
    """The join keys of the quoted original (``message/rfc822`` or ``text/rfc822-headers``)."""
    for part in parts:
        kind = part.get_content_type()
        headers: Message | None = None
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                headers = payload[0]
        elif kind == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                headers = HeaderParser().parsestr(text.decode("utf-8", "replace"))
        if headers is None:
            continue
        ledger = _clean(headers.get("X-GetFluxly-Message-Id"))
        match = _LEDGER_ID.fullmatch(ledger or "")
        return Original(
            getfluxly_id=match.group(0) if match else None,
            message_id=(_clean(headers.get("Message-ID")) or "").strip("<>") or None,
            return_path=_clean(headers.get("Return-Path")),
        )
    return Original()


def _class(status: str | None, diagnostic: str | None) -> str | None:
    """``"5"``, ``"4"`` or ``"2"``: the Status's class, else the diagnostic's."""
    if status and status[:1] in "245" and status[1:2] == ".":
        return status[0]
    if diagnostic:
        found = _ENHANCED.search(diagnostic) or _REPLY.search(diagnostic)
        if found:
            return found.group(1)
    return None


def _clean(value: Any) -> str | None:
    """A header value as one trimmed line, or None."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _one_line(value: Any) -> str | None:
    text = _clean(value)
    if text is None:
        return None
    text = "".join(c for c in text if c.isprintable())
    return text[:REASON_MAX] or None


def _address(value: Any) -> str | None:
    """The address of an ``rfc822; ada@example.com`` field (or a bare ``<ada@...>``)."""
    text = _clean(value)
    if not text:
        return None
    kind, sep, rest = text.partition(";")
    address = rest if sep else kind
    if sep and kind.strip().lower() not in ("rfc822", "utf-8"):
        return None
    address = address.strip().strip("<>").strip()
    return address.lower() if "@" in address and " " not in address else None
