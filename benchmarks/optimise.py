"""Stylizing by optimisation: stylize's path against the usual loop, to the same loss.

    python -m benchmarks.optimise --loss-network-weights VGG_FILE [--loss-network vgg16_bn]
        [--photo PHOTO] [--style STYLE] [--sizes 256,512] [--reference-steps 200] [--rounds 1]

The reference is what jcjohnson/neural-style and pystiche do: one scale, fp32,
L-BFGS on the photo's pixels, here with stylize's own loss (the same network,
layers, weights and relative terms), for ``--reference-steps`` loss
evaluations. stylize's path is ``stylize image --style``'s defaults (coarse to
fine, bf16 where native). Both start from the photo; the rows alternate in
rounds. Reported: each path's time and final full-size loss, and the time
stylize's path takes to first reach the reference's final loss (its loss is
only comparable at full size, so only full-size steps count).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from stylize.images import load_image
from stylize.inference.optimization import LevelReport, OptimizationSettings, StyleImage, StyleOptimizer

from .common import bench_image, machine, show, write_json


def _run(settings: OptimizationSettings, photo: torch.Tensor, style: torch.Tensor) -> list[tuple[float, LevelReport]]:
    """Every loss evaluation of one optimisation, with the seconds since it started."""
    reports: list[tuple[float, LevelReport]] = []
    started = time.perf_counter()
    optimizer = StyleOptimizer(
        [StyleImage(style)], settings, on_step=lambda report: reports.append((time.perf_counter() - started, report))
    )
    started = time.perf_counter()  # the loss network is built; the clock counts the optimisation
    optimizer(photo)
    return reports


def _full_size(reports: list[tuple[float, LevelReport]], size: tuple[int, int]) -> list[tuple[float, float]]:
    return [(seconds, report.loss) for seconds, report in reports if report.size == size]


def _measure(settings: OptimizationSettings, reference_steps: int, size: int, photo_file: Path | None,
             style: torch.Tensor, rounds: int) -> dict[str, object]:  # fmt: skip
    photo = bench_image(photo_file, size, size * 3 // 4)
    full = tuple(photo.shape[-2:])
    reference = dataclasses.replace(settings, levels=1, optimizer="lbfgs", precision="fp32", steps=reference_steps)
    timings: dict[str, list[float]] = {"reference": [], "stylize": [], "stylize_to_reference_loss": []}
    losses: dict[str, float] = {}
    for _ in range(rounds):
        ours = _full_size(_run(settings, photo, style), full)
        theirs = _full_size(_run(reference, photo, style), full)
        losses = {"reference": min(loss for _, loss in theirs), "stylize": min(loss for _, loss in ours)}
        timings["reference"].append(theirs[-1][0])
        timings["stylize"].append(ours[-1][0])
        reached = [seconds for seconds, loss in ours if loss <= losses["reference"]]
        timings["stylize_to_reference_loss"].append(reached[0] if reached else float("nan"))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    return {"size": list(full), "seconds": medians, "rounds": timings, "final_loss": losses,
            "speedup_to_reference_loss": medians["reference"] / medians["stylize_to_reference_loss"]}  # fmt: skip


def _cells(row: dict) -> list[str]:
    seconds, loss = row["seconds"], row["final_loss"]
    return [f"{row['size'][1]}x{row['size'][0]}", f"{seconds['reference']:.1f}", f"{loss['reference']:.4f}",
            f"{seconds['stylize']:.1f}", f"{loss['stylize']:.4f}", f"{seconds['stylize_to_reference_loss']:.1f}",
            f"{row['speedup_to_reference_loss']:.2f}x"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss-network-weights", type=Path, required=True)
    parser.add_argument("--loss-network", default="vgg16")
    parser.add_argument("--style-layers", default="", help="comma-separated; default: the loss network's")
    parser.add_argument("--content-layer", default=OptimizationSettings.content_layer)
    parser.add_argument("--photo", type=Path, help="default: a synthetic photo")
    parser.add_argument("--style", type=Path, required=True)
    parser.add_argument("--sizes", default="256,512", help="comma-separated long sides")
    parser.add_argument("--reference-steps", type=int, default=200, help="loss evaluations of the reference")
    parser.add_argument("--steps", type=int, default=OptimizationSettings.steps, help="stylize's steps per level")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/optimise.json"))
    args = parser.parse_args()
    settings = OptimizationSettings(
        steps=args.steps, loss_network=args.loss_network, loss_network_weights=args.loss_network_weights,
        content_layer=args.content_layer, style_layers=tuple(filter(None, args.style_layers.split(","))), device="cpu",
    )  # fmt: skip
    style = load_image(args.style).rgb
    rows = [_measure(settings, args.reference_steps, int(size), args.photo, style, args.rounds)
            for size in args.sizes.split(",")]  # fmt: skip
    show(
        f"stylize image --style vs single-scale fp32 L-BFGS ({args.reference_steps} evaluations), "
        f"median of {args.rounds}, on {machine(torch.device('cpu'))['cpu']}",
        ["size", "reference s", "reference loss", "stylize s", "stylize loss", "s to reference loss", "speed-up"],
        [_cells(row) for row in rows],
    )
    record = {"benchmark": "optimise", "machine": machine(torch.device("cpu")), "settings": {
        **{key: str(value) for key, value in dataclasses.asdict(settings).items()},
        "reference_steps": args.reference_steps, "photo": args.photo.name if args.photo else "synthetic",
        "style": args.style.name, "rounds": args.rounds}, "results": rows}  # fmt: skip
    write_json(args.out, record)


if __name__ == "__main__":
    main()
