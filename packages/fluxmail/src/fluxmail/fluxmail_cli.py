"""FluxMail 0.3.x's Typer app, ``fluxmail.fluxmail_cli.app``, for code and tests that drive it.

Needs the ``cli`` extra (``pip install 'fluxmail[cli]'``). The app takes 0.3.x's options,
``--tls/--no-tls`` style pairs included, and hands them to the ``fluxmail`` command
(:func:`fluxmail.cli.main`), so both behave the same way and exit with the same codes: 0 sent,
1 bad flag combination (``--body`` with ``--body-file``, ``--tls`` with ``--ssl``, no body, an
unreadable body file, an unknown ``--type``), 2 a FluxMail error, 99 anything unexpected.
"""

from __future__ import annotations

from typing import Annotated

try:
    import typer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fluxmail.fluxmail_cli needs Typer: pip install 'fluxmail[cli]' "
        "(the fluxmail command itself works without it)"
    ) from exc

from fluxmail._version import __version__
from fluxmail.cli import main as run_cli

__all__ = ["app", "main"]

app = typer.Typer(
    name="fluxmail",
    help="Send emails via SMTP or Outlook.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"fluxmail {__version__}")
        raise typer.Exit


@app.command()
def send(
    email_type: Annotated[str, typer.Option("--type", help="smtp or outlook")],
    host: Annotated[str, typer.Option(help="relay, relay:domain or relay:port")],
    subject: Annotated[str, typer.Option(help="Email subject.")],
    recipients: Annotated[list[str], typer.Option("--recipients", help="To addresses.")],
    body: Annotated[str | None, typer.Option(help="The body, text or HTML.")] = None,
    body_file: Annotated[
        str | None, typer.Option("--body-file", help="File holding the body.")
    ] = None,
    sender: Annotated[str | None, typer.Option(help="From address.")] = None,
    cc: Annotated[list[str] | None, typer.Option(help="Cc addresses.")] = None,
    bcc: Annotated[list[str] | None, typer.Option(help="Bcc addresses.")] = None,
    reply_to: Annotated[str | None, typer.Option("--reply-to", help="Reply-To.")] = None,
    attachments: Annotated[list[str] | None, typer.Option(help="Files to attach.")] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="The body is HTML.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--no-dry-run", help="Preview instead of sending.")
    ] = False,
    port: Annotated[int | None, typer.Option(help="SMTP port (default 25).")] = None,
    username: Annotated[
        str | None, typer.Option(help="Login (and default sender).", envvar="FLUXMAIL_USERNAME")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(help="Password; prefer FLUXMAIL_PASSWORD.", envvar="FLUXMAIL_PASSWORD"),
    ] = None,
    tls: Annotated[bool, typer.Option("--tls/--no-tls", help="STARTTLS.")] = False,
    ssl: Annotated[bool, typer.Option("--ssl/--no-ssl", help="Implicit TLS.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Seconds (default 30).")] = None,
    max_retries: Annotated[
        int | None, typer.Option("--max-retries", help="Retries after a transient failure.")
    ] = None,
    retry_delay: Annotated[
        float | None, typer.Option("--retry-delay", help="Seconds between attempts.")
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Version."),
    ] = False,
) -> None:
    """Send an email via SMTP (or Outlook on Windows)."""
    argv = ["--type", email_type, "--host", host, "--subject", subject]
    for flag, values in (
        ("--recipients", recipients),
        ("--cc", cc),
        ("--bcc", bcc),
        ("--attachments", attachments),
    ):
        for item in values or ():
            argv += [flag, item]
    optional: tuple[tuple[str, object], ...] = (
        ("--body", body),
        ("--body-file", body_file),
        ("--sender", sender),
        ("--reply-to", reply_to),
        ("--port", port),
        ("--username", username),
        ("--password", password),
        ("--timeout", timeout),
        ("--max-retries", max_retries),
        ("--retry-delay", retry_delay),
    )
    for flag, given in optional:
        if given is not None:
            argv += [flag, str(given)]
    argv += ["--html" if html else "--no-html", "--dry-run" if dry_run else "--no-dry-run"]
    # Only a switched-on pair is passed: off leaves FLUXMAIL_TLS / FLUXMAIL_SSL to decide,
    # as with the fluxmail command.
    argv += ["--tls"] * tls + ["--ssl"] * ssl
    code = run_cli(argv)
    if code:
        raise typer.Exit(code)


def main() -> None:
    """Run the Typer app (0.3.x's console entry point)."""
    app()


if __name__ == "__main__":
    main()
