"""Mail transactions: one message (:func:`send_message`) or a stream (:func:`send_pipelined`).

With PIPELINING (RFC 2920) a transaction's MAIL, RCPTs and DATA go out in one write. A stream
goes further: each message's content is written together with the next message's MAIL, RCPTs
and DATA ("message content is allowed to be the first command in a group"), so a steady
stream costs one round trip per message instead of two (or four without pipelining).

When the transport fails while a message's content is on its way (written, or written and its
final reply awaited), nobody knows whether the server took the message. The transport throws
its error into the conversation at the ``yield`` that was waiting; the conversations here turn
it into an :class:`Unconfirmed` error for exactly the messages concerned, so a caller that must
never send a message twice can tell "not sent" from "perhaps sent".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fluxmail.errors import (
    FluxMailException,
    RecipientsRefused,
    SMTPConnectError,
    SMTPReplyError,
    SMTPTimeoutError,
)
from fluxmail.protocol.commands import CRLF, Envelope, Extensions, command, mail_from, rcpt_to
from fluxmail.protocol.data import encode_data
from fluxmail.protocol.ops import Conversation, Exchange, exchange
from fluxmail.protocol.replies import Reply
from fluxmail.result import SendResult

DATA = command("DATA")
RSET = command("RSET")
END_OF_EMPTY_DATA = b".\r\n"

Outcome = SendResult | FluxMailException


class Unconfirmed(FluxMailException):
    """Marks an error that struck after a message's content was sent and before the server's
    final reply to it: the server may have accepted (and may deliver) the message.

    The error keeps its class and code (``connection_lost``, ``timeout``...), so FluxMail's own
    retries treat it as the broken connection it is and send again (at least once). A caller
    that must never send a message twice (a ledger) sends with ``max_retries=0`` and treats
    ``isinstance(exc, Unconfirmed)`` as "outcome unknown", never to be resent automatically.
    """


class UnconfirmedConnectError(SMTPConnectError, Unconfirmed):
    """The connection broke after the message's content was sent (see :class:`Unconfirmed`)."""


class UnconfirmedTimeoutError(SMTPTimeoutError, Unconfirmed):
    """The server's final reply did not come in time (see :class:`Unconfirmed`)."""


def unconfirmed(error: FluxMailException) -> FluxMailException:
    """``error`` (a transport failure) marked :class:`Unconfirmed`, its code kept, chained."""
    if isinstance(error, Unconfirmed | SMTPReplyError):
        return error
    timed_out = isinstance(error, SMTPTimeoutError)
    kind = UnconfirmedTimeoutError if timed_out else UnconfirmedConnectError
    marked = kind(
        f"{error} (after the message was sent: the server may have accepted it)", error.code
    )
    marked.__cause__ = error
    return marked


# _Prepared and _Verdict are made per message and never shared: not frozen, since a frozen
# dataclass sets each field through object.__setattr__.
@dataclass(slots=True)
class _Prepared:
    """A message ready for the wire: its envelope commands (MAIL, the RCPTs, DATA: what
    :attr:`replies` replies answer) and its stuffed payload."""

    commands: bytes
    replies: int
    payload: bytes


def _prepare(envelope: Envelope, message: bytes, extensions: Extensions) -> _Prepared:
    payload = encode_data(message)
    limit = extensions.max_size
    if limit is not None and len(payload) > limit:
        raise SMTPReplyError(
            f"Message of {len(payload)} bytes exceeds the server's SIZE limit of {limit}",
            Reply(552, ("5.3.4 Message size exceeds fixed maximum message size",)),
            "MAIL FROM",
        )
    first = mail_from(envelope, extensions, len(payload), eight_bit=not message.isascii())
    recipients, notify = envelope.recipients, envelope.notify
    if len(recipients) == 1:  # the common case, without a generator
        commands = first + rcpt_to(recipients[0], extensions, notify) + DATA
    else:
        commands = b"".join([first, *(rcpt_to(a, extensions, notify) for a in recipients), DATA])
    return _Prepared(commands, len(recipients) + 2, payload)


@dataclass(slots=True)
class _Verdict:
    """What the envelope replies decided: who is accepted, and the error if nothing can go."""

    accepted: tuple[str, ...]
    refused: dict[str, Reply]
    error: SMTPReplyError | None


def _judge(envelope: Envelope, replies: Sequence[Reply], first: int) -> _Verdict:
    """Judge the envelope replies ``replies[first:]``: MAIL, one per RCPT, then DATA."""
    mail, data = replies[first], replies[-1]
    rcpts = replies[first + 1 : -1]
    if data.code == 354 and 200 <= mail.code < 400:
        for reply in rcpts:
            if not 200 <= reply.code < 400:
                break
        else:  # everyone accepted: the common case, without pairing anything up
            return _Verdict(envelope.recipients, {}, None)
    pairs = list(zip(envelope.recipients, rcpts, strict=True))
    accepted = tuple(a for a, r in pairs if r.ok)
    refused = {a: r for a, r in pairs if not r.ok}
    error: SMTPReplyError | None = None
    if not mail.ok:
        error = SMTPReplyError(f"Server refused the sender: {mail}", mail, "MAIL")
    elif not accepted:
        error = RecipientsRefused(refused)
    elif data.code != 354:
        error = SMTPReplyError(f"Server refused DATA: {data}", data, "DATA")
    return _Verdict(accepted, refused, error)


def _finish(verdict: _Verdict, final: Reply) -> SendResult:
    if not final.ok:
        raise SMTPReplyError(f"Server rejected the message: {final}", final, "DATA")
    return SendResult(accepted=verdict.accepted, refused=verdict.refused, reply=final)


def send_message(
    envelope: Envelope, message: bytes, extensions: Extensions
) -> Conversation[SendResult]:
    """One mail transaction. A partial refusal is a result; a total one raises.

    After a failed transaction the caller should RSET before reusing the connection.
    """
    prepared = _prepare(envelope, message, extensions)
    if extensions.flags.pipelining:
        replies = yield Exchange(prepared.commands, prepared.replies)
    else:
        # One command at a time: the same lines, split where each one ends.
        lines = prepared.commands.split(CRLF)[:-1]
        mail = yield from exchange(lines[0] + CRLF)
        if not mail.ok:
            raise SMTPReplyError(f"Server refused the sender: {mail}", mail, "MAIL")
        answers = [mail]
        for rcpt in lines[1:-1]:
            answers.append((yield from exchange(rcpt + CRLF)))
        no_one = Reply(554, ("5.5.1 No valid recipients",))
        data = (yield from exchange(DATA)) if any(r.ok for r in answers[1:]) else no_one
        replies = [*answers, data]
    data = replies[-1]
    verdict = _judge(envelope, replies, 0)
    if verdict.error is not None:
        if data.code == 354:
            # A pipelining server may accept DATA although nothing before it succeeded; close
            # the empty transaction rather than send the message to nobody.
            yield from exchange(END_OF_EMPTY_DATA)
        raise verdict.error
    try:
        final = yield from exchange(prepared.payload)
    except FluxMailException as exc:  # thrown in by the transport: see the module doc
        marked = unconfirmed(exc)
        if marked is exc:
            raise
        raise marked  # noqa: B904 - chained to ``exc`` by unconfirmed()
    return _finish(verdict, final)


def send_pipelined(
    items: Sequence[tuple[Envelope, bytes]],
    extensions: Extensions,
    outcomes: dict[int, Outcome],
) -> Conversation[None]:
    """Send every item on one session, one round trip per message where the server pipelines.

    Each item's outcome (a :class:`SendResult`, or the :class:`SMTPReplyError` that refused
    it) is stored in ``outcomes`` under its index as soon as it is known, so if the connection
    breaks midway the caller knows exactly which messages are settled and which to send again.
    """
    if not extensions.flags.pipelining:
        for index, (envelope, message) in enumerate(items):
            try:
                outcomes[index] = yield from send_message(envelope, message, extensions)
            except SMTPReplyError as exc:
                outcomes[index] = exc
                yield from exchange(RSET)
            except Unconfirmed as exc:
                outcomes[index] = exc
                # The rest were not sent: they get the transport's own error.
                cause = exc.__cause__
                raise cause if isinstance(cause, FluxMailException) else exc  # noqa: B904
        return

    # Bytes to write ahead of the next envelope (the previous payload, a RSET...), and what
    # each of their replies settles: an item's final reply, or None for one to ignore.
    ahead = b""
    settles: list[tuple[int, _Verdict] | None] = []
    for index, (envelope, message) in enumerate(items):
        try:
            prepared = _prepare(envelope, message, extensions)
        except FluxMailException as exc:
            outcomes[index] = exc
            continue
        pending = len(settles)
        try:
            replies = yield Exchange(ahead + prepared.commands, pending + prepared.replies)
        except FluxMailException as exc:  # thrown in by the transport: see the module doc
            _unconfirm(settles, outcomes, exc)
            raise
        if pending:
            _settle(settles, replies, outcomes)
        verdict = _judge(envelope, replies, pending)
        if verdict.error is None:
            ahead, settles = prepared.payload, [(index, verdict)]
            continue
        outcomes[index] = verdict.error
        ahead, settles = b"", []
        if replies[-1].code == 354:
            ahead, settles = END_OF_EMPTY_DATA, [None]
        if replies[pending].ok:  # a transaction was opened: close it before the next MAIL
            ahead, settles = ahead + RSET, [*settles, None]
    if ahead:
        try:
            last = yield Exchange(ahead, len(settles))
        except FluxMailException as exc:  # thrown in by the transport: see the module doc
            _unconfirm(settles, outcomes, exc)
            raise
        _settle(settles, last, outcomes)


def _unconfirm(
    settles: list[tuple[int, _Verdict] | None],
    outcomes: dict[int, Outcome],
    error: FluxMailException,
) -> None:
    """The transport failed while the content of the messages in ``settles`` was on its way:
    those are :class:`Unconfirmed` (the others, not yet sent, are left to the caller, which
    settles them with the transport's own error)."""
    for pending in settles:
        if pending is not None:
            outcomes[pending[0]] = unconfirmed(error)


def _settle(
    settles: list[tuple[int, _Verdict] | None],
    replies: Sequence[Reply],
    outcomes: dict[int, Outcome],
) -> None:
    """Settle ``settles`` with the first of ``replies`` (one each, in order)."""
    for pending, reply in zip(settles, replies, strict=False):
        if pending is not None:
            index, verdict = pending
            try:
                outcomes[index] = _finish(verdict, reply)
            except SMTPReplyError as exc:
                outcomes[index] = exc
