"""Line charts drawn with Pillow: panels side by side, one colour per series,
a legend under them. The training loss curves and the video flicker curves
draw with it. Pillow rather than matplotlib: a few line charts do not justify
a plotting stack as a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from stylize.report.drawing import BACKGROUND, FAINT_INK, INK, draw_lines, fit_text, font, line_height

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
           (140, 86, 75), (227, 119, 194))  # fmt: skip
PANEL_WIDTH, PANEL_HEIGHT = 420, 320
MARGIN, AXIS_LEFT, AXIS_BOTTOM = 20, 64, 40
TEXT_SIZE, TITLE_SIZE = 13, 16
LEGEND_COLUMNS = 3  # at least; one a panel where there are more


@dataclass(frozen=True)
class Series:
    """One line: ``ys`` at ``xs``; ``faint`` (same length, or empty) drawn under
    it in a pale shade of its colour, such as the raw values of a smoothed line."""

    xs: Sequence[float]
    ys: Sequence[float]
    faint: Sequence[float] = ()


@dataclass(frozen=True)
class Panel:
    """One chart: one series per legend entry, in the legend's order."""

    title: str
    x_label: str
    series: Sequence[Series]
    log_y: bool = False


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
    """Values for a log axis spanning 10**low .. 10**high: powers of ten
    when the range spans enough of them, else 1-2-5 steps, else round numbers."""
    decades = range(math.floor(low), math.ceil(high) + 1)
    for multipliers in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**d for d in decades for m in multipliers if low <= math.log10(m * 10.0**d) <= high]
        if len(ticks) >= 3:
            return ticks[:: math.ceil(len(ticks) / most)]
    return [tick for tick in nice_ticks(10**low, 10**high) if tick > 0]


@dataclass(frozen=True)
class _Axes:
    """Maps (x, y) into a panel's plotting box; ``ys`` is in log10 units on a log axis."""

    box: tuple[int, int, int, int]
    xs: tuple[float, float]
    ys: tuple[float, float]
    log_y: bool

    def point(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        across = left + (x - self.xs[0]) / max(self.xs[1] - self.xs[0], 1e-12) * (right - left)
        value = math.log10(max(y, 1e-30)) if self.log_y else y
        up = bottom - (value - self.ys[0]) / max(self.ys[1] - self.ys[0], 1e-12) * (bottom - top)
        return across, up

    def y_ticks(self) -> list[float]:
        return log_ticks(*self.ys) if self.log_y else nice_ticks(*self.ys)


def _y_range(panel: Panel) -> tuple[float, float]:
    """Log10 bounds of the positive values on a log axis; 0 to the highest value on a linear one."""
    values = [v for series in panel.series for v in (*series.ys, *series.faint) if math.isfinite(v)]
    if panel.log_y:
        positive = [math.log10(v) for v in values if v > 0]
        if not positive:
            return -1.0, 1.0
        low, high = min(positive), max(positive)
        pad = max((high - low) * 0.05, 0.05)
        return low - pad, high + pad
    high = max(values, default=1.0)
    return 0.0, high * 1.05 if high > 0 else 1.0


def _draw_frame(draw: ImageDraw.ImageDraw, origin: tuple[int, int], panel: Panel) -> _Axes:
    """Title, gridlines, ticks and box of one panel; returns its axes."""
    x0, y0 = origin
    text, title = font(TEXT_SIZE), font(TITLE_SIZE)
    draw.text((x0 + AXIS_LEFT, y0), panel.title, font=title, fill=INK)
    box = (x0 + AXIS_LEFT, y0 + line_height(title) + 4, x0 + PANEL_WIDTH - 10, y0 + PANEL_HEIGHT - AXIS_BOTTOM)
    left, top, right, bottom = box
    xs = [x for series in panel.series for x in series.xs]
    axes = _Axes(box, (min(xs), max(xs)), _y_range(panel), panel.log_y)
    for tick in axes.y_ticks():
        _, y = axes.point(axes.xs[0], tick)
        draw.line([(left, y), (right, y)], fill=(235, 235, 235))
        label = f"{tick:.3g}"
        draw.text((left - 6 - text.getlength(label), y - TEXT_SIZE / 2), label, font=text, fill=FAINT_INK)
    for tick in nice_ticks(*axes.xs):
        x, _ = axes.point(tick, 1.0)
        draw.line([(x, bottom), (x, bottom + 4)], fill=INK)
        label = f"{tick:g}"
        draw.text((x - text.getlength(label) / 2, bottom + 6), label, font=text, fill=FAINT_INK)
    draw.rectangle(box, outline=INK)
    draw.text(((left + right) / 2 - text.getlength(panel.x_label) / 2, bottom + 8 + line_height(text)),
              panel.x_label, font=text, fill=FAINT_INK)  # fmt: skip
    return axes


def _draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], panel: Panel) -> None:
    axes = _draw_frame(draw, origin, panel)
    for index, series in enumerate(panel.series):
        colour = COLOURS[index % len(COLOURS)]
        pale = tuple(round(c + (255 - c) * 0.7) for c in colour)
        for ys, fill, width in ((series.faint, pale, 1), (series.ys, colour, 2)):
            if not ys:
                continue
            points = [axes.point(x, y) for x, y in zip(series.xs, ys, strict=True)]
            if len(points) == 1:
                x, y = points[0]
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=fill)
            else:
                draw.line(points, fill=fill, width=width)


def render_chart(panels: Sequence[Panel], names: Sequence[str]) -> Image.Image:
    """The panels in a row over a legend naming each series index's colour
    (``names[i]`` for every panel's series ``i``)."""
    text = font(TEXT_SIZE)
    columns = max(LEGEND_COLUMNS, len(panels))
    legend_rows = math.ceil(len(names) / columns)
    width = MARGIN * 2 + PANEL_WIDTH * len(panels)
    height = MARGIN * 2 + PANEL_HEIGHT + 8 + legend_rows * line_height(text)
    figure = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    for index, panel in enumerate(panels):
        _draw_panel(draw, (MARGIN + index * PANEL_WIDTH, MARGIN), panel)
    legend_top = MARGIN + PANEL_HEIGHT + 8
    column_width = (width - 2 * MARGIN - AXIS_LEFT) // columns
    for index, name in enumerate(names):
        x = MARGIN + AXIS_LEFT + (index % columns) * column_width
        y = legend_top + (index // columns) * line_height(text)
        draw.line([(x, y + TEXT_SIZE / 2 + 1), (x + 24, y + TEXT_SIZE / 2 + 1)], fill=COLOURS[index % len(COLOURS)],
                  width=3)  # fmt: skip
        draw_lines(draw, (x + 30, y), [fit_text(name, text, column_width - 40)], text)
    return figure
