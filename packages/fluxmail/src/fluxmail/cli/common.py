"""What every ``fluxmail`` command shares: the parser, connection flags, exit codes, output.

Exit codes are decided in one place, :func:`exit_code`, from the exception that ended a
command; a command that completes returns its own code (0, or 3 for ``bulk``).
"""

from __future__ import annotations

import argparse
import math
import ssl
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import NoReturn, TypeVar

from fluxmail.client import FluxMail
from fluxmail.config import EmailObject, env_flag, env_number
from fluxmail.errors import FluxMailException

EXIT_OK = 0
EXIT_BAD_ARGUMENTS = 1
EXIT_FLUXMAIL_ERROR = 2
EXIT_SOME_FAILED = 3  # bulk only: the run completed, but some rows were not sent
EXIT_UNEXPECTED = 99
EXIT_INTERRUPTED = 130

N = TypeVar("N", int, float)


class BadFlagsError(Exception):
    """Arguments (or input files) the CLI refuses before doing anything (exit 1)."""


class ParserExit(Exception):  # noqa: N818 - --help and --version end this way too
    """argparse is done: ``--help``/``--version`` printed, or a usage error was reported."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`ParserExit` instead of calling ``sys.exit``."""

    # argparse calls sys.exit() for --help, --version and usage errors; raising instead lets
    # main() return every exit code itself, which keeps it callable in-process.
    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise ParserExit(status)


# -- flags ----------------------------------------------------------------------------------


def connection_flags() -> argparse.ArgumentParser:
    """The flags every command shares (a parent parser): where to connect and how to log in."""
    parser = Parser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument("--type", help="smtp (default) or outlook (Windows only)")
    group.add_argument("--host", help="relay: HOST, HOST:DOMAIN or HOST:PORT")
    group.add_argument("--port", type=int, help="default 25")
    # --no-tls / --no-ssl (0.3.x's flags) pin that mode off whatever FLUXMAIL_TLS/SSL say.
    on_off = argparse.BooleanOptionalAction
    group.add_argument("--tls", action=on_off, help="STARTTLS (usually port 587)")
    group.add_argument("--ssl", action=on_off, help="implicit TLS (usually port 465)")
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
    group.add_argument("--timeout", type=positive_number, metavar="SECONDS", help="default 30")
    return parser


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


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of ``low`` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer of {low} or more")
        return value

    return parse


# A zero timeout would make the socket non-blocking, not "wait forever".
positive_number = _number_type(lambda v: v > 0, "a number greater than 0")
non_negative_number = _number_type(lambda v: v >= 0, "a number of 0 or more")


# -- from flags to a mailer -----------------------------------------------------------------


def mailer(
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
    object_type = object_type_of(args.type, env)
    use_tls, use_ssl = _tls_mode(args.tls, args.ssl, env)
    ssl_context = _ssl_context(args.ca_file)
    host = (args.host or env.get("FLUXMAIL_HOST", "")).strip()
    if not host and object_type is EmailObject.SMTP:
        raise FluxMailException("No relay host: pass --host HOST or set FLUXMAIL_HOST", "no_relay")
    return FluxMail(
        object_type,
        host,
        port=flag_or_env(args.port, env, "FLUXMAIL_PORT", int, 25),
        username=_text_flag_or_env(args.username, env, "FLUXMAIL_USERNAME"),
        password=_text_flag_or_env(args.password, env, "FLUXMAIL_PASSWORD"),
        use_tls=use_tls,
        use_ssl=use_ssl,
        ssl_context=ssl_context,
        timeout=flag_or_env(args.timeout, env, "FLUXMAIL_TIMEOUT", float, 30.0),
        max_retries=max_retries,
        retry_delay=retry_delay,
        allow_plaintext_auth=args.allow_plaintext_auth,
    )


def object_type_of(flag: str | None, env: Mapping[str, str]) -> EmailObject:
    """``--type``, else ``FLUXMAIL_TYPE``, else SMTP; an unknown name is BadFlagsError."""
    source, value = (
        ("--type", flag) if flag is not None else ("FLUXMAIL_TYPE", env.get("FLUXMAIL_TYPE"))
    )
    try:
        return EmailObject.parse(value or "smtp")
    except FluxMailException as exc:
        raise BadFlagsError(f"{source}: {exc}") from None


def _tls_mode(tls: bool | None, use_ssl: bool | None, env: Mapping[str, str]) -> tuple[bool, bool]:
    """(use_tls, use_ssl). A flag that switches a mode on decides alone; otherwise each mode
    comes from its variable unless its ``--no-`` flag pinned it off.
    """
    if tls and use_ssl:
        raise BadFlagsError("--tls (STARTTLS) and --ssl (implicit TLS) exclude each other")
    if tls or use_ssl:
        return bool(tls), bool(use_ssl)
    return (
        tls is None and env_flag(env.get("FLUXMAIL_TLS")),
        use_ssl is None and env_flag(env.get("FLUXMAIL_SSL")),
    )


def _ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    """A verifying context trusting only ``ca_file``; None keeps the system CA store."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError (not PEM, no certificate) is an OSError too
        raise BadFlagsError(f"cannot use --ca-file {ca_file}: {exc.strerror or exc}") from None


def flag_or_env(flag: N | None, env: Mapping[str, str], name: str, kind: type[N], default: N) -> N:
    """The flag if given, else the variable ``name`` (``invalid_config`` if malformed)."""
    # A flag that was given means the variable is never read, so a malformed variable the
    # flag overrides cannot fail the run.
    return flag if flag is not None else env_number(env, name, kind, default)


def _text_flag_or_env(flag: str | None, env: Mapping[str, str], name: str) -> str | None:
    return flag if flag is not None else env.get(name) or None


# -- output ---------------------------------------------------------------------------------


def out(text: str) -> None:
    """Write ``text`` to stdout as one or more whole lines."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def error(text: str) -> None:
    """Write one line to stderr."""
    sys.stderr.write(text + "\n")


def exit_code(exc: BaseException, *, debug: bool) -> int:
    """Report ``exc`` on stderr and return its exit code: the only place that maps them."""
    if isinstance(exc, ParserExit):
        return exc.status  # argparse has already said what it had to
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, BadFlagsError):
        error(f"error: {exc}")
        return EXIT_BAD_ARGUMENTS
    if isinstance(exc, FluxMailException):
        error(f"error: {one_line(exc)} (code: {exc.code})")
        for cause in _causes(exc):
            if isinstance(cause, FluxMailException):
                error(f"cause: {one_line(cause)} (code: {cause.code})")
            else:
                error(f"cause: {type(cause).__name__}: {one_line(cause)}")
        return EXIT_FLUXMAIL_ERROR
    if isinstance(exc, KeyboardInterrupt):
        error("interrupted")
        return EXIT_INTERRUPTED
    error(f"unexpected error: {type(exc).__name__}: {one_line(exc)}")
    return EXIT_UNEXPECTED


def _causes(exc: BaseException) -> list[BaseException]:
    """The explicit ``raise ... from`` chain below ``exc``, nearest first."""
    chain: list[BaseException] = []
    cause = exc.__cause__
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__
    return chain


def one_line(exc: BaseException) -> str:
    """``exc``'s text on one line (its type's name if it has no text)."""
    return squash(str(exc)) or type(exc).__name__


def squash(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())
