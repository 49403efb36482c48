"""Loss curves of training runs on one figure, drawn with Pillow.

One panel per loss term (content, style, total), a log-scaled loss axis, one
colour per run; per-step values are drawn faint with a moving median on top,
since single steps on a batch of four photos are noisy. Pillow rather than
matplotlib: three line charts do not justify a plotting stack as a dependency.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from stylize.images import output_format, save_pil
from stylize.report.drawing import BACKGROUND, FAINT_INK, INK, draw_lines, fit_text, font, line_height
from stylize.training.metrics import TERMS, Run, read_metrics

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
           (140, 86, 75), (227, 119, 194))  # fmt: skip
PANEL_WIDTH, PANEL_HEIGHT = 420, 320
MARGIN, AXIS_LEFT, AXIS_BOTTOM = 20, 64, 40
TEXT_SIZE, TITLE_SIZE = 13, 16
SMOOTHING_POINTS = 50  # the moving median spans about 1/50 of the run


def moving_median(values: Sequence[float], window: int) -> list[float]:
    """Trailing median over ``window`` values (fewer at the start): a single
    bad batch's spike does not lift the line for a whole window, as a mean would."""
    return [statistics.median(values[max(0, index - window + 1) : index + 1]) for index in range(len(values))]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round numbers (1, 2 or 5 times a power of ten) spanning [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(power * f for f in (1, 2, 5, 10) if power * f >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def log_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Loss values for a log axis spanning 10**low .. 10**high: powers of ten
    when the range spans enough of them, else 1-2-5 steps, else round numbers."""
    decades = range(math.floor(low), math.ceil(high) + 1)
    for multipliers in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**d for d in decades for m in multipliers if low <= math.log10(m * 10.0**d) <= high]
        if len(ticks) >= 3:
            return ticks[:: math.ceil(len(ticks) / most)]
    return [tick for tick in nice_ticks(10**low, 10**high) if tick > 0]


@dataclass(frozen=True)
class _Axes:
    """Maps (step, log10 loss) into a panel's plotting box."""

    box: tuple[int, int, int, int]
    steps: tuple[float, float]
    logs: tuple[float, float]

    def point(self, step: float, value: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        x = left + (step - self.steps[0]) / max(self.steps[1] - self.steps[0], 1e-12) * (right - left)
        log = math.log10(max(value, 1e-30))
        y = bottom - (log - self.logs[0]) / max(self.logs[1] - self.logs[0], 1e-12) * (bottom - top)
        return x, y


def _log_range(runs: Sequence[Run], term: str) -> tuple[float, float]:
    positive = [v for run in runs for v in run.losses[term] if v > 0 and math.isfinite(v)]
    if not positive:
        return -1.0, 1.0
    low, high = math.log10(min(positive)), math.log10(max(positive))
    pad = max((high - low) * 0.05, 0.05)
    return low - pad, high + pad


def _draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], runs: Sequence[Run], term: str) -> None:
    x0, y0 = origin
    text, title = font(TEXT_SIZE), font(TITLE_SIZE)
    heading = f"{term} loss" if term == "total" else f"{term} loss (weighted)"
    draw.text((x0 + AXIS_LEFT, y0), heading, font=title, fill=INK)
    box = (x0 + AXIS_LEFT, y0 + line_height(title) + 4, x0 + PANEL_WIDTH - 10, y0 + PANEL_HEIGHT - AXIS_BOTTOM)
    left, top, right, bottom = box
    steps = (min(min(run.steps) for run in runs), max(max(run.steps) for run in runs))
    axes = _Axes(box, steps, _log_range(runs, term))

    for tick in log_ticks(*axes.logs):
        _, y = axes.point(steps[0], tick)
        draw.line([(left, y), (right, y)], fill=(235, 235, 235))
        label = f"{tick:.3g}"
        draw.text((left - 6 - text.getlength(label), y - TEXT_SIZE / 2), label, font=text, fill=FAINT_INK)
    for tick in nice_ticks(*steps):
        x, _ = axes.point(tick, 1.0)
        draw.line([(x, bottom), (x, bottom + 4)], fill=INK)
        label = f"{tick:g}"
        draw.text((x - text.getlength(label) / 2, bottom + 6), label, font=text, fill=FAINT_INK)
    draw.rectangle(box, outline=INK)
    draw.text(((left + right) / 2 - text.getlength("step") / 2, bottom + 8 + line_height(text)), "step",
              font=text, fill=FAINT_INK)  # fmt: skip

    for index, run in enumerate(runs):
        colour = COLOURS[index % len(COLOURS)]
        faint = tuple(round(c + (255 - c) * 0.7) for c in colour)
        values = run.losses[term]
        window = max(1, len(values) // SMOOTHING_POINTS)
        for series, fill, width in ((values, faint, 1), (moving_median(values, window), colour, 2)):
            points = [axes.point(step, value) for step, value in zip(run.steps, series, strict=True)]
            if len(points) == 1:
                x, y = points[0]
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=fill)
            else:
                draw.line(points, fill=fill, width=width)


def render_curves(runs: Sequence[Run]) -> Image.Image:
    text = font(TEXT_SIZE)
    legend_rows = math.ceil(len(runs) / 3)
    width = MARGIN * 2 + PANEL_WIDTH * len(TERMS)
    height = MARGIN * 2 + PANEL_HEIGHT + 8 + legend_rows * line_height(text)
    figure = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    for index, term in enumerate(TERMS):
        _draw_panel(draw, (MARGIN + index * PANEL_WIDTH, MARGIN), runs, term)
    legend_top = MARGIN + PANEL_HEIGHT + 8
    column_width = (width - 2 * MARGIN - AXIS_LEFT) // 3
    for index, run in enumerate(runs):
        x = MARGIN + AXIS_LEFT + (index % 3) * column_width
        y = legend_top + (index // 3) * line_height(text)
        draw.line([(x, y + TEXT_SIZE / 2 + 1), (x + 24, y + TEXT_SIZE / 2 + 1)], fill=COLOURS[index % len(COLOURS)],
                  width=3)  # fmt: skip
        draw_lines(draw, (x + 30, y), [fit_text(run.name, text, column_width - 40)], text)
    return figure


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
