"""The contract's form (spec section 6): build one message from the flags and send it.

    fluxmail --host HOST --subject S --recipients A [--recipients B] --body TEXT [...]

Every flag the contract lists keeps its meaning; the form has no subcommand, so it must keep
parsing exactly as before (see :func:`fluxmail.cli.main`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from fluxmail import __version__
from fluxmail.cli.common import (
    EXIT_OK,
    BadFlagsError,
    Parser,
    connection_flags,
    flag_or_env,
    mailer,
    non_negative_number,
    out,
)

_EPILOG = """\
Connection flags left out fall back to FLUXMAIL_TYPE, FLUXMAIL_HOST, FLUXMAIL_PORT,
FLUXMAIL_USERNAME, FLUXMAIL_PASSWORD, FLUXMAIL_TLS, FLUXMAIL_SSL, FLUXMAIL_TIMEOUT,
FLUXMAIL_MAX_RETRIES and FLUXMAIL_RETRY_DELAY. Prefer FLUXMAIL_PASSWORD to --password:
other users of this machine can read command lines.

To test a relay without sending anything: fluxmail check --host HOST [...]
To send a template to every row of a CSV file: fluxmail bulk --csv PATH [...]
(fluxmail check --help and fluxmail bulk --help say more)

exit codes: 0 sent (or previewed); 1 bad flag combination, no body or unreadable file;
2 FluxMail error or usage error; 99 unexpected error (FLUXMAIL_DEBUG=1 shows the traceback);
130 interrupted.
"""


def run(argv: list[str], env: Mapping[str, str]) -> int:
    """Send (or with ``--dry-run`` preview) the message the flags describe; 0 on success."""
    args = _parser().parse_args(argv)
    body = _body(args.body, args.body_file)
    sender = mailer(
        args,
        env,
        max_retries=flag_or_env(args.max_retries, env, "FLUXMAIL_MAX_RETRIES", int, 0),
        retry_delay=flag_or_env(args.retry_delay, env, "FLUXMAIL_RETRY_DELAY", float, 1.0),
    )
    sender.create(
        args.subject,
        args.recipients,
        body,
        sender=args.sender,
        cc=args.cc,
        bcc=args.bcc,
        reply_to=args.reply_to,
        attachments=args.attachments,
        html_body=args.html,
    )
    out(sender.send(dry_run=args.dry_run))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fluxmail",
        description="Send one email through an SMTP relay.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_flags()],
    )
    parser.add_argument("--version", action="version", version=f"fluxmail {__version__}")
    message = parser.add_argument_group("message")
    message.add_argument("--subject", required=True)
    # "extend" accepts both the contract's repeated flag and several values after one flag.
    for flag, what in (
        ("--recipients", "To address"),
        ("--cc", "Cc address"),
        ("--bcc", "Bcc address (envelope only, never in the headers)"),
        ("--attachments", "file to attach"),
    ):
        message.add_argument(
            flag,
            action="extend",
            nargs="+",
            required=flag == "--recipients",
            metavar="ADDRESS" if flag != "--attachments" else "PATH",
            help=f"{what}; repeatable",
        )
    message.add_argument("--body", metavar="TEXT")
    message.add_argument("--body-file", metavar="PATH", help="UTF-8 file with the body; - is stdin")
    message.add_argument(
        "--html", action=argparse.BooleanOptionalAction, default=False, help="the body is HTML"
    )
    message.add_argument("--sender", help="From address (default: --username if an address)")
    message.add_argument("--reply-to", metavar="ADDRESS")
    sending = parser.add_argument_group("sending")
    sending.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="print the message instead of sending it",
    )
    sending.add_argument("--max-retries", type=int, metavar="N", help="default 0")
    sending.add_argument(
        "--retry-delay", type=non_negative_number, metavar="SECONDS", help="default 1.0"
    )
    return parser


def _body(text: str | None, path: str | None) -> str:
    """The body from ``--body`` or ``--body-file`` (exactly one of them)."""
    if text is not None and path is not None:
        raise BadFlagsError("--body and --body-file exclude each other; pass one")
    if text is not None:
        return text
    if path is None:
        raise BadFlagsError("no body: pass --body TEXT or --body-file PATH")
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        return raw.decode("utf-8")
    except OSError as exc:
        raise BadFlagsError(f"cannot read --body-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BadFlagsError(f"cannot read --body-file {path}: not UTF-8 text ({exc})") from None
