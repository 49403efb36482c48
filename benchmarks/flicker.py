"""How much does each model flicker on video? Frame-by-frame stylization of
clips with known motion made from held-out photos (``stylize.report.flicker``).

    python -m benchmarks.flicker --photos FOLDER [--count 3] [--models A B ...] [--stabilize]

Per model and clip: the warping error (0..255, the mean over photos) and, where
the source clip is not exactly steady, the same relative to the source's; the
whole frame's colour drift. Models default to every bundled one and the zoo.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict
from pathlib import Path

import torch

from stylize.images import find_images, load_image
from stylize.inference.stylizer import InferenceSettings, Stylizer
from stylize.inference.temporal import FlowStabilizer
from stylize.model.files import bundled_models, load_model
from stylize.report.flicker import Flicker, flicker_of, standard_clips, stylize_clip

from .common import machine, show, write_json

CPU = torch.device("cpu")
ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
VARIANTS = ("frame by frame", "stabilized")


def measure(
    model: str, photos: list[torch.Tensor], size: tuple[int, int], frames: int, stabilize: bool = False
) -> dict[str, list[list[Flicker]]]:
    """Per variant ("frame by frame", and "stabilized" if asked: the same frames
    through a fresh flow stabilizer), per photo, per clip. fp32: differences of
    a level must not come from rounding."""
    stylizer = Stylizer(load_model(model, CPU), CPU, InferenceSettings(precision="fp32", compile=False))
    results: dict[str, list[list[Flicker]]] = {variant: [] for variant in VARIANTS[: 1 + stabilize]}
    for photo in photos:
        for per_photo in results.values():
            per_photo.append([])
        for clip in standard_clips(photo, size, frames):
            stylized = stylize_clip(stylizer, clip)
            results["frame by frame"][-1].append(flicker_of(stylized, clip))
            if stabilize:
                results["stabilized"][-1].append(flicker_of(FlowStabilizer()(clip.frames, stylized), clip))
    return results


def _label(model: str) -> str:
    """The model's name; ``zoo/NAME`` for the zoo's (it may repeat a bundled name)."""
    path = Path(model)
    return f"zoo/{path.stem}" if path.parent.resolve() == ZOO else path.stem


def _summary(per_photo: list[list[Flicker]]) -> list[dict[str, object]]:
    """Per clip, the mean over photos."""
    summaries = []
    for results in zip(*per_photo, strict=True):
        relative = [r.relative_warping_error for r in results if r.relative_warping_error is not None]
        summaries.append(
            {
                "clip": results[0].clip,
                "warping_error": statistics.mean(r.warping_error for r in results),
                "relative_warping_error": statistics.mean(relative) if relative else None,
                "colour_drift": statistics.mean(r.colour_drift for r in results),
                "source_colour_drift": statistics.mean(r.source_colour_drift for r in results),
            }
        )
    return summaries


def _cell(summary: dict[str, object]) -> str:
    relative = summary["relative_warping_error"]
    ratio = f" ({relative:.2f}x)" if isinstance(relative, float) else ""
    return f"{summary['warping_error']:.2f}{ratio}, drift {summary['colour_drift']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="folder of photos the models never saw")
    parser.add_argument("--count", type=int, default=3, help="photos, spread evenly over the sorted folder")
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--models", nargs="+", help="model names or files (default: bundled and zoo)")
    parser.add_argument("--stabilize", action="store_true", help="also each model with the flow stabilizer")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/flicker.json"))
    args = parser.parse_args()

    files = find_images(args.photos)
    chosen = [files[i * len(files) // args.count] for i in range(args.count)]
    photos = [load_image(path).rgb for path in chosen]
    models = args.models or [str(info.path) for info in bundled_models()] + sorted(map(str, ZOO.glob("*.safetensors")))
    rows, results, clips = [], {}, []
    for model in models:
        for variant, per_photo in measure(model, photos, tuple(args.size), args.frames, args.stabilize).items():
            summary = _summary(per_photo)
            clips = [str(row["clip"]) for row in summary]
            name = _label(model) + ("" if variant == VARIANTS[0] else f" {variant}")
            results[name] = {"summary": summary, "photos": [[asdict(r) for r in row] for row in per_photo]}
            rows.append([name, *map(_cell, summary)])
    show(
        f"Warping error (0..255; x the source clip's) and colour drift, {len(photos)} photos, "
        f"{args.size[1]}x{args.size[0]}, {args.frames} frames, fp32",
        ["model", *clips],
        rows,
    )
    write_json(
        args.out,
        {"machine": machine(CPU), "photos": [path.name for path in chosen], "size": args.size, "models": results},
    )


if __name__ == "__main__":
    main()
