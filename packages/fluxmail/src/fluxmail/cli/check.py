"""``fluxmail check``: connect, upgrade TLS, log in and QUIT, sending nothing.

    fluxmail check --host HOST [--port --tls --ssl --username --password --ca-file --timeout]

Prints :meth:`FluxMail.test_connection`'s result as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from fluxmail.cli.common import EXIT_OK, Parser, connection_flags, mailer, out


def run(argv: list[str], env: Mapping[str, str]) -> int:
    """Check the relay the flags (or ``FLUXMAIL_*`` variables) describe; 0 if it accepts us."""
    args = _parser().parse_args(argv)
    out(json.dumps(mailer(args, env).test_connection(), indent=2))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    return Parser(
        prog="fluxmail check",
        description=(
            "Connect to the relay, upgrade TLS and log in without sending anything; print "
            "the result as JSON. Flags fall back to FLUXMAIL_* variables as for sending."
        ),
        parents=[connection_flags()],
    )
