"""Test support for GetFluxly's feedback loop: a customer's webhook endpoint that records
what it is sent, the Standard Webhooks check a receiver makes, and the bounce reports
(``bounce_reports/``: DSNs as Postfix and Exim write them, an ARF complaint, written by hand
after the MTAs' documented formats) with their ``$names`` filled in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from pathlib import Path
from string import Template

from flux_testkit.httpfake import FakeService, Reply, Request

REPORTS = Path(__file__).parent / "bounce_reports"
#: A ledger id and its VERP address, for reports that need not match a real message.
LEDGER_ID = "msg_0123456789abcdefghjk"
VERP = f"bounces+{LEDGER_ID}@bounces.example.test"


class Receiver(FakeService):
    """A customer's endpoint on 127.0.0.1: records every request (``requests``), answers the
    scripted ``replies`` in turn, then ``200 thanks``."""

    def __init__(self, *replies: Reply) -> None:
        super().__init__()
        self.replies = list(replies)
        self.requests: list[Request] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def _dispatch(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self.replies.pop(0) if self.replies else Reply(200, b"thanks")

    def _note(self, problem: str) -> None:
        self.problems.append(problem)


def verify_signature(secret: str, request: Request, *, tolerance: float = 300.0) -> None:
    """Assert ``request`` carries a valid Standard Webhooks signature by ``secret``
    (``whsec_<base64>``) and a timestamp within ``tolerance`` seconds of now; written from
    the scheme's text, independently of the server's code."""
    message_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}", "bad signature"
    assert abs(time.time() - int(timestamp)) < tolerance, "timestamp out of the window"


def bounce_report(name: str, **values: str) -> bytes:
    """Report ``name`` (a file of ``bounce_reports/``) with its ``$names`` filled (defaults:
    a recipient at recipient.test, :data:`VERP`, :data:`LEDGER_ID` in an
    ``X-GetFluxly-Message-Id`` header, a 5.1.1 failure), with CRLF line ends."""
    defaults = {
        "verp": VERP,
        "recipient": "nobody@recipient.test",
        "message_id": "20261203061000.abc123@app.sender.test",
        "ledger_header": f"X-GetFluxly-Message-Id: {LEDGER_ID}",
        "fbl_address": "fbl@bounces.example.test",
        "status": "5.1.1",
        "smtp_reply": "550 5.1.1 User unknown",
    }
    text = Template((REPORTS / name).read_text()).substitute({**defaults, **values})
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
