"""Stylizing speed: the plain reference configuration against the product's fast paths.

    python -m benchmarks.speed [--model NAME_OR_FILE] [--image PHOTO] [--device cpu|cuda]

The reference is the network as pytorch/examples' fast_neural_style runs it: fp32,
eager, NCHW, ``torch.no_grad``. Every configuration runs in this one process on the
same input; ratios are against the reference's median. The difference columns
compare each output, as saved (8-bit), with the reference's.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from stylize.devices import compute_dtype, resolve_device
from stylize.inference.stylizer import InferenceSettings
from stylize.model.network import TransformerNet

from .common import (
    bench_image,
    bench_network,
    bench_stylizer,
    examples_form,
    levels,
    machine,
    peak_memory,
    reset_peak_memory,
    show,
    time_calls,
    write_json,
)

# Dense bf16 tensor-core peaks (TFLOP/s), for the share of peak on a GPU.
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}


@dataclass(frozen=True)
class Config:
    name: str
    product: InferenceSettings | None = None  # None: the plain reference network
    channels_last: bool = False  # reference variants only
    compile: bool = False  # reference variants only


REFERENCE = Config("reference (fp32, eager, NCHW, no_grad)")
CPU_CONFIGS = (
    REFERENCE,
    Config("reference + channels_last + inference_mode", channels_last=True),
    Config("reference + torch.compile", compile=True),
    Config("stylize fp32 (--precision fp32)", InferenceSettings(precision="fp32", compile=False)),
    Config("stylize fp32 + compile", InferenceSettings(precision="fp32", compile=True)),
    Config("stylize fp32, whole maps (--tile 0)", InferenceSettings(precision="fp32", compile=False, tile=0)),
    Config("stylize bf16 (default for instance norm, 1-15 images)", InferenceSettings(precision="bf16", compile=False)),
    Config("stylize bf16 + compile (default, 16+ images)", InferenceSettings(precision="bf16", compile=True)),
)
CUDA_CONFIGS = (
    REFERENCE,
    Config("stylize bf16 (default, 1-15 images)", InferenceSettings(compile=False)),
    Config("stylize bf16 + compile (default, 16+ images)", InferenceSettings(compile=True)),
    Config("stylize fp32 + compile", InferenceSettings(precision="fp32", compile=True)),
)


def count_flops(network: torch.nn.Module, image: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(image)
    return counter.get_total_flops()


def runner(reference: TransformerNet, config: Config, device: torch.device) -> tuple[Callable, torch.nn.Module]:
    """A function image -> output running ``config``, and the network form it runs."""
    if config.product is not None:
        stylizer = bench_stylizer(reference, device, config.product)
        return stylizer, stylizer.network
    plain = examples_form(reference)
    network = plain.to(memory_format=torch.channels_last) if config.channels_last else plain
    module = torch.compile(network) if config.compile else network
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    grad_mode = torch.inference_mode if config.channels_last else torch.no_grad

    def run(image: torch.Tensor) -> torch.Tensor:
        with grad_mode():
            return module(image.contiguous(memory_format=fmt))

    return run, network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or file (default: random instance-norm weights, seed 0)")
    parser.add_argument("--image", type=Path, help="photo to crop and resize (default: a synthetic one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="comma-separated config numbers (1-based) to run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.json"))
    args = parser.parse_args()

    device = resolve_device(args.device)
    width, height = (int(side) for side in args.size.lower().split("x"))
    reference = bench_network(args.model)
    image = bench_image(args.image, width, height).repeat(args.batch, 1, 1, 1).to(device)
    configs = CUDA_CONFIGS if device.type == "cuda" else CPU_CONFIGS
    if args.only:
        keep = {int(number) for number in args.only.split(",")}
        configs = tuple(config for number, config in enumerate(configs, 1) if number in keep or number == 1)
    host = machine(device)
    peak = next((value for key, value in GPU_PEAK_TFLOPS.items() if key in host.get("gpu", "")), None)

    results: list[dict[str, object]] = []
    expected: torch.Tensor | None = None
    for config in configs:
        run, form = runner(copy.deepcopy(reference).to(device), config, device)
        reset_peak_memory(device)
        compiled = config.compile or bool(config.product and config.product.compile)
        timing = time_calls(functools.partial(run, image), device, args.repeats, warmup=3 if compiled else 1)
        memory = peak_memory(device)
        output = run(image)
        if expected is None:
            expected = output
        flops = count_flops(form, image[:1]) * args.batch
        max_levels, mean_levels = levels(output, expected)
        results.append(
            {
                "config": config.name,
                "dtype": str(compute_dtype(config.product.precision, device) if config.product else torch.float32),
                "settings": dataclasses.asdict(config.product) if config.product else None,
                "first_call_s": timing.first_s,
                "median_s": timing.median_s,
                "runs_s": timing.runs_s,
                "images_per_s": args.batch / timing.median_s,
                "speedup": results[0]["median_s"] / timing.median_s if results else 1.0,
                "gflop": flops / 1e9,
                "tflops_per_s": flops / timing.median_s / 1e12,
                "share_of_peak": flops / timing.median_s / 1e12 / peak if peak else None,
                "max_diff_levels": max_levels,
                "mean_diff_levels": mean_levels,
                **memory,
            }
        )
    show(
        f"stylize {width}x{height} x{args.batch} on {device} ({host.get('gpu', host['cpu'])}), "
        f"median of {args.repeats}",
        [
            "#",
            "configuration",
            "ms/batch",
            "images/s",
            "vs reference",
            "GFLOP",
            "TFLOP/s",
            "max diff",
            "mean diff",
            "first call s",
            "peak RSS GiB",
            "peak GPU GiB",
        ],  # fmt: skip
        [
            [
                str(number),
                row["config"],
                f"{row['median_s'] * 1000:.1f}",
                f"{row['images_per_s']:.2f}",
                f"{row['speedup']:.2f}x",
                f"{row['gflop']:.0f}",
                f"{row['tflops_per_s']:.3f}" + (f" ({row['share_of_peak']:.0%})" if row["share_of_peak"] else ""),
                str(row["max_diff_levels"]),
                f"{row['mean_diff_levels']:.3f}",
                f"{row['first_call_s']:.1f}",
                _gib(row["peak_rss_gib"]),
                _gib(row["peak_gpu_gib"]),
            ]
            for number, row in enumerate(results, 1)
        ],
    )
    write_json(
        args.out,
        {
            "benchmark": "speed",
            "machine": host,
            "settings": {
                "size": [width, height],
                "batch": args.batch,
                "repeats": args.repeats,
                "model": args.model or "random instance-norm weights (seed 0)",
                "image": str(args.image) if args.image else "synthetic",
            },  # fmt: skip
            "gpu_peak_tflops": peak,
            "results": results,
        },
    )


def _gib(value: object) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
