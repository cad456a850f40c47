"""The ``fluxmail`` command line.

Three forms, told apart by the first argument::

    fluxmail --host HOST --subject S --recipients A [...] --body TEXT   (send.py)
    fluxmail check --host HOST [...]                                    (check.py)
    fluxmail bulk --csv PATH --sender ADDR --subject TEMPLATE [...]     (bulk.py)

The first is the contract's form (spec section 6) and keeps every flag it had; ``check`` and
``bulk`` are beyond the contract. A connection flag that is absent falls back to its
``FLUXMAIL_*`` variable (spec section 5), then to the library default: flags always win.

Exit codes, decided in one place (:func:`fluxmail.cli.common.exit_code`):

* 0: success. The library's success string, the ``--dry-run`` preview, ``check``'s JSON or
  ``bulk``'s summary goes to stdout.
* 1: the CLI rejected its own arguments or input files before doing anything: ``--body`` with
  ``--body-file``, ``--tls`` with ``--ssl``, no body, an unreadable file, an unknown type, a
  malformed CSV.
* 2: a :class:`~fluxmail.FluxMailException` (``error: <message> (code: <code>)`` followed by a
  ``cause:`` line for each chained cause), or a usage error reported by argparse.
* 3: ``bulk`` only: the run completed but some rows failed (beyond the contract's codes).
* 99: anything unexpected: one ``unexpected error: ...`` line; the traceback only with
  ``FLUXMAIL_DEBUG=1``.
* 130: interrupted with Ctrl-C.

Everything but the result goes to stderr, and the password is never printed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from fluxmail.cli.bulk import run as run_bulk
from fluxmail.cli.check import run as run_check
from fluxmail.cli.common import exit_code
from fluxmail.cli.send import run as run_send
from fluxmail.config import env_flag

__all__ = ["main"]


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
            return run_check(args[1:], env)
        if args[:1] == ["bulk"]:
            return run_bulk(args[1:], env)
        return run_send(args, env)
    except (Exception, KeyboardInterrupt) as exc:
        return exit_code(exc, debug=env_flag(env.get("FLUXMAIL_DEBUG")))
