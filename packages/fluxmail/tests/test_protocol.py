"""The protocol core without sockets: replies, commands, DATA encoding and conversations."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from fluxmail.errors import AuthError, RecipientsRefused, SMTPReplyError, TLSError
from fluxmail.protocol.commands import (
    CommandInjectionError,
    Envelope,
    Extensions,
    command,
    envelope_address,
)
from fluxmail.protocol.data import CRLFBytes, DataReady, encode_data
from fluxmail.protocol.ops import Conversation, Credentials, Exchange, UpgradeTLS
from fluxmail.protocol.replies import ProtocolError, Reply, ReplyParser
from fluxmail.protocol.session import SessionPlan, open_session
from fluxmail.protocol.transaction import send_message, send_pipelined


def parse_all(data: bytes) -> list[Reply]:
    parser = ReplyParser()
    parser.feed(data)
    replies = []
    while (reply := parser.next_reply()) is not None:
        replies.append(reply)
    return replies


class TestReplies:
    def test_multiline_reply(self) -> None:
        (reply,) = parse_all(b"250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 100\r\n")
        assert reply.code == 250
        assert reply.lines == ("mx.example.com", "PIPELINING", "SIZE 100")

    def test_reply_split_across_reads(self) -> None:
        parser = ReplyParser()
        for chunk in (b"22", b"0 ready\r", b"\n250 o", b"k\n"):
            parser.feed(chunk)
        first, second = parser.next_reply(), parser.next_reply()
        assert first == Reply(220, ("ready",))
        assert second == Reply(250, ("ok",))
        assert parser.next_reply() is None
        assert not parser.pending

    def test_pending_after_partial_data(self) -> None:
        parser = ReplyParser()
        parser.feed(b"220 go ahead\r\n250 injected")
        assert parser.next_reply() == Reply(220, ("go ahead",))
        assert parser.pending

    def test_enhanced_status_code(self) -> None:
        assert Reply(550, ("5.1.1 No such user",)).enhanced == "5.1.1"
        assert Reply(250, ("Ok",)).enhanced is None
        assert Reply(451, ("4.3.0 try later",)).transient

    @pytest.mark.parametrize(
        "data", [b"hello\r\n", b"25 short\r\n", b"250xbad\r\n", b"250-a\r\n251 b\r\n"]
    )
    def test_malformed_replies_raise(self, data: bytes) -> None:
        with pytest.raises(ProtocolError):
            parse_all(data)

    def test_endless_line_is_refused(self) -> None:
        with pytest.raises(ProtocolError):
            ReplyParser().feed(b"2" * 100_000)

    def test_take_reads_several_replies_at_once(self) -> None:
        parser = ReplyParser()
        parser.feed(b"250 2.1.0 Ok\r\n250-a\r\n250 b\r\n354 go")
        assert parser.take(3) == [Reply(250, ("2.1.0 Ok",)), Reply(250, ("a", "b"))]
        assert parser.pending
        parser.feed(b" ahead\r\n221 bye\r\n")
        assert parser.take(1) == [Reply(354, ("go ahead",))]
        assert parser.take(5) == [Reply(221, ("bye",))]
        assert not parser.pending

    def test_take_leaves_the_replies_it_was_not_asked_for(self) -> None:
        # Whole known lines take one split, but never more replies than asked for, and a
        # line never seen before, or a multiline reply, goes through the line-by-line path.
        parse_all(b"250 2.1.0 Ok\r\n354 go\r\n")  # now known
        parser = ReplyParser()
        parser.feed(b"250 2.1.0 Ok\r\n354 go\r\n250 2.1.0 Ok\r\n")
        assert parser.take(2) == [Reply(250, ("2.1.0 Ok",)), Reply(354, ("go",))]
        assert parser.pending
        assert parser.take(2) == [Reply(250, ("2.1.0 Ok",))]
        assert not parser.pending
        parser.feed(b"250 2.1.0 Ok\r\n250-first\r\n250 second\r\n251 never seen 1f3a\r\n")
        assert parser.take(3) == [
            Reply(250, ("2.1.0 Ok",)),
            Reply(250, ("first", "second")),
            Reply(251, ("never seen 1f3a",)),
        ]
        assert not parser.pending

    def test_recurring_one_line_replies_are_shared(self) -> None:
        # Replies are immutable, so a line seen before may come back as the same object.
        first, second = parse_all(b"250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n")
        assert first == second == Reply(250, ("2.1.5 Ok",))
        assert first is second


class TestData:
    def test_line_endings_become_crlf(self) -> None:
        assert encode_data(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n.\r\n"

    def test_crlf_bytes_skip_normalising_only_while_unchanged(self) -> None:
        # FluxMail's writer marks its output CRLF throughout; anything made from it (a header
        # added, a signature) is plain bytes again and normalised as always.
        built = CRLFBytes(b"Subject: x\r\n\r\n.hi\r\n")
        assert encode_data(built) == b"Subject: x\r\n\r\n..hi\r\n.\r\n"
        changed = built + b"\n.\r\nMAIL FROM:<evil@example.com>\r\n"
        assert type(changed) is bytes
        wire = encode_data(changed)
        assert wire.count(b"\r\n.\r\n") == 1
        assert b"\n" not in wire.replace(b"\r\n", b"")

    def test_leading_dots_are_stuffed(self) -> None:
        assert encode_data(b".first\r\n.\r\nx") == b"..first\r\n..\r\nx\r\n.\r\n"

    @pytest.mark.parametrize("smuggle", [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r", b"\r\n.\r\n"])
    def test_no_early_end_of_data(self, smuggle: bytes) -> None:
        # Whatever line endings hide the dot, the only CRLF.CRLF is the terminator we add.
        wire = encode_data(b"Hi" + smuggle + b"MAIL FROM:<evil@example.com>\r\n")
        assert wire.count(b"\r\n.\r\n") == 1
        assert wire.endswith(b"\r\n.\r\n")
        assert b"\n" not in wire.replace(b"\r\n", b"")
        assert b"\r" not in wire.replace(b"\r\n", b"")


class TestCommands:
    @pytest.mark.parametrize("arg", ["a\r\nRSET", "a\nb", "a\rb", "a\x00b", "a\u2028b"])
    def test_control_characters_refused(self, arg: str) -> None:
        with pytest.raises(CommandInjectionError):
            command("RCPT", f"TO:<{arg}>")

    def test_ehlo_extensions(self) -> None:
        ext = Extensions.from_ehlo(
            ["mx", "PIPELINING", "SIZE 1000", "AUTH=LOGIN PLAIN", "starttls", "8BITMIME"]
        )
        assert ext.has("STARTTLS")
        assert ext.auth_mechanisms == {"LOGIN", "PLAIN"}
        assert ext.max_size == 1000

    def test_idna_domain_in_envelope(self) -> None:
        assert envelope_address("user@bücher.example", smtputf8=False) == (
            "user@xn--bcher-kva.example"
        )

    def test_utf8_local_part_needs_smtputf8(self) -> None:
        assert envelope_address("jörg@example.com", smtputf8=True) == "jörg@example.com"
        with pytest.raises(Exception, match="SMTPUTF8") as info:
            envelope_address("jörg@example.com", smtputf8=False)
        assert getattr(info.value, "code", None) == "invalid_email"

    @pytest.mark.parametrize("address", ["a>b@example.com", "a b@example.com", "a@b\r\n"])
    def test_envelope_address_injection(self, address: str) -> None:
        with pytest.raises(CommandInjectionError):
            envelope_address(address, smtputf8=False)


class ScriptedPeer:
    """Plays a server: answers each Exchange with the next scripted replies."""

    def __init__(self, *replies: str) -> None:
        self.replies = [parse_all(r.encode() + b"\r\n")[0] for r in replies]
        self.writes: list[bytes] = []
        self.upgraded = False

    def run(self, conversation: Conversation[Any]) -> Any:
        try:
            op = next(conversation)
            while True:
                if isinstance(op, UpgradeTLS):
                    self.upgraded = True
                    op = conversation.send(())
                    continue
                assert isinstance(op, Exchange)
                self.writes.append(op.data)
                answer = tuple(self.replies.pop(0) for _ in range(op.replies))
                op = conversation.send(answer)
        except StopIteration as done:
            return done.value

    @property
    def lines(self) -> list[str]:
        return [line for w in self.writes for line in w.decode().split("\r\n") if line]


EHLO_TLS = "250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN"
CREDS = Credentials("user@example.com", "s3cret-pass")


class TestSession:
    def test_starttls_then_auth(self) -> None:
        peer = ScriptedPeer("220 hi", EHLO_TLS, "220 go", "250-mx\r\n250 AUTH PLAIN", "235 ok")
        info = peer.run(open_session(SessionPlan("client", "starttls", CREDS)))
        assert peer.upgraded
        assert info.tls
        assert info.auth_mechanism == "PLAIN"
        token = base64.b64encode(b"\0user@example.com\0s3cret-pass").decode()
        assert peer.lines == ["EHLO client", "STARTTLS", "EHLO client", f"AUTH PLAIN {token}"]

    def test_missing_starttls_is_an_error_not_a_plaintext_login(self) -> None:
        peer = ScriptedPeer("220 hi", "250-mx\r\n250 AUTH PLAIN")
        with pytest.raises(TLSError) as info:
            peer.run(open_session(SessionPlan("client", "starttls", CREDS)))
        assert info.value.code == "starttls_not_advertised"
        assert not any(line.startswith("AUTH") for line in peer.lines)

    def test_no_password_over_plaintext(self) -> None:
        peer = ScriptedPeer("220 hi", "250-mx\r\n250 AUTH PLAIN")
        with pytest.raises(AuthError) as info:
            peer.run(open_session(SessionPlan("client", "none", CREDS)))
        assert info.value.code == "auth_requires_tls"
        assert "s3cret" not in str(info.value)
        assert not any(line.startswith("AUTH") for line in peer.lines)

    def test_login_mechanism(self) -> None:
        peer = ScriptedPeer(
            "220 hi", "250-mx\r\n250 AUTH LOGIN", "334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 ok"
        )
        info = peer.run(open_session(SessionPlan("c", "ssl", CREDS)))
        assert info.auth_mechanism == "LOGIN"
        assert peer.lines[1:] == [
            "AUTH LOGIN",
            base64.b64encode(b"user@example.com").decode(),
            base64.b64encode(b"s3cret-pass").decode(),
        ]

    def test_wrong_password(self) -> None:
        peer = ScriptedPeer("220 hi", "250-mx\r\n250 AUTH PLAIN", "535 5.7.8 bad credentials")
        with pytest.raises(AuthError) as info:
            peer.run(open_session(SessionPlan("c", "ssl", CREDS)))
        assert info.value.code == "auth_failed"
        assert "s3cret" not in str(info.value)

    def test_temporary_auth_failure_is_transient(self) -> None:
        peer = ScriptedPeer("220 hi", "250-mx\r\n250 AUTH PLAIN", "454 4.7.0 try later")
        with pytest.raises(SMTPReplyError) as info:
            peer.run(open_session(SessionPlan("c", "ssl", CREDS)))
        assert info.value.transient

    def test_helo_fallback(self) -> None:
        peer = ScriptedPeer("220 hi", "502 no", "250 hello")
        info = peer.run(open_session(SessionPlan("c")))
        assert not info.extensions.esmtp
        assert peer.lines == ["EHLO c", "HELO c"]

    def test_greeting_421(self) -> None:
        peer = ScriptedPeer("421 busy")
        with pytest.raises(SMTPReplyError) as info:
            peer.run(open_session(SessionPlan("c")))
        assert info.value.transient


ENVELOPE = Envelope("from@example.com", ("a@example.com", "b@example.com"))
PIPELINED = Extensions.from_ehlo(["mx", "PIPELINING", "SIZE 10000", "8BITMIME"])


class TestTransaction:
    def test_pipelined_in_one_write(self) -> None:
        peer = ScriptedPeer("250 ok", "250 ok", "250 ok", "354 go", "250 2.0.0 queued as Q1")
        result = peer.run(send_message(ENVELOPE, b"Subject: x\n\nbody", PIPELINED))
        assert peer.writes[0] == (
            b"MAIL FROM:<from@example.com> SIZE=23\r\n"
            b"RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        )
        assert peer.writes[1] == b"Subject: x\r\n\r\nbody\r\n.\r\n"
        assert result.accepted == ("a@example.com", "b@example.com")
        assert result.queue_id == "Q1"

    def test_eight_bit_content_declared(self) -> None:
        peer = ScriptedPeer("250 ok", "250 ok", "250 ok", "354 go", "250 ok")
        peer.run(send_message(ENVELOPE, "Grüße".encode(), PIPELINED))
        assert peer.lines[0].endswith(" BODY=8BITMIME")

    def test_partial_refusal_is_a_result(self) -> None:
        peer = ScriptedPeer("250 ok", "550 5.1.1 no such user", "250 ok", "354 go", "250 ok")
        result = peer.run(send_message(ENVELOPE, b"x", PIPELINED))
        assert result.accepted == ("b@example.com",)
        assert result.refused["a@example.com"].enhanced == "5.1.1"

    def test_all_refused_pipelined_closes_empty_data(self) -> None:
        peer = ScriptedPeer("250 ok", "550 no", "450 later", "354 go", "554 no recipients")
        with pytest.raises(RecipientsRefused) as info:
            peer.run(send_message(ENVELOPE, b"x", PIPELINED))
        assert peer.writes[-1] == b".\r\n"  # the message itself never went out
        assert info.value.transient  # one refusal was temporary: worth another try
        assert set(info.value.refused) == {"a@example.com", "b@example.com"}

    def test_unpipelined_stops_at_refused_sender(self) -> None:
        peer = ScriptedPeer("553 sender rejected")
        with pytest.raises(SMTPReplyError) as info:
            peer.run(send_message(ENVELOPE, b"x", Extensions()))
        assert not info.value.transient
        assert peer.lines == ["MAIL FROM:<from@example.com>"]

    def test_size_limit_checked_before_sending(self) -> None:
        small = Extensions.from_ehlo(["mx", "SIZE 10"])
        peer = ScriptedPeer()
        with pytest.raises(SMTPReplyError) as info:
            peer.run(send_message(ENVELOPE, b"x" * 100, small))
        assert info.value.reply.code == 552
        assert peer.writes == []

    def test_rejected_message(self) -> None:
        peer = ScriptedPeer("250 ok", "250 ok", "250 ok", "354 go", "554 5.7.1 spam")
        with pytest.raises(SMTPReplyError) as info:
            peer.run(send_message(ENVELOPE, b"x", PIPELINED))
        assert info.value.code == "smtp_permanent"


ONE = Envelope("from@example.com", ("a@example.com",))


class TestPipelinedStream:
    def test_one_round_trip_per_message(self) -> None:
        items = [(ONE, f"Subject: {i}\r\n\r\nbody".encode()) for i in range(3)]
        peer = ScriptedPeer(
            *["250 ok", "250 ok", "354 go"],  # envelope of 0
            *["250 queued as Q0", "250 ok", "250 ok", "354 go"],  # 0's final + envelope of 1
            *["250 queued as Q1", "250 ok", "250 ok", "354 go"],
            "250 queued as Q2",
        )
        outcomes: dict[int, Any] = {}
        peer.run(send_pipelined(items, PIPELINED, outcomes))
        assert len(peer.writes) == 4  # three messages, four writes: one round trip each
        assert peer.writes[1].startswith(b"Subject: 0\r\n\r\nbody\r\n.\r\nMAIL FROM:")
        assert [outcomes[i].queue_id for i in range(3)] == ["Q0", "Q1", "Q2"]

    def test_failures_are_per_message_and_the_stream_goes_on(self) -> None:
        items = [(ONE, b"zero"), (ONE, b"one"), (ONE, b"two"), (ONE, b"three")]
        peer = ScriptedPeer(
            *["250 ok", "250 ok", "354 go"],  # 0 envelope
            *[
                "550 5.7.1 rejected",
                "250 ok",
                "550 5.1.1 no user",
                "554 no valid rcpt",
            ],  # 1 refused
            *["250 ok", "250 ok", "250 ok", "354 go"],  # RSET reply, then 2's envelope
            *["451 4.3.0 later", "553 bad sender", "503 no", "503 no"],  # 2 final; 3 refused
            "250 ok",  # never read: 3's MAIL failed, so no RSET is owed
        )
        outcomes: dict[int, Any] = {}
        peer.run(send_pipelined(items, PIPELINED, outcomes))
        assert outcomes[0].reply.code == 550
        assert not outcomes[0].transient
        assert isinstance(outcomes[1], RecipientsRefused)
        assert outcomes[2].transient
        assert outcomes[3].reply.code == 553
        assert b"RSET\r\n" in peer.writes[2]
        assert peer.replies == [Reply(250, ("ok",))]  # no reply was left unread or overread

    def test_354_after_failed_envelope_closes_empty_data(self) -> None:
        peer = ScriptedPeer("250 ok", "550 no", "354 go", "554 empty", "250 reset")
        outcomes: dict[int, Any] = {}
        peer.run(send_pipelined([(ONE, b"x")], PIPELINED, outcomes))
        assert isinstance(outcomes[0], RecipientsRefused)
        assert peer.writes[-1] == b".\r\nRSET\r\n"

    def test_data_ready_content_goes_out_as_it_is(self) -> None:
        # DataReady content (what MessageTemplate marks) is neither scanned nor copied into
        # a stuffed form; plain bytes with the same text are stuffed as always. SIZE counts
        # the terminator either way, and 7-bit content declares no BODY=8BITMIME.
        text = b"Subject: x\r\n\r\nbody\r\n"
        items = [(ONE, DataReady(text)), (ONE, b"Subject: y\r\n\r\n.dot\r\n")]
        peer = ScriptedPeer(
            *["250 ok", "250 ok", "354 go"],
            *["250 queued as Q0", "250 ok", "250 ok", "354 go"],
            "250 queued as Q1",
        )
        outcomes: dict[int, Any] = {}
        peer.run(send_pipelined(items, PIPELINED, outcomes))
        assert peer.writes[0].startswith(b"MAIL FROM:<from@example.com> SIZE=23\r\n")
        assert peer.writes[1].startswith(text + b".\r\nMAIL FROM:<from@example.com> SIZE=24\r\n")
        assert peer.writes[2] == b"Subject: y\r\n\r\n..dot\r\n.\r\n"
        assert [outcomes[i].queue_id for i in range(2)] == ["Q0", "Q1"]
        assert b"8BITMIME" not in b"".join(peer.writes)

    def test_without_pipelining_falls_back_to_one_by_one(self) -> None:
        plain = Extensions.from_ehlo(["mx"])
        peer = ScriptedPeer(
            "250 ok", "250 ok", "354 go", "250 one", "550 no", "250 reset", "250 ok", "250 ok",
            "354 go", "250 three",
        )  # fmt: skip
        outcomes: dict[int, Any] = {}
        peer.run(send_pipelined([(ONE, b"1"), (ONE, b"2"), (ONE, b"3")], plain, outcomes))
        assert outcomes[0].reply.text == "one"
        assert outcomes[1].reply.code == 550
        assert outcomes[2].reply.text == "three"
        assert all(len(w.split(b"\r\n")) <= 3 for w in peer.writes[:-1])
