"""Flicker frame by frame: the warping error of every frame against the
previous one, from ``benchmarks.flicker``'s results, one panel per clip and one
line per model (the mean over the photos measured). Flat lines are a steady
flicker; a sloped one (batch norm on the exposure ramp) follows the footage.

    python -m benchmarks.flicker_curves [--results benchmarks/results/flicker.json]
        [--model NAME ...] --out assets/video-flicker-curves.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from stylize.images import save_pil
from stylize.report.chart import Panel, Series, render_chart

DEFAULT_MODELS = (
    "starry-night-instance",
    "starry-night-batch",
    "starry-night-instance stabilized",
    "starry-night-batch stabilized",
)


def flicker_panels(results: dict[str, object], models: list[str]) -> list[Panel]:
    """One panel per clip of ``benchmarks.flicker``'s JSON ``results``: each
    model's per-frame warping error (0..255), averaged over the photos.

    Raises KeyError naming a model the results do not hold."""
    measured = results["models"]
    missing = [model for model in models if model not in measured]
    if missing:
        raise KeyError(f"no results for {missing[0]!r}; measured: {', '.join(measured)}")
    clips = [row["clip"] for row in measured[models[0]]["summary"]]
    panels = []
    for index, clip in enumerate(clips):
        series = []
        for model in models:
            per_photo = [photo[index]["per_frame"] for photo in measured[model]["photos"]]
            mean = [statistics.mean(values) for values in zip(*per_photo, strict=True)]
            series.append(Series(range(1, len(mean) + 1), mean))
        panels.append(Panel(f"{clip}: warping error (0..255)", "frame", series))
    return panels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/flicker.json"))
    parser.add_argument("--model", action="append", help="a model as the results name it; repeatable")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    models = args.model or list(DEFAULT_MODELS)
    try:
        panels = flicker_panels(json.loads(args.results.read_text()), models)
    except KeyError as error:
        parser.error(error.args[0])
    save_pil(args.out, render_chart(panels, models))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
