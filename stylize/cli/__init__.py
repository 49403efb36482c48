"""The ``stylize`` command line; the only part of the package that prints."""

from stylize.cli.app import app, main

__all__ = ["app", "main"]
