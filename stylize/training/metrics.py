"""The metrics log: a training run's losses, one JSON line per step, beside its model.

``NAME.safetensors`` is logged to ``NAME.metrics.jsonl``; each line holds
``step``, the loss terms ``content``, ``style``, ``tv``, ``shift`` and ``total``,
``images_per_s`` and ``seconds``. The trainer writes it (``MetricsLog``) and
``stylize curves`` reads it (``read_metrics``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from stylize.errors import StylizeError
from stylize.fileio import atomic_path

SUFFIX = ".metrics.jsonl"
# The loss terms a reader takes from every line.
TERMS = ("content", "style", "total")


def metrics_log_path(out: Path) -> Path:
    """The per-step losses of the run writing the model ``out``."""
    return out.with_name(f"{out.stem}{SUFFIX}")


def run_name(path: Path) -> str:
    """``starry-night-instance.metrics.jsonl`` -> ``starry-night-instance``."""
    return path.name.removesuffix(SUFFIX).removesuffix(".jsonl")


class MetricsLog:
    """Per-step losses as JSON lines; a resumed run drops lines after its
    checkpoint. The file is made with the first line: a run that stops before
    its first step leaves none."""

    def __init__(self, path: Path, keep_until_step: int):
        self.path = path
        self.keep_until_step = keep_until_step
        self._handle: TextIO | None = None

    def _open(self) -> TextIO:
        kept = []
        if self.keep_until_step > 0 and self.path.is_file():
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if json.loads(line)["step"] <= self.keep_until_step]
        with atomic_path(self.path) as temporary:
            temporary.write_text("".join(f"{line}\n" for line in kept))
        return open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self._handle = self._open()
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


@dataclass(frozen=True)
class Run:
    name: str
    steps: list[int]
    losses: dict[str, list[float]]  # term -> one value per step


def read_metrics(path: Path) -> Run:
    """A metrics log's ``TERMS`` per step. Raises StylizeError if the file is
    missing, unreadable, holds a line that is not a record, or no steps."""
    path = Path(path)
    if not path.is_file():
        raise StylizeError(f"no such metrics file: {path}")
    steps: list[int] = []
    losses: dict[str, list[float]] = {term: [] for term in TERMS}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise StylizeError(f"cannot read {path}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            values = [float(record[term]) for term in TERMS]
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            raise StylizeError(f"line {number} of {path} is not a training metrics record") from None
        steps.append(step)
        for term, value in zip(TERMS, values, strict=True):
            losses[term].append(value)
    if not steps:
        raise StylizeError(f"{path} holds no training steps")
    return Run(run_name(path), steps, losses)
