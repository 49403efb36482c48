"""Many files in, results out: where each result goes when ``out`` names no
file, and stylizing them all with each file's failure collected, not fatal."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stylize.errors import StylizeError
from stylize.fileio import refuse_overwriting
from stylize.images import output_format
from stylize.inference.stylizer import NO_LIMITS, ImageLimits, ImageStylizer
from stylize.inference.video import ENCODERS


@dataclass(frozen=True)
class FilesResult:
    """What ``stylize_files`` did: the results written, and each source that
    failed with its one-line reason."""

    written: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)


def stylize_files(
    stylizer: ImageStylizer,
    pairs: Sequence[tuple[Path, Path]],
    limits: ImageLimits = NO_LIMITS,
    on_file: Callable[[Path], None] | None = None,
) -> FilesResult:
    """Stylize every (source, destination) of ``plan_outputs``; a file that
    fails (unreadable, too large, unwritable) is recorded and the rest go on.
    ``on_file(source)`` hears when each is done."""
    result = FilesResult()
    for source, destination in pairs:
        try:
            stylizer.stylize_file(source, destination, limits.max_size, limits.max_pixels)
            result.written.append(destination)
        except StylizeError as error:
            result.failures.append((source, str(error)))
        if on_file is not None:
            on_file(source)
    return result


def plan_outputs(found: Sequence[tuple[Path, Path]], out: Path | None, model_name: str) -> list[tuple[Path, Path]]:
    """Pair every input image (``images.expand_inputs``) with where its result goes.

    One input may go to a file (``--out result.png``); otherwise results go into
    a folder (``--out`` or the current one) as ``NAME-MODEL.EXT``, keeping the
    sub-folders of folder inputs. The same file given twice is stylized once.
    Every name is planned before anything is written: a result never replaces
    another result of the run nor one of its inputs (``distinct_paths``), and
    never lands outside the folder.
    """
    sources = _unique_sources(found)
    if out is not None and out.suffix and not out.is_dir():
        if len(sources) > 1:
            raise StylizeError(f"{len(sources)} inputs need --out to be a folder, not the file {out}")
        output_format(out)
        pairs = [(sources[0][0], out)]
    else:
        folder = out if out is not None else Path(".")
        wanted = [folder / relative.parent / result_name(relative, model_name) for _, relative in sources]
        taken = [source for source, _ in sources]
        pairs = list(zip([source for source, _ in sources], distinct_paths(wanted, taken), strict=True))
    for source, destination in pairs:
        refuse_overwriting(source, destination)  # before any work, not after the other images
    return pairs


def result_name(source: Path, model_name: str) -> str:
    """``NAME-MODEL.EXT``: a result's file name before any renaming."""
    return f"{source.stem}-{model_name}{source.suffix}"


def _unique_sources(found: Sequence[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """``found`` without repeats of a file (a file given twice, or also inside a folder given)."""
    unique: dict[Path, tuple[Path, Path]] = {}
    for source, relative in found:
        unique.setdefault(source.resolve(), (source, relative))
    return list(unique.values())


def _key(path: Path) -> str:
    # Case-blind: on macOS, Windows and memory cards PHOTO.jpg and photo.jpg are one file.
    return str(path.resolve()).casefold()


def distinct_paths(wanted: Sequence[Path], taken: Iterable[Path] = ()) -> list[Path]:
    """``wanted`` in order, each renamed ``STEM-2.EXT``, ``STEM-3.EXT``, ... where
    it would be the same file as an earlier one or as one of ``taken``."""
    used = {_key(path) for path in taken}
    result = []
    for path in wanted:
        candidate, number = path, 1
        while _key(candidate) in used:
            number += 1
            candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        used.add(_key(candidate))
        result.append(candidate)
    return result


def default_video_output(source: Path, model_name: str) -> Path:
    """``NAME-MODEL.EXT`` in the current folder, EXT the source's if writable, else .mp4."""
    source = Path(source)
    suffix = source.suffix.lower()
    return Path(result_name(source, model_name)).with_suffix(suffix if suffix in ENCODERS else ".mp4")
