"""``python -m fluxmail``: the same command line as the ``fluxmail`` console script."""

import sys

from fluxmail.cli import main

if __name__ == "__main__":
    sys.exit(main())
