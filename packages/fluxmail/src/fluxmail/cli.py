"""The ``fluxmail`` command line: send one message, or check that a relay accepts us.

Two forms, told apart by the first argument::

    fluxmail --host HOST --subject S --recipients A [--recipients B] --body TEXT [...]
    fluxmail check --host HOST [--port --tls --ssl --username --password --ca-file --timeout]

The first is the contract's form (spec section 6) and keeps every flag it had; ``check`` is
beyond the contract. A connection flag that is absent falls back to its ``FLUXMAIL_*``
variable (spec section 5), then to the library default: flags always win.

Exit codes, decided in one place (:func:`_exit_code`):

* 0: success. The library's success string, the ``--dry-run`` preview or ``check``'s JSON
  goes to stdout.
* 1: the CLI rejected its own arguments before doing anything: ``--body`` with
  ``--body-file``, ``--tls`` with ``--ssl``, no body, an unreadable body file (or
  ``--ca-file``), an unknown type.
* 2: a :class:`~fluxmail.FluxMailException` (``error: <message> (code: <code>)`` followed by a
  ``cause:`` line for each chained cause), or a usage error reported by argparse.
* 99: anything unexpected: one ``unexpected error: ...`` line; the traceback only with
  ``FLUXMAIL_DEBUG=1``.
* 130: interrupted with Ctrl-C.

Everything but the result goes to stderr, and the password is never printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from fluxmail import __version__
from fluxmail.client import FluxMail
from fluxmail.config import EmailObject, env_flag, env_number
from fluxmail.errors import FluxMailException

EXIT_OK = 0
EXIT_BAD_ARGUMENTS = 1
EXIT_FLUXMAIL_ERROR = 2
EXIT_UNEXPECTED = 99
EXIT_INTERRUPTED = 130

N = TypeVar("N", int, float)

_EPILOG = """\
Connection flags left out fall back to FLUXMAIL_TYPE, FLUXMAIL_HOST, FLUXMAIL_PORT,
FLUXMAIL_USERNAME, FLUXMAIL_PASSWORD, FLUXMAIL_TLS, FLUXMAIL_SSL, FLUXMAIL_TIMEOUT,
FLUXMAIL_MAX_RETRIES and FLUXMAIL_RETRY_DELAY. Prefer FLUXMAIL_PASSWORD to --password:
other users of this machine can read command lines.

To test a relay without sending anything: fluxmail check --host HOST [...]

exit codes: 0 sent (or previewed); 1 bad flag combination, no body or unreadable file;
2 FluxMail error or usage error; 99 unexpected error (FLUXMAIL_DEBUG=1 shows the traceback).
"""


class BadFlagsError(Exception):
    """Arguments the CLI refuses before doing anything (exit 1)."""


class _ParserExit(Exception):  # noqa: N818 - --help and --version end this way too
    """argparse is done: ``--help``/``--version`` printed, or a usage error was reported."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    # argparse calls sys.exit() for --help, --version and usage errors; raising instead lets
    # main() return every exit code itself, which keeps it callable in-process.
    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _ParserExit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Never raises and never calls ``sys.exit``: the console script and ``python -m fluxmail``
    exit with the returned code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ
    try:
        # A plain argv[0] check rather than argparse subparsers: the contract's flags-only
        # form has no subcommand and must keep parsing exactly as before.
        if args[:1] == ["check"]:
            return _check(args[1:], env)
        return _send(args, env)
    except (Exception, KeyboardInterrupt) as exc:
        return _exit_code(exc, debug=env_flag(env.get("FLUXMAIL_DEBUG")))


# -- the two commands ---------------------------------------------------------------------------


def _send(argv: list[str], env: Mapping[str, str]) -> int:
    """The contract's form: build one message from the flags and send (or preview) it."""
    args = _send_parser().parse_args(argv)
    body = _body(args.body, args.body_file)
    mailer = _mailer(
        args,
        env,
        max_retries=_flag_or_env(args.max_retries, env, "FLUXMAIL_MAX_RETRIES", int, 0),
        retry_delay=_flag_or_env(args.retry_delay, env, "FLUXMAIL_RETRY_DELAY", float, 1.0),
    )
    mailer.create(
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
    _print(mailer.send(dry_run=args.dry_run))
    return EXIT_OK


def _check(argv: list[str], env: Mapping[str, str]) -> int:
    """``fluxmail check``: connect, upgrade TLS, log in, send nothing; print the JSON result."""
    args = _check_parser().parse_args(argv)
    _print(json.dumps(_mailer(args, env).test_connection(), indent=2))
    return EXIT_OK


# -- parsers -----------------------------------------------------------------------------------


def _connection_flags() -> argparse.ArgumentParser:
    """The flags both forms share (a parent parser): where to connect and how to log in."""
    parser = _Parser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument("--type", help="smtp (default) or outlook (Windows only)")
    group.add_argument("--host", help="relay: HOST, HOST:DOMAIN or HOST:PORT")
    group.add_argument("--port", type=int, help="default 25")
    group.add_argument("--tls", action="store_true", help="STARTTLS (usually port 587)")
    group.add_argument("--ssl", action="store_true", help="implicit TLS (usually port 465)")
    group.add_argument(
        "--ca-file", metavar="PATH", help="trust the CA certificates in this PEM bundle for TLS"
    )
    group.add_argument("--username")
    group.add_argument("--password", help="prefer the FLUXMAIL_PASSWORD variable")
    group.add_argument(
        "--allow-plaintext-auth",
        action="store_true",
        help="allow logging in without TLS to a relay that is not on this machine",
    )
    group.add_argument("--timeout", type=_positive_number, metavar="SECONDS", help="default 30")
    return parser


def _send_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fluxmail",
        description="Send one email through an SMTP relay.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_connection_flags()],
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
    message.add_argument("--html", action="store_true", help="the body is HTML")
    message.add_argument("--sender", help="From address (default: --username if an address)")
    message.add_argument("--reply-to", metavar="ADDRESS")
    sending = parser.add_argument_group("sending")
    sending.add_argument(
        "--dry-run", action="store_true", help="print the message instead of sending it"
    )
    sending.add_argument("--max-retries", type=int, metavar="N", help="default 0")
    sending.add_argument(
        "--retry-delay", type=_non_negative_number, metavar="SECONDS", help="default 1.0"
    )
    return parser


def _check_parser() -> argparse.ArgumentParser:
    return _Parser(
        prog="fluxmail check",
        description=(
            "Connect to the relay, upgrade TLS and log in without sending anything; print "
            "the result as JSON. Flags fall back to FLUXMAIL_* variables as for sending."
        ),
        parents=[_connection_flags()],
    )


def _number_type(check: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        # NaN and infinity pass the library's range check but break the socket layer.
        if not (math.isfinite(value) and check(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    return parse


# A zero timeout would make the socket non-blocking, not "wait forever".
_positive_number = _number_type(lambda v: v > 0, "a number greater than 0")
_non_negative_number = _number_type(lambda v: v >= 0, "a number of 0 or more")


# -- from flags to a mailer --------------------------------------------------------------------


def _mailer(
    args: argparse.Namespace,
    env: Mapping[str, str],
    *,
    max_retries: int = 0,
    retry_delay: float = 1.0,
) -> FluxMail:
    """The FluxMail the connection flags describe; each absent flag comes from the env.

    Raises BadFlagsError for an unknown type, ``--tls`` with ``--ssl`` or a bad ``--ca-file``,
    and FluxMailException for no host or a malformed variable (``invalid_config``).
    """
    object_type = _object_type(args.type, env)
    use_tls, use_ssl = _tls_mode(args.tls, args.ssl, env)
    ssl_context = _ssl_context(args.ca_file)
    host = (args.host or env.get("FLUXMAIL_HOST", "")).strip()
    if not host and object_type is EmailObject.SMTP:
        raise FluxMailException("No relay host: pass --host HOST or set FLUXMAIL_HOST", "no_relay")
    return FluxMail(
        object_type,
        host,
        port=_flag_or_env(args.port, env, "FLUXMAIL_PORT", int, 25),
        username=_text_flag_or_env(args.username, env, "FLUXMAIL_USERNAME"),
        password=_text_flag_or_env(args.password, env, "FLUXMAIL_PASSWORD"),
        use_tls=use_tls,
        use_ssl=use_ssl,
        ssl_context=ssl_context,
        timeout=_flag_or_env(args.timeout, env, "FLUXMAIL_TIMEOUT", int, 30),
        max_retries=max_retries,
        retry_delay=retry_delay,
        allow_plaintext_auth=args.allow_plaintext_auth,
    )


def _object_type(flag: str | None, env: Mapping[str, str]) -> EmailObject:
    source, value = (
        ("--type", flag) if flag is not None else ("FLUXMAIL_TYPE", env.get("FLUXMAIL_TYPE"))
    )
    try:
        return EmailObject.parse(value or "smtp")
    except FluxMailException as exc:
        raise BadFlagsError(f"{source}: {exc}") from None


def _tls_mode(tls: bool, use_ssl: bool, env: Mapping[str, str]) -> tuple[bool, bool]:
    """(use_tls, use_ssl). Either flag decides alone; only without both do the variables."""
    if tls and use_ssl:
        raise BadFlagsError("--tls (STARTTLS) and --ssl (implicit TLS) exclude each other")
    if tls or use_ssl:
        return tls, use_ssl
    return env_flag(env.get("FLUXMAIL_TLS")), env_flag(env.get("FLUXMAIL_SSL"))


def _ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    """A verifying context trusting only ``ca_file``; None keeps the system CA store."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError (not PEM, no certificate) is an OSError too
        raise BadFlagsError(f"cannot use --ca-file {ca_file}: {exc.strerror or exc}") from None


def _flag_or_env(flag: N | None, env: Mapping[str, str], name: str, kind: type[N], default: N) -> N:
    # A flag that was given means the variable is never read, so a malformed variable the
    # flag overrides cannot fail the run.
    return flag if flag is not None else env_number(env, name, kind, default)


def _text_flag_or_env(flag: str | None, env: Mapping[str, str], name: str) -> str | None:
    return flag if flag is not None else env.get(name) or None


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


# -- output --------------------------------------------------------------------------------------


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _error(text: str) -> None:
    sys.stderr.write(text + "\n")


def _exit_code(exc: BaseException, *, debug: bool) -> int:
    """Report ``exc`` on stderr and return its exit code: the only place that maps them."""
    if isinstance(exc, _ParserExit):
        return exc.status  # argparse has already said what it had to
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, BadFlagsError):
        _error(f"error: {exc}")
        return EXIT_BAD_ARGUMENTS
    if isinstance(exc, FluxMailException):
        _error(f"error: {_one_line(exc)} (code: {exc.code})")
        for cause in _causes(exc):
            if isinstance(cause, FluxMailException):
                _error(f"cause: {_one_line(cause)} (code: {cause.code})")
            else:
                _error(f"cause: {type(cause).__name__}: {_one_line(cause)}")
        return EXIT_FLUXMAIL_ERROR
    if isinstance(exc, KeyboardInterrupt):
        _error("interrupted")
        return EXIT_INTERRUPTED
    _error(f"unexpected error: {type(exc).__name__}: {_one_line(exc)}")
    return EXIT_UNEXPECTED


def _causes(exc: BaseException) -> list[BaseException]:
    """The explicit ``raise ... from`` chain below ``exc``, nearest first."""
    chain: list[BaseException] = []
    cause = exc.__cause__
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__
    return chain


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
