"""Where the command line writes results when ``--out`` names no file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stylize.errors import StylizeError
from stylize.fileio import refuse_overwriting
from stylize.images import output_format
from stylize.inference.video import ENCODERS


def plan_outputs(found: Sequence[tuple[Path, Path]], out: Path | None, model_name: str) -> list[tuple[Path, Path]]:
    """Pair every input image (``images.expand_inputs``) with where its result goes.

    One input may go to a file (``--out result.png``); otherwise results go into
    a folder (``--out`` or the current one) as ``NAME-MODEL.EXT``, keeping the
    sub-folders of folder inputs.
    """
    if out is not None and out.suffix and not out.is_dir():
        if len(found) > 1:
            raise StylizeError(f"{len(found)} inputs need --out to be a folder, not the file {out}")
        output_format(out)
        pairs = [(found[0][0], out)]
    else:
        folder = out if out is not None else Path(".")
        pairs = [
            (source, folder / relative.parent / f"{relative.stem}-{model_name}{relative.suffix}")
            for source, relative in found
        ]
    for source, destination in pairs:
        refuse_overwriting(source, destination)  # before any work, not after the other images
    return pairs


def default_video_output(source: Path, model_name: str) -> Path:
    """``NAME-MODEL.EXT`` in the current folder, EXT the source's if writable, else .mp4."""
    suffix = Path(source).suffix.lower()
    return Path(f"{Path(source).stem}-{model_name}{suffix if suffix in ENCODERS else '.mp4'}")
