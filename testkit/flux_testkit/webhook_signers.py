"""The relays' side of inbound feedback webhooks, for tests and benchmarks: each relay's
signature or credentials made the way its documentation says, with keys generated here, and
a local stand-in for Amazon SNS (an HTTPS server with the test CA that serves the signing
certificate and records subscription confirmations).

- :func:`standard_headers` (Standard Webhooks, ``prefix="svix"`` for Resend's Svix),
  :func:`basic`, :func:`bearer`, :func:`hex_hmac`, :func:`mailgun_signature`,
  :class:`SendGridKey` (an ECDSA P-256 key: its public half in SendGrid's base64 DER form),
- :class:`SnsSigner` (an RSA key and its self-signed certificate; signs messages in
  signature versions 1 and 2) and :class:`FakeSns` (serves the certificate over HTTPS on
  127.0.0.1 and answers SubscribeURL GETs, recording them).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from flux_testkit import certs

__all__ = [
    "FakeSns",
    "SendGridKey",
    "SnsSigner",
    "basic",
    "bearer",
    "hex_hmac",
    "mailgun_signature",
    "new_whsec",
    "standard_headers",
]


def new_whsec() -> str:
    """A Standard Webhooks / Svix secret as relays make them."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def standard_headers(
    secret: str, message_id: str, timestamp: int, body: bytes, *, prefix: str = "webhook"
) -> dict[str, str]:
    """``<prefix>-id``, ``-timestamp`` and ``-signature`` (``v1,<base64 HMAC-SHA256 of
    "id.timestamp.body">`` under the base64 key after ``whsec_``)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        f"{prefix}-id": message_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": f"v1,{signature}",
    }


def basic(secret: str, user: str = "getfluxly") -> dict[str, str]:
    """HTTP Basic credentials, as a relay sends those written in the webhook URL."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def mailgun_signature(signing_key: str, timestamp: int, token: str) -> dict[str, str]:
    """The ``signature`` object of a Mailgun webhook body."""
    return {
        "timestamp": str(timestamp),
        "token": token,
        "signature": hex_hmac(signing_key, f"{timestamp}{token}".encode()),
    }


class SendGridKey:
    """An ECDSA P-256 key pair as the Signed Event Webhook uses: SendGrid signs with the
    private half; the account shows the public half as base64 DER."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> str:
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, timestamp: int, body: bytes) -> dict[str, str]:
        signature = self._key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
        }


#: The fields SNS signs, in order, by message type.
_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip


class SnsSigner:
    """SNS's signing key and certificate (self-signed RSA, generated here)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        self.certificate_pem = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )

    def sign(self, message: dict[str, Any], cert_url: str, version: str = "2") -> dict[str, Any]:
        """``message`` with ``SignatureVersion``, ``Signature`` and ``SigningCertURL``."""
        text = "".join(
            f"{name}\n{message[name]}\n"
            for name in _SNS_FIELDS[message["Type"]]
            if message.get(name) is not None
        )
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": cert_url,
        }


class FakeSns:
    """Amazon SNS's HTTPS side on 127.0.0.1 (the test CA's certificate): ``GET
    /SimpleNotificationService-test.pem`` serves ``certificate_pem``; ``GET /confirm?...``
    (a SubscribeURL) answers 200 and is recorded in :attr:`requests` with every other
    request."""

    def __init__(self, certificate_pem: bytes) -> None:
        self.certificate_pem = certificate_pem
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cert_url(self) -> str:
        return f"{self.base}/SimpleNotificationService-test.pem"

    @property
    def hosts(self) -> str:
        """The GETFLUXLY_SNS_* host pattern that allows this server (and nothing else)."""
        return rf"127\.0\.0\.1:{self.port}"

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if self.path.endswith(".pem"):
                    body, kind = fake.certificate_pem, "application/x-pem-file"
                else:
                    body, kind = b"<ConfirmSubscriptionResponse/>", "text/xml"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = certs.server_ssl_context()
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._server.server_close()
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def env(self) -> Mapping[str, str]:
        """The server environment that points SNS fetches here."""
        return {
            "GETFLUXLY_SNS_CERT_HOSTS": self.hosts,
            "GETFLUXLY_SNS_SUBSCRIBE_HOSTS": self.hosts,
            "GETFLUXLY_SNS_CA_FILE": str(certs.ca_pem_path()),
        }


class AppServer:
    """An ASGI app (``getfluxly_server.app.create_app``'s) served by uvicorn on 127.0.0.1 in a
    thread of this process, for tests that want real HTTP against an app they built:
    ``with AppServer(app) as url: httpx.post(url + "/...")``."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the app server did not start")
            time.sleep(0.01)
        [server] = self._server.servers
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
