"""A development mail catcher: an SMTP server on loopback that prints what it receives.

``python -m flux_testkit.catcher --port 2525`` — point FluxMail (or anything) at it and watch
each message arrive with its envelope, headers and text. Nothing is relayed anywhere.
"""

from __future__ import annotations

import argparse
import sys
import threading
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller


class PrintingHandler:
    """aiosmtpd handler: print one summary block per message, then accept it."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += 1
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        body = message.get_body(preferencelist=("plain", "html"))
        text = body.get_content().strip() if body is not None else "(no text part)"
        print(
            f"--- message {self.count} ---\n"
            f"envelope: {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)}\n"
            f"subject:  {message['Subject']}\n"
            f"parts:    {', '.join(p.get_content_type() for p in message.walk())}\n"
            f"{text[:500]}\n",
            flush=True,
        )
        return f"250 OK queued as CATCH{self.count}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    args = parser.parse_args(argv)
    controller = Controller(PrintingHandler(), hostname=args.host, port=args.port)
    controller.start()
    print(f"catcher: listening on {args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
