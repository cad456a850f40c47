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

from fluxmail.errors import (
    FluxMailException,
    RecipientsRefused,
    SMTPConnectError,
    SMTPReplyError,
    SMTPTimeoutError,
)
from fluxmail.protocol.commands import CRLF, Envelope, Extensions, command, mail_from, rcpt_to
from fluxmail.protocol.data import END_OF_DATA, DataReady, data_body
from fluxmail.protocol.ops import Conversation, Exchange, exchange
from fluxmail.protocol.replies import Reply
from fluxmail.result import SendResult, send_result

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


# What a message's preparation and its envelope replies produce are plain tuples, made once
# per message in a pipelined stream: a class instance (even a slotted one) costs a Python
# ``__init__`` frame each.

#: A message ready for the wire: its envelope commands (MAIL, the RCPTs, DATA), how many
#: replies they get, and its content (normalised and stuffed, not yet terminated: see
#: :func:`data_body`).
_Prepared = tuple[bytes, int, bytes]

#: What the envelope replies decided: who is accepted, who is refused (and how), and the
#: error if nothing can go.
_Verdict = tuple[tuple[str, ...], dict[str, Reply], SMTPReplyError | None]


def _prepare(envelope: Envelope, message: bytes, extensions: Extensions) -> _Prepared:
    body = message if type(message) is DataReady else data_body(message)  # (no call if ready)
    size = len(body) + len(END_OF_DATA)
    flags = extensions.flags
    limit = flags.max_size
    if limit is not None and size > limit:
        raise SMTPReplyError(
            f"Message of {size} bytes exceeds the server's SIZE limit of {limit}",
            Reply(552, ("5.3.4 Message size exceeds fixed maximum message size",)),
            "MAIL FROM",
        )
    # DataReady content is 7-bit by its contract: no scan of the whole message for 8-bit bytes.
    eight_bit = type(message) is not DataReady and not message.isascii()
    first = mail_from(envelope, extensions, size, eight_bit=eight_bit)
    recipients, notify = envelope.recipients, envelope.notify
    if len(recipients) == 1:  # the common case, without a generator
        commands = first + rcpt_to(recipients[0], extensions, notify) + DATA
    else:
        commands = b"".join([first, *(rcpt_to(a, extensions, notify) for a in recipients), DATA])
    return commands, len(recipients) + 2, body


def _judge(envelope: Envelope, replies: Sequence[Reply], first: int) -> _Verdict:
    """Judge the envelope replies ``replies[first:]``: MAIL, one per RCPT, then DATA."""
    mail, data = replies[first], replies[-1]
    if data.code == 354 and 200 <= mail.code < 400:
        for index in range(first + 1, len(replies) - 1):
            if not 200 <= replies[index].code < 400:
                break
        else:  # everyone accepted: the common case, without pairing anything up
            return envelope.recipients, {}, None
    rcpts = replies[first + 1 : -1]
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
    return accepted, refused, error


def _finish(verdict: _Verdict, final: Reply) -> SendResult:
    if not 200 <= final.code < 400:  # (the same test and error in _settle)
        raise SMTPReplyError(f"Server rejected the message: {final}", final, "DATA")
    return send_result(verdict[0], verdict[1], final)


def send_message(
    envelope: Envelope, message: bytes, extensions: Extensions
) -> Conversation[SendResult]:
    """One mail transaction. A partial refusal is a result; a total one raises.

    After a failed transaction the caller should RSET before reusing the connection.
    """
    commands, expected, body = _prepare(envelope, message, extensions)
    if extensions.flags.pipelining:
        replies = yield Exchange(commands, expected)
    else:
        # One command at a time: the same lines, split where each one ends.
        lines = commands.split(CRLF)[:-1]
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
    if (error := verdict[2]) is not None:
        if data.code == 354:
            # A pipelining server may accept DATA although nothing before it succeeded; close
            # the empty transaction rather than send the message to nobody.
            yield from exchange(END_OF_EMPTY_DATA)
        raise error
    try:
        final = yield from exchange(body + END_OF_DATA)
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

    # Bytes to write ahead of the next envelope: the previous message's content (then its
    # terminator, ``end``, written in the same join: one copy of the content fewer), or a
    # transaction's closing (an empty DATA's dot, RSET); and what each of their replies
    # settles: an item's final reply, or None for one to ignore.
    ahead, end = b"", b""
    settles: list[tuple[int, _Verdict] | None] = []
    for index, (envelope, message) in enumerate(items):
        try:
            commands, expected, body = _prepare(envelope, message, extensions)
        except FluxMailException as exc:
            outcomes[index] = exc
            continue
        pending = len(settles)
        try:
            replies = yield Exchange(b"".join((ahead, end, commands)), pending + expected)
        except FluxMailException as exc:  # thrown in by the transport: see the module doc
            _unconfirm(settles, outcomes, exc)
            raise
        # The steady state, settled without the calls to _settle and _judge: one message's
        # content was pending and went through, one recipient, MAIL and RCPT accepted, 354.
        if (
            pending == 1
            and expected == 3
            and (previous := settles[0]) is not None
            and 200 <= (final := replies[0]).code < 400
            and replies[3].code == 354
            and 200 <= replies[1].code < 400
            and 200 <= replies[2].code < 400
        ):
            accepted, refused, _ = previous[1]
            outcomes[previous[0]] = send_result(accepted, refused, final)
            ahead, end, settles = body, END_OF_DATA, [(index, (envelope.recipients, {}, None))]
            continue
        if pending:
            _settle(settles, replies, outcomes)
        verdict = _judge(envelope, replies, pending)
        if (error := verdict[2]) is None:
            ahead, end, settles = body, END_OF_DATA, [(index, verdict)]
            continue
        outcomes[index] = error
        ahead, end, settles = b"", b"", []
        if replies[-1].code == 354:
            ahead, settles = END_OF_EMPTY_DATA, [None]
        if replies[pending].ok:  # a transaction was opened: close it before the next MAIL
            ahead, settles = ahead + RSET, [*settles, None]
    if ahead:
        try:
            last = yield Exchange(ahead + end, len(settles))
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
            index, (accepted, refused, _) = pending
            if 200 <= reply.code < 400:  # _finish's test, without its frame and try block
                outcomes[index] = send_result(accepted, refused, reply)
            else:
                outcomes[index] = SMTPReplyError(
                    f"Server rejected the message: {reply}", reply, "DATA"
                )
