"""Is bf16 visually identical to fp32? Every bundled model on a set of photos,
each stylized in both precisions exactly as ``stylize image`` runs them.

    python -m benchmarks.precision --photos FOLDER [--count 20] [--size 1024]

Per model: the difference of the saved 8-bit outputs (mean, 99.9th percentile,
max, share of pixels off by more than 2 levels), how much the lattice (grid
artefact) strength moves, and banding: the share of smooth-area pixels whose
second difference changes (bf16's 8-bit mantissa could posterize gradients).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from stylize.images import find_images, load_image, resize_long_side
from stylize.inference.stylizer import InferenceSettings, Stylizer
from stylize.model.files import bundled_models, load_model
from stylize.report.compare import lattice_strength

from .common import machine, show, write_json

CPU = torch.device("cpu")


def _levels(image: torch.Tensor) -> torch.Tensor:
    return image.clamp(0, 1).mul(255).round()


def _second_difference(levels: torch.Tensor) -> torch.Tensor:
    """|d2/dx2| + |d2/dy2| of the lightness, cropped to a common size."""
    light = levels.mean(1)
    dx = (light[..., :, 2:] - 2 * light[..., :, 1:-1] + light[..., :, :-2])[..., 1:-1, :]
    dy = (light[..., 2:, :] - 2 * light[..., 1:-1, :] + light[..., :-2, :])[..., :, 1:-1]
    return dx.abs() + dy.abs()


def compare_outputs(fp32: torch.Tensor, bf16: torch.Tensor) -> dict[str, float]:
    a, b = _levels(fp32), _levels(bf16)
    difference = (a - b).abs().flatten()
    smooth = _second_difference(a) <= 1  # flat or evenly graded areas, where bands would show
    banding = ((_second_difference(b) - _second_difference(a)).abs() > 2) & smooth
    return {
        "mean": difference.mean().item(),
        "p99_9": difference.float().quantile(0.999).item() if difference.numel() < 2**24 else float("nan"),
        "max": difference.max().item(),
        "over_2": (difference > 2).float().mean().item(),
        "lattice_db": abs(lattice_strength(bf16) - lattice_strength(fp32)),
        "banding": (banding.sum() / smooth.sum().clamp(min=1)).item(),
    }


def measure(model: str, photos: list[torch.Tensor]) -> list[dict[str, float]]:
    network = load_model(model, CPU)
    stylizers = {
        precision: Stylizer(network, CPU, InferenceSettings(precision=precision, compile=False))
        for precision in ("fp32", "bf16")
    }
    return [compare_outputs(stylizers["fp32"](photo), stylizers["bf16"](photo)) for photo in photos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="folder of photos the models never saw")
    parser.add_argument("--count", type=int, default=20, help="photos, spread evenly over the sorted folder")
    parser.add_argument("--size", type=int, default=1024, help="long side, px")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision.json"))
    args = parser.parse_args()

    files = find_images(args.photos)
    chosen = [files[i * len(files) // args.count] for i in range(args.count)]
    photos = [resize_long_side(load_image(path).rgb, args.size) for path in chosen]
    rows, results = [], {}
    for info in bundled_models():
        per_photo = measure(str(info.path), photos)
        summary = {key: max(row[key] for row in per_photo) for key in per_photo[0]}
        summary["mean"] = statistics.mean(row["mean"] for row in per_photo)
        results[info.name] = {"summary": summary, "photos": per_photo}
        rows.append(
            [info.name, f"{summary['mean']:.2f}", f"{summary['p99_9']:.0f}", f"{summary['max']:.0f}",
             f"{summary['over_2']:.2%}", f"{summary['lattice_db']:.2f}", f"{summary['banding']:.3%}"]
        )  # fmt: skip
    show(
        f"bf16 vs fp32 on {len(photos)} photos, long side {args.size} px (8-bit levels; worst photo except mean)",
        ["model", "mean", "p99.9", "max", "> 2 levels", "Δ lattice dB", "banding"],
        rows,
    )
    write_json(
        args.out,
        {
            "machine": machine(CPU),
            "photos": [path.name for path in chosen],
            "size": args.size,
            "models": results,
        },
    )


if __name__ == "__main__":
    main()
