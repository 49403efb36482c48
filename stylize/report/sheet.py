"""The comparison sheet: a labelled grid of a ``Comparison``, drawn with Pillow.

Columns: row labels, the content as fed to the models, one column per model
(its style thumbnail and norm on top, its numbers at the bottom), and the
optimisation reference if the comparison has one. Each content image gets one
block of rows (``sheet_rows``): plain, each contrast factor, each neighbour
batch; or the plain row alone, as a gallery. The reference fills plain rows only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from stylize.fileio import atomic_path
from stylize.images import decode_thumbnail, fit_into, output_format, resize_long_side, save_pil, tensor_to_image
from stylize.model.files import ModelInfo
from stylize.report.compare import CONTRAST_FACTORS, NEIGHBOURS, NEIGHBOURS_PER_BATCH, Comparison, adjust_contrast
from stylize.report.drawing import BACKGROUND, FAINT_INK, draw_lines, fit_text, font, line_height, wrap

MARGIN = 16
GAP = 6
LABEL_WIDTH = 210
TEXT_SIZE = 14
TITLE_SIZE = 18
HEADER_TEXT_LINES = 3
INSET_FRACTION = 3  # neighbour insets are a third of the cell


FOOTER_LABELS = (
    f"change: contrast x1 vs x{CONTRAST_FACTORS[0]:g}",
    "change: dark vs bright batch",
    "change: train vs eval mode",
    "lattice (periods 2, 4 px) vs photo",
    "content loss",
    "style loss",
    "style vs photo (1: photo, 0: painting)",
)


@dataclass(frozen=True)
class SheetRow:
    label: str
    content: torch.Tensor  # the content cell, as the models were fed it
    outputs: list[torch.Tensor | None]  # one cell per column after the content; None: left empty


def norm_label(norm: str) -> str:
    """A column's heading: "instance norm", ..., and "no norm" for ``none``."""
    return "no norm" if norm == "none" else f"{norm} norm"


def sheet_rows(comparison: Comparison) -> list[SheetRow]:
    """The grid's rows, top to bottom: per content image the plain result, then
    (unless ``stylized_only``) each contrast factor and each neighbour batch."""
    rows = []
    for index, (name, image) in enumerate(zip(comparison.content_names, comparison.contents, strict=True)):
        runs = [outputs[index] for outputs in comparison.outputs]
        reference: list[torch.Tensor | None] = []
        if comparison.reference is not None:
            reference.append(comparison.reference.outputs[index])
        empty = [None] * len(reference)
        plain: list[torch.Tensor | None] = [run.plain for run in runs]
        rows.append(SheetRow(f"{name}: stylized (eval mode)", image, plain + reference))
        if comparison.settings.stylized_only:
            continue
        for factor in CONTRAST_FACTORS:
            cells = [run.contrast[factor] for run in runs]
            rows.append(SheetRow(f"contrast x{factor:g} (eval mode)", adjust_contrast(image, factor), cells + empty))
        for kind, make in NEIGHBOURS.items():
            label = f"train mode, in a batch with {NEIGHBOURS_PER_BATCH} {kind} neighbours"
            cells = [run.in_batch[kind] for run in runs]
            rows.append(SheetRow(label, _with_inset(image, make(image)), cells + empty))
    return rows


@dataclass(frozen=True)
class SheetLayout:
    """Pixel geometry of the sheet; cell (row, column) holds one image,
    column 0 the content, column k the k-th model (then the reference)."""

    columns: int  # after the content
    cell_width: int
    row_heights: tuple[int, ...]
    thumbnail_height: int
    title: tuple[str, ...] = ()

    @classmethod
    def of(cls, comparison: Comparison, grid: list[SheetRow]) -> SheetLayout:
        cell_width = max(image.shape[-1] for image in comparison.contents)
        text = font(TEXT_SIZE)
        rows = tuple(
            max(row.content.shape[-2], len(wrap(row.label, text, LABEL_WIDTH)) * line_height(text)) for row in grid
        )
        columns = len(comparison.reports) + (comparison.reference is not None)
        layout = cls(columns, cell_width, rows, thumbnail_height=cell_width * 2 // 3)
        title = wrap(heading(comparison), font(TITLE_SIZE), layout.size[0] - 2 * MARGIN)
        return dataclasses.replace(layout, title=tuple(title))

    @property
    def text_line(self) -> int:
        return line_height(font(TEXT_SIZE))

    @property
    def title_height(self) -> int:
        return len(self.title) * line_height(font(TITLE_SIZE)) + GAP

    @property
    def header_height(self) -> int:
        return self.thumbnail_height + GAP + HEADER_TEXT_LINES * self.text_line

    @property
    def footer_height(self) -> int:
        return len(FOOTER_LABELS) * self.text_line

    @property
    def grid_top(self) -> int:
        return MARGIN + self.title_height + self.header_height + GAP

    def column_left(self, column: int) -> int:
        return MARGIN + LABEL_WIDTH + GAP + column * (self.cell_width + GAP)

    def row_top(self, row: int) -> int:
        return self.grid_top + sum(self.row_heights[:row]) + row * GAP

    @property
    def footer_top(self) -> int:
        return self.row_top(len(self.row_heights)) + GAP

    @property
    def size(self) -> tuple[int, int]:
        width = self.column_left(self.columns + 1) - GAP + MARGIN
        return width, self.footer_top + self.footer_height + MARGIN


def _paste(sheet: Image.Image, image: torch.Tensor, xy: tuple[int, int]) -> None:
    sheet.paste(tensor_to_image(image), xy)


def _with_inset(image: torch.Tensor, inset: torch.Tensor) -> torch.Tensor:
    """The image with a small copy of ``inset`` in its bottom-right corner, framed."""
    h, w = image.shape[-2:]
    small = resize_long_side(inset, max(4, max(h, w) // INSET_FRACTION))
    sh, sw = small.shape[-2:]
    framed = image.clone()
    framed[..., h - sh - 2 :, w - sw - 2 :] = 1.0
    framed[..., h - sh :, w - sw :] = small
    return framed


def heading(comparison: Comparison) -> str:
    norms = " vs ".join(dict.fromkeys(report.info.config.norm for report in comparison.reports))
    return f"stylize compare: {norms}. Changes are mean |difference| of the output, 0..255."


def _model_heading(info: ModelInfo) -> list[str]:
    return [norm_label(info.config.norm), f"style: {info.style or '?'}", info.name]


def render_sheet(comparison: Comparison) -> Image.Image:
    grid = sheet_rows(comparison)
    layout = SheetLayout.of(comparison, grid)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    text, title = font(TEXT_SIZE), font(TITLE_SIZE)
    draw_lines(draw, (MARGIN, MARGIN), list(layout.title), title, (0, 0, 0))

    header_top = MARGIN + layout.title_height
    text_top = header_top + layout.thumbnail_height + GAP
    draw_lines(draw, (layout.column_left(0), text_top), ["content"], text)
    headings = [(report.info, _model_heading(report.info)) for report in comparison.reports]
    footers = [report.shown() for report in comparison.reports]
    if comparison.reference is not None:
        first = comparison.reports[0].info
        headings.append((first, ["optimisation (ceiling)", f"{comparison.reference.steps} L-BFGS steps", first.name]))
        footers.append(comparison.reference.shown())
    for column, (info, lines) in enumerate(headings, start=1):
        left = layout.column_left(column)
        thumbnail = decode_thumbnail(info.style_thumbnail)
        if thumbnail is not None:
            _paste(sheet, fit_into(thumbnail, layout.cell_width, layout.thumbnail_height), (left, header_top))
        else:
            draw_lines(draw, (left, header_top), wrap("(no style image in the model file)", text, layout.cell_width),
                       text, FAINT_INK)  # fmt: skip
        draw_lines(draw, (left, text_top), [fit_text(line, text, layout.cell_width) for line in lines], text)

    for index, row in enumerate(grid):
        top = layout.row_top(index)
        draw_lines(draw, (MARGIN, top), wrap(row.label, text, LABEL_WIDTH), text)
        for column, cell in enumerate([row.content, *row.outputs]):
            if cell is not None:
                _paste(sheet, cell, (layout.column_left(column), top))

    footer_top = layout.footer_top
    draw_lines(draw, (MARGIN, footer_top), list(FOOTER_LABELS), text, FAINT_INK)
    for column, cells in enumerate(footers, start=1):
        draw_lines(draw, (layout.column_left(column), footer_top), cells, text)
    return sheet


def numbers_path(sheet: Path) -> Path:
    """Where a sheet's numbers go: beside it, as JSON."""
    return sheet.with_suffix(".json")


def write_sheet(comparison: Comparison, out: Path) -> Path:
    """Write the sheet image and its numbers as JSON beside it; returns the JSON's path.

    Raises StylizeError if ``out``'s extension names no image format Pillow
    writes, or the image or the JSON cannot be written.
    """
    output_format(out)
    save_pil(out, render_sheet(comparison))
    numbers = numbers_path(out)
    with atomic_path(numbers) as temporary:
        temporary.write_text(json.dumps(comparison.to_dict(), indent=2) + "\n")
    return numbers
