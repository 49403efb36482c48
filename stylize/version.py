"""The version, from the installed package's metadata: pyproject.toml is its one source."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("stylize")
except PackageNotFoundError:  # run from a source tree that was never installed (PYTHONPATH=.)
    VERSION = "unknown (not installed)"
