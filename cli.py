"""Run stylize from a source checkout: ``python cli.py ...`` is the ``stylize`` command."""

import sys

from stylize.cli import main

if __name__ == "__main__":
    sys.exit(main())
