from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylize.report.chart import COLOURS, MARGIN, PANEL_WIDTH, log_ticks, nice_ticks
from stylize.report.curves import moving_median
from stylize.training.metrics import read_metrics


def _write_metrics(path: Path, steps: int, start: float, decay: float) -> Path:
    lines = []
    for step in range(1, steps + 1):
        content, style = start * math.exp(-decay * step), 10 * start * math.exp(-2 * decay * step)
        lines.append(json.dumps({"step": step, "content": content, "style": style, "tv": 0.01,
                                 "total": content + style + 0.01, "images_per_s": 3.0}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_curves_draw_every_run_in_its_colour(cli, tmp_path: Path) -> None:
    runs = [
        _write_metrics(tmp_path / "wave-instance.metrics.jsonl", 120, 2.0, 0.02),
        _write_metrics(tmp_path / "wave-batch.metrics.jsonl", 80, 3.0, 0.01),
    ]
    result = cli("curves", *runs, "--out", tmp_path / "curves.png")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {tmp_path / 'curves.png'} (2 runs, 200 steps)"
    figure = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB")).astype(int)
    assert figure.shape[1] == 2 * MARGIN + 3 * PANEL_WIDTH
    for colour in COLOURS[:2]:
        matches = np.abs(figure - np.array(colour)).sum(axis=2) < 10
        columns = np.nonzero(matches.any(axis=0))[0]
        # each run's line crosses all three panels
        assert all(((columns >= MARGIN + i * PANEL_WIDTH) & (columns < MARGIN + (i + 1) * PANEL_WIDTH)).any()
                   for i in range(3))  # fmt: skip
    assert not (np.abs(figure - np.array(COLOURS[2])).sum(axis=2) < 10).any()  # no third run


def test_metrics_are_read_per_term_and_named_after_the_model(tmp_path: Path) -> None:
    run = read_metrics(_write_metrics(tmp_path / "wave-ibn.metrics.jsonl", 5, 1.0, 0.1))
    assert run.name == "wave-ibn" and run.steps == [1, 2, 3, 4, 5]
    assert run.losses["content"][0] == pytest.approx(math.exp(-0.1))
    assert run.losses["total"][4] == pytest.approx(math.exp(-0.5) + 10 * math.exp(-1.0) + 0.01)


def test_moving_median_and_ticks() -> None:
    assert moving_median([1, 2, 3, 4, 5], 2) == [1, 1.5, 2.5, 3.5, 4.5]
    assert moving_median([4.0], 10) == [4.0]
    assert moving_median([1, 1, 9, 1, 1, 1], 3) == [1, 1, 1, 1, 1, 1]  # one spike does not lift the line
    assert nice_ticks(0, 1000) == [0, 200, 400, 600, 800, 1000]
    assert nice_ticks(3, 97) == [20, 40, 60, 80]
    assert log_ticks(-3.2, 1.1) == [1e-3, 1e-2, 0.1, 1, 10]
    assert log_ticks(-1.05, -0.5) == pytest.approx([0.09, 0.1, 0.2, 0.3])  # too few 1-2-5 steps inside
    assert log_ticks(-0.52, -0.48) == pytest.approx([0.31, 0.32, 0.33])  # within one step: round numbers


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such metrics file"),
        ("", "holds no training steps"),
        ('{"step": 1, "content": 1.0}\n', "line 1 of"),
        ("not json\n", "is not a training metrics record"),
    ],
)
def test_bad_metrics_are_one_line_and_write_nothing(cli, tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "run.metrics.jsonl"
    if content is not None:
        path.write_text(content)
    result = cli("curves", path, "--out", tmp_path / "curves.png")
    assert result.code == 2 and len(result.error_lines) == 1 and message in result.err, result.err
    assert not (tmp_path / "curves.png").exists()
