"""Each relay's webhook as its documentation describes it, for the webhook tests and the
benchmark: how its secret is configured, a hard bounce of a message in its payload format,
signed (or credentialed) with keys generated here, and how a post is tampered with.

A case keeps what the relay would hold (the secret GetFluxly showed once, or the key it
made itself) and signs as the relay does.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flux_testkit.webhook_signers import (
    FakeSns,
    SendGridKey,
    SnsSigner,
    basic,
    hex_hmac,
    mailgun_signature,
    new_whsec,
    standard_headers,
)

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"


@dataclass(frozen=True)
class Sent:
    """A message the relay took: GetFluxly's id, the relay's id, the Message-ID header."""

    id: str
    email: str
    provider_id: str
    smtp_id: str


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Case:
    """A relay's side. Subclasses fill in the format."""

    relay: str = ""
    #: A timestamp is signed (a post older than 5 minutes is refused).
    timestamped: bool = True
    #: The body is covered by the signature (a tampered body is refused).
    body_signed: bool = True
    secret: str = ""

    def setup(self) -> dict[str, Any]:
        """The body of POST /v1/projects/{id}/webhook-secrets."""
        return {"relay": self.relay}

    def keep(self, issued: dict[str, Any]) -> None:
        """Learn what the answer showed once (the secret GetFluxly made)."""
        if issued.get("secret"):
            self.secret = issued["secret"]

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        raise NotImplementedError

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        raise NotImplementedError

    def tamper(self, body: bytes) -> bytes:
        """The body with a covered part changed (the bounced address)."""
        return body.replace(b"@example.com", b"@evil.example", 1)

    def post(self, sent: Sent, ts: int | None = None, event_id: str | None = None,
             *, wrong: bool = False) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        """A signed post of a hard bounce of ``sent`` made at ``ts`` (now by default)."""
        ts = int(time.time()) if ts is None else ts
        body = self.payload(sent, ts, event_id or secrets.token_hex(8))
        return body, self.headers(body, ts, wrong=wrong)


class Postmark(Case):
    def __init__(self) -> None:
        super().__init__(relay="postmark", timestamped=False, body_signed=False)

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        return json.dumps({
            "RecordType": "Bounce", "ID": int(event_id, 16), "Type": "HardBounce", "TypeCode": 1,
            "Name": "Hard bounce", "Tag": "", "MessageID": sent.provider_id,
            "Metadata": {"getfluxly_message_id": sent.id}, "ServerID": 23,
            "MessageStream": "outbound",
            "Description": "The server was unable to deliver your message (ex: unknown user, "
                           "mailbox not found).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": sent.email, "From": "sender@example.org", "BouncedAt": iso(ts),
            "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Hello",
        }).encode()  # fmt: skip

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        return {"Content-Type": "application/json",
                **basic("not-the-secret" if wrong else self.secret)}  # fmt: skip


class SendGrid(Case):
    def __init__(self) -> None:
        super().__init__(relay="sendgrid")
        self.key, self.other = SendGridKey(), SendGridKey()

    def setup(self) -> dict[str, Any]:
        return {"relay": "sendgrid", "public_key": self.key.public_key}

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        return json.dumps([
            {"email": sent.email, "timestamp": ts - 2, "event": "processed",
             "sg_event_id": f"p-{event_id}", "sg_message_id": f"{sent.provider_id}.filter0001",
             "getfluxly_message_id": sent.id},
            {"email": sent.email, "timestamp": ts, "event": "bounce", "type": "bounce",
             "bounce_classification": "Invalid Address", "sg_event_id": event_id,
             "sg_message_id": f"{sent.provider_id}.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5",
             "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
             "status": "5.1.1", "getfluxly_message_id": sent.id},
        ]).encode()  # fmt: skip

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        key = self.other if wrong else self.key
        return {"Content-Type": "application/json", **key.headers(ts, body)}


class Mailgun(Case):
    def __init__(self) -> None:
        super().__init__(relay="mailgun")
        self.signing_key = "key-" + secrets.token_hex(16)

    def setup(self) -> dict[str, Any]:
        return {"relay": "mailgun", "secret": self.signing_key}

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        return self._body(sent, ts, event_id, self.signing_key)

    def _body(self, sent: Sent, ts: int, event_id: str, key: str) -> bytes:
        return json.dumps({
            "signature": mailgun_signature(key, ts, secrets.token_hex(25)),
            "event-data": {
                "event": "failed", "severity": "permanent", "reason": "bounce",
                "id": event_id, "timestamp": ts + 0.329574, "log-level": "error",
                "recipient": sent.email, "recipient-domain": "example.com",
                "message": {"headers": {"message-id": sent.provider_id, "to": sent.email,
                                        "from": "sender@example.org", "subject": "Hello"}},
                "user-variables": {"getfluxly_message_id": sent.id},
                "delivery-status": {"code": 550, "message": "5.1.1 No such user",
                                    "description": "550 5.1.1 The email account does not exist"},
            },
        }).encode()  # fmt: skip

    def post(self, sent: Sent, ts: int | None = None, event_id: str | None = None,
             *, wrong: bool = False) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        ts = int(time.time()) if ts is None else ts
        key = "key-wrong" if wrong else self.signing_key
        body = self._body(sent, ts, event_id or secrets.token_hex(8), key)
        return body, {"Content-Type": "application/json"}

    def tamper(self, body: bytes) -> bytes:
        data = json.loads(body)
        data["signature"]["token"] = secrets.token_hex(25)  # the signed part
        return json.dumps(data).encode()


class Ses(Case):
    def __init__(self, sns: FakeSns, signer: SnsSigner, version: str = "2") -> None:
        super().__init__(relay="ses")
        self.sns, self.signer, self.other, self.version = sns, signer, SnsSigner(), version

    def setup(self) -> dict[str, Any]:
        return {"relay": "ses", "topic_arn": TOPIC}

    def message(self, sent: Sent, ts: int, event_id: str) -> dict[str, Any]:
        ses = {
            "notificationType": "Bounce",
            "bounce": {"feedbackId": f"0100-{event_id}", "bounceType": "Permanent",
                       "bounceSubType": "General", "timestamp": iso(ts),
                       "bouncedRecipients": [{"emailAddress": sent.email, "action": "failed",
                                              "status": "5.1.1",
                                              "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
            "mail": {"timestamp": iso(ts - 5), "source": "sender@example.org",
                     "messageId": sent.provider_id, "destination": [sent.email],
                     "tags": {"getfluxly_message_id": [sent.id]}},
        }  # fmt: skip
        return {
            "Type": "Notification", "MessageId": f"sns-{event_id}", "TopicArn": TOPIC,
            "Message": json.dumps(ses), "Timestamp": iso(ts),
            "UnsubscribeURL": f"{self.sns.base}/unsubscribe",
        }  # fmt: skip

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        return self._signed(self.message(sent, ts, event_id), self.signer)

    def _signed(self, message: dict[str, Any], signer: SnsSigner) -> bytes:
        return json.dumps(signer.sign(message, self.sns.cert_url, self.version)).encode()

    def post(self, sent: Sent, ts: int | None = None, event_id: str | None = None,
             *, wrong: bool = False) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        ts = int(time.time()) if ts is None else ts
        message = self.message(sent, ts, event_id or secrets.token_hex(8))
        body = self._signed(message, self.other if wrong else self.signer)
        return body, self.headers(body, ts)

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        data = json.loads(body)
        return {"Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": data["Type"], "x-amz-sns-message-id": data["MessageId"],
                "x-amz-sns-topic-arn": data["TopicArn"]}  # fmt: skip

    def tamper(self, body: bytes) -> bytes:
        return body.replace(b"Permanent", b"Transient", 1)


class Smtp2go(Case):
    def __init__(self) -> None:
        super().__init__(relay="smtp2go", timestamped=False, body_signed=False)

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        return urlencode({
            "event": "bounce", "time": iso(ts), "sendtime": iso(ts - 3),
            "sender": "sender@example.org", "from": "sender@example.org", "rcpt": sent.email,
            "recipients": sent.email, "auth": "api-key", "host": "mx.example.com",
            "message": "550 5.1.1 <" + sent.email + ">: Recipient address rejected",
            "email_id": sent.provider_id, "bounce": "hard", "subject": "Hello",
            "X-GetFluxly-Message-Id": sent.id, "id": event_id,
        }).encode()  # fmt: skip

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded",
                **basic("not-the-secret" if wrong else self.secret)}  # fmt: skip

    def tamper(self, body: bytes) -> bytes:
        return body.replace(b"%40example.com", b"%40evil.example", 1)


class Resend(Case):
    def __init__(self) -> None:
        super().__init__(relay="resend")
        self.signing_secret = new_whsec()

    def setup(self) -> dict[str, Any]:
        return {"relay": "resend", "secret": self.signing_secret}

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        self.svix_id = f"msg_{event_id}"
        return json.dumps({
            "type": "email.bounced", "created_at": iso(ts),
            "data": {"email_id": sent.provider_id, "from": "Acme <sender@example.org>",
                     "to": [sent.email], "subject": "Hello", "created_at": iso(ts - 5),
                     "bounce": {"message": "550 5.1.1 The recipient's address does not exist.",
                                "subType": "General", "type": "Permanent"},
                     "tags": {"getfluxly_message_id": sent.id}},
        }).encode()  # fmt: skip

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        secret = new_whsec() if wrong else self.signing_secret
        return {"Content-Type": "application/json",
                **standard_headers(secret, self.svix_id, ts, body, prefix="svix")}  # fmt: skip


class Brevo(Case):
    def __init__(self) -> None:
        super().__init__(relay="brevo", timestamped=False, body_signed=False)

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        return json.dumps({
            "event": "hard_bounce", "email": sent.email, "id": 123456,
            "date": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "ts": ts, "message-id": f"<{sent.smtp_id}>", "ts_event": ts, "subject": "Hello",
            "tag": "", "sending_ip": "185.41.28.109", "ts_epoch": ts * 1000 + int(event_id[:2], 16),
            "reason": "550 5.1.1 user unknown",
        }).encode()  # fmt: skip

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        token = "not-the-secret" if wrong else self.secret
        return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}


class Mailtrap(Case):
    def __init__(self) -> None:
        super().__init__(relay="mailtrap", timestamped=False)
        self.signing_secret = secrets.token_hex(32)

    def setup(self) -> dict[str, Any]:
        return {"relay": "mailtrap", "secret": self.signing_secret}

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        return json.dumps({"events": [{
            "event": "bounce", "message_id": sent.provider_id, "sending_stream": "transactional",
            "email": sent.email, "timestamp": ts, "event_id": event_id, "category": "welcome",
            "custom_variables": {"getfluxly_message_id": sent.id},
            "sending_domain_name": "example.org", "response": "550 5.1.1 user unknown",
            "response_code": 550, "bounce_category": "badmailbox",
        }]}).encode()  # fmt: skip

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        secret = "not-the-secret" if wrong else self.signing_secret
        return {"Content-Type": "application/json", "Mailtrap-Signature": hex_hmac(secret, body)}


@dataclass
class Generic(Case):
    delivery: str = field(default="")

    def __post_init__(self) -> None:
        self.relay = "smtp"

    def payload(self, sent: Sent, ts: int, event_id: str) -> bytes:
        self.delivery = f"msg_{event_id}"
        return json.dumps({"events": [{
            "id": event_id, "type": "bounced", "email": sent.email, "message_id": sent.id,
            "smtp_message_id": f"<{sent.smtp_id}>", "bounce_type": "hard",
            "reason": "550 5.1.1 user unknown", "timestamp": iso(ts),
        }]}).encode()  # fmt: skip

    def headers(self, body: bytes, ts: int, *, wrong: bool = False) -> dict[str, str]:
        secret = new_whsec() if wrong else self.secret
        return {"Content-Type": "application/json",
                **standard_headers(secret, self.delivery, ts, body)}  # fmt: skip


def every_case(sns: FakeSns, signer: SnsSigner) -> list[Case]:
    return [Postmark(), SendGrid(), Mailgun(), Ses(sns, signer), Smtp2go(), Resend(), Brevo(),
            Mailtrap(), Generic()]  # fmt: skip


NAMES = ["postmark", "sendgrid", "mailgun", "ses", "smtp2go", "resend", "brevo", "mailtrap", "smtp"]
