"""How much does each model flicker on video? Frame-by-frame stylization of
clips with known motion made from held-out photos (``stylize.report.flicker``).

    python -m benchmarks.flicker --photos PHOTO_OR_FOLDER... [--count 3] [--models A B ...] [--stabilize]
        [--style-image PAINTING --loss-network-weights VGG16_BN.pth]

Per model and clip: the warping error (0..255, the mean over photos) and, where
the source clip is not exactly steady, the same relative to the source's; the
whole frame's colour drift. Models default to every bundled one and the zoo.
With a painting and loss network weights, also the frames' style loss against
it (the training loss's conventions), so a steadier variant's cost in strength
is a ratio: its style loss over the frame-by-frame one's.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from stylize.images import expand_inputs, load_image, resize_long_side
from stylize.inference.stylizer import InferenceSettings, Stylizer
from stylize.inference.temporal import FlowStabilizer
from stylize.model.files import bundled_models, load_model
from stylize.report.flicker import Flicker, flicker_of, standard_clips, stylize_clip
from stylize.training.losses import style_loss, style_targets
from stylize.training.vgg import LossNetwork, style_layer_weights

from .common import machine, show, write_json

CPU = torch.device("cpu")
ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
VARIANTS = ("frame by frame", "stabilized")
LOSS_NETWORK, STYLE_SIZE = "vgg16_bn", 512  # the bundled models' training loss
STYLE_EVERY = 4  # the style loss of every 4th frame: the texture, not its change


class StyleMeter:
    """The style loss of frames against one painting, as training measures it
    (``LOSS_NETWORK`` with its default layer weights, the painting at ``STYLE_SIZE``)."""

    def __init__(
        self, painting: Path, weights: Path, network: str = LOSS_NETWORK, layer_weights: dict[str, float] | None = None
    ):
        self.layer_weights = layer_weights or style_layer_weights(network)
        self.network = LossNetwork(network, tuple(self.layer_weights), weights)
        with torch.no_grad():
            sized = resize_long_side(load_image(painting).rgb, STYLE_SIZE)
            self.targets = style_targets(self.network(sized), tuple(self.layer_weights))

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> float:
        """The mean over every ``STYLE_EVERY``-th frame of (T, 3, H, W)."""
        shown = frames[::STYLE_EVERY]
        losses = [style_loss(self.network(frame[None]), self.targets, self.layer_weights) for frame in shown]
        return float(torch.stack(losses).mean())


@dataclass(frozen=True)
class ClipResult:
    flicker: Flicker
    style_loss: float | None


def measure(
    model: str,
    photos: list[torch.Tensor],
    size: tuple[int, int],
    frames: int,
    stabilize: bool = False,
    style_meter: StyleMeter | None = None,
) -> dict[str, list[list[ClipResult]]]:
    """Per variant ("frame by frame", and "stabilized" if asked: the same frames
    through a fresh flow stabilizer), per photo, per clip. fp32: differences of
    a level must not come from rounding."""
    stylizer = Stylizer(load_model(model, CPU), CPU, InferenceSettings(precision="fp32", compile=False))
    results: dict[str, list[list[ClipResult]]] = {variant: [] for variant in VARIANTS[: 1 + stabilize]}
    for photo in photos:
        for per_photo in results.values():
            per_photo.append([])
        for clip in standard_clips(photo, size, frames):
            stylized = stylize_clip(stylizer, clip)
            variants = [stylized, FlowStabilizer()(clip.frames, stylized)] if stabilize else [stylized]
            for per_photo, variant in zip(results.values(), variants, strict=True):
                style = style_meter(variant) if style_meter else None
                per_photo[-1].append(ClipResult(flicker_of(variant, clip), style))
    return results


def _label(model: str) -> str:
    """The model's name; ``zoo/NAME`` for the zoo's (it may repeat a bundled name)."""
    path = Path(model)
    return f"zoo/{path.stem}" if path.parent.resolve() == ZOO else path.stem


def _summary(per_photo: list[list[ClipResult]]) -> list[dict[str, object]]:
    """Per clip, the mean over photos."""
    summaries = []
    for clip_results in zip(*per_photo, strict=True):
        results = [result.flicker for result in clip_results]
        relative = [r.relative_warping_error for r in results if r.relative_warping_error is not None]
        styles = [result.style_loss for result in clip_results if result.style_loss is not None]
        summaries.append(
            {
                "clip": results[0].clip,
                "warping_error": statistics.mean(r.warping_error for r in results),
                "relative_warping_error": statistics.mean(relative) if relative else None,
                "colour_drift": statistics.mean(r.colour_drift for r in results),
                "source_colour_drift": statistics.mean(r.source_colour_drift for r in results),
                "style_loss": statistics.mean(styles) if styles else None,
            }
        )
    return summaries


def _with_style_cost(summary: list[dict[str, object]], frame_by_frame: list[dict[str, object]]) -> None:
    """Each clip's style loss over the frame-by-frame one's, where both were measured."""
    for row, reference in zip(summary, frame_by_frame, strict=True):
        style, base = row["style_loss"], reference["style_loss"]
        row["style_loss_vs_frame_by_frame"] = None
        if isinstance(style, float) and isinstance(base, float) and base > 0:
            row["style_loss_vs_frame_by_frame"] = style / base


def _cell(summary: dict[str, object]) -> str:
    relative, cost = summary["relative_warping_error"], summary.get("style_loss_vs_frame_by_frame")
    ratio = f" ({relative:.2f}x)" if isinstance(relative, float) else ""
    style = f", style {cost:.3f}x" if isinstance(cost, float) else ""
    return f"{summary['warping_error']:.2f}{ratio}, drift {summary['colour_drift']:.2f}{style}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", required=True, help="photos the models never saw, or folders of them")
    parser.add_argument("--count", type=int, default=3, help="photos, spread evenly over the sorted folder")
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--models", nargs="+", help="model names or files (default: bundled and zoo)")
    parser.add_argument("--stabilize", action="store_true", help="also each model with the flow stabilizer")
    parser.add_argument("--style-image", type=Path, help="the painting to measure the frames' style loss against")
    parser.add_argument("--loss-network-weights", type=Path, help=f"{LOSS_NETWORK} weights for the style loss")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/flicker.json"))
    args = parser.parse_args()

    files = sorted(path for path, _ in expand_inputs(args.photos))
    chosen = [files[i * len(files) // args.count] for i in range(args.count)]
    photos = [load_image(path).rgb for path in chosen]
    models = args.models or [str(info.path) for info in bundled_models()] + sorted(map(str, ZOO.glob("*.safetensors")))
    if (args.style_image is None) != (args.loss_network_weights is None):
        parser.error("the style loss needs both --style-image and --loss-network-weights")
    meter = StyleMeter(args.style_image, args.loss_network_weights) if args.style_image else None
    rows: list[list[str]] = []
    results: dict[str, dict[str, object]] = {}
    clips: list[str] = []
    for model in models:
        measured = measure(model, photos, tuple(args.size), args.frames, args.stabilize, meter)
        frame_by_frame = _summary(measured[VARIANTS[0]])
        for variant, per_photo in measured.items():
            summary = frame_by_frame if variant == VARIANTS[0] else _summary(per_photo)
            if variant != VARIANTS[0]:
                _with_style_cost(summary, frame_by_frame)
            clips = [str(row["clip"]) for row in summary]
            name = _label(model) + ("" if variant == VARIANTS[0] else f" {variant}")
            photos_json = [[{**asdict(r.flicker), "style_loss": r.style_loss} for r in row] for row in per_photo]
            results[name] = {"summary": summary, "photos": photos_json}
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
