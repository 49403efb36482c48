"""Atomic file writes: a file is either the old one or the complete new one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from stylize.errors import StylizeError


def _file_mode() -> int:
    """The mode a plainly created file gets (mkstemp would make it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _cannot_write(path: Path, error: OSError) -> StylizeError:
    return StylizeError(f"cannot write {path}: {error.strerror or error}")


def _refuse_blocked(path: Path) -> None:
    blocking = next((parent for parent in reversed(path.parents) if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise StylizeError(f"cannot write {path}: {blocking} is a file, not a folder")


def make_folder_for(path: Path) -> None:
    """Create ``path``'s folder, or say in one line why it cannot be created."""
    path = Path(path)
    _refuse_blocked(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cannot_write(path, error) from None


def check_writable(path: Path) -> None:
    """Fail before an hour of work rather than when saving its result. Creates
    nothing: a job that fails later leaves no empty folders behind."""
    path = Path(path)
    _refuse_blocked(path)
    nearest = next(parent for parent in path.parents if parent.exists())
    try:
        tempfile.TemporaryFile(dir=nearest).close()
    except OSError as error:
        raise _cannot_write(path, error) from None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary name keeps the suffix, so writers that infer a format from
    the extension still work. On any error the temporary file is removed and
    ``path`` is untouched.
    """
    path = Path(path)
    make_folder_for(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    except OSError as error:
        raise _cannot_write(path, error) from None
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, _FILE_MODE)  # after writing: some writers replace the file (safetensors does)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _cannot_write(path, error) from None
        raise


def load_torch_file(path: Path, what: str) -> Any:
    """``torch.load`` that never runs code from the file (``weights_only``) and
    turns every way a foreign file fails into one line naming ``what`` it should be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. pickle protocol notices: the error below says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # refused pickles, zip, EOF and unpickling errors all mean "not that"
        raise StylizeError(f"{path} is not {what} ({type(error).__name__})") from None


def refuse_overwriting(source: Path, destination: Path) -> None:
    """Results never replace the file they were made from."""
    if Path(destination).resolve() == Path(source).resolve():
        raise StylizeError(f"refusing to overwrite the input {source}")


def format_for_extension(path: Path, formats: Mapping[str, str], kind: str) -> str:
    """The format ``path``'s extension names in ``formats`` (extension -> format,
    most common first), or one line listing what ``kind`` files can be."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        shown = ", ".join(list(formats)[:_EXTENSIONS_SHOWN]) + (", ..." if len(formats) > _EXTENSIONS_SHOWN else "")
        raise StylizeError(f"cannot write {kind} with extension {suffix or '(none)'!r}; use one of: {shown}")
    return formats[suffix]


_EXTENSIONS_SHOWN = 6


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
