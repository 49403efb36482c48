"""Peak memory of stylizing one large image (default 3840x2160), each configuration in
its own process so that every peak is its own.

    python -m benchmarks.memory [--model NAME_OR_FILE] [--device cpu|cuda] [--size 3840x2160]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from stylize.devices import resolve_device
from stylize.inference.stylizer import InferenceSettings

from .common import (
    bench_image,
    bench_network,
    bench_stylizer,
    examples_form,
    machine,
    peak_memory,
    reset_peak_memory,
    run_child,
    show,
    sync,
    write_json,
)

# name -> tile (None: the plain reference network; -1: the product's automatic choice)
CONFIGS = {
    "reference (fp32, eager, NCHW, no_grad)": None,
    "stylize, untiled (--tile 0)": 0,
    "stylize, default (bands of 64 rows)": -1,
    "stylize --tile 128": 128,
}


def measure(config: str, model: str | None, device: torch.device, width: int, height: int) -> dict[str, object]:
    """Runs in the child process."""
    network = bench_network(model)
    image = bench_image(None, width, height).to(device)
    tile = CONFIGS[config]
    if tile is None:
        network = examples_form(network).to(device)

        def run() -> torch.Tensor:
            with torch.no_grad():
                return network(image)
    else:
        stylizer = bench_stylizer(network, device, InferenceSettings(compile=False, tile=None if tile == -1 else tile))

        def run() -> torch.Tensor:
            return stylizer(image)

    sync(device)
    baseline = peak_memory(device)["peak_rss_gib"]
    reset_peak_memory(device)
    start = time.perf_counter()
    run()
    sync(device)
    seconds = time.perf_counter() - start
    return {"config": config, "seconds": seconds, "rss_before_gib": baseline, **peak_memory(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or file (default: random instance-norm weights, seed 0)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", default="3840x2160", help="WIDTHxHEIGHT")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    width, height = (int(side) for side in args.size.lower().split("x"))
    if args.child:
        print(json.dumps(measure(args.child, args.model, device, width, height)))
        return

    results = []
    for config in CONFIGS:
        arguments = ["--child", config, "--device", str(device), "--size", args.size]
        results.append(run_child("benchmarks.memory", arguments + (["--model", args.model] if args.model else [])))
    show(
        f"peak memory, one {width}x{height} image on {device}",
        ["configuration", "seconds", "RSS before GiB", "peak RSS GiB", "peak GPU GiB"],
        [
            [
                row["config"],
                f"{row['seconds']:.1f}",
                f"{row['rss_before_gib']:.2f}",
                f"{row['peak_rss_gib']:.2f}",
                "-" if row["peak_gpu_gib"] is None else f"{row['peak_gpu_gib']:.2f}",
            ]
            for row in results
        ],
    )
    write_json(args.out, {"benchmark": "memory", "machine": machine(device),
                          "settings": {"size": [width, height], "model": args.model or "random instance-norm weights"},
                          "results": results})  # fmt: skip


if __name__ == "__main__":
    main()
