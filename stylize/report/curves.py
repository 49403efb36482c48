"""Loss curves of training runs on one figure.

One panel per loss term (content, style, total), a log-scaled loss axis, one
colour per run; per-step values are drawn faint with a moving median on top,
since single steps on a batch of four photos are noisy.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from stylize.images import output_format, save_pil
from stylize.report.chart import Panel, Series, render_chart
from stylize.training.metrics import TERMS, Run, read_metrics

SMOOTHING_POINTS = 50  # the moving median spans about 1/50 of the run


def moving_median(values: Sequence[float], window: int) -> list[float]:
    """Trailing median over ``window`` values (fewer at the start): a single
    bad batch's spike does not lift the line for a whole window, as a mean would."""
    return [statistics.median(values[max(0, index - window + 1) : index + 1]) for index in range(len(values))]


def _smoothed(run: Run, term: str) -> Series:
    values = run.losses[term]
    window = max(1, len(values) // SMOOTHING_POINTS)
    return Series(run.steps, moving_median(values, window), faint=values)


def render_curves(runs: Sequence[Run]) -> Image.Image:
    panels = [
        Panel(
            f"{term} loss" if term == "total" else f"{term} loss (weighted)",
            "step",
            [_smoothed(run, term) for run in runs],
            log_y=True,
        )  # fmt: skip
        for term in TERMS
    ]
    return render_chart(panels, [run.name for run in runs])


def write_curves(metrics: Sequence[Path], out: Path) -> list[Run]:
    """Draw the runs' curves into ``out``; returns the runs read.

    ``metrics``: training metrics logs (``*.metrics.jsonl``); ``out``'s extension
    picks the image format. Raises StylizeError if it names none Pillow writes,
    a log is missing or not a metrics log, or ``out`` cannot be written.
    """
    output_format(out)
    runs = [read_metrics(path) for path in metrics]
    save_pil(out, render_curves(runs))
    return runs
