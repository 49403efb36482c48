"""Training speed: pytorch/examples' training loop against each of stylize's changes.

    python -m benchmarks.train --loss-network-weights VGG16_FILE [--data PHOTOS] [--sizes 128,256]
    python -m benchmarks.train --loss-network-weights VGG16_FILE --norms all   # stylize train per norm

Every row trains the same network on the same photos (batch 4, VGG16 loss to
relu4_3: content at relu2_2, style at relu1_2..relu4_3) in this one process and
counts images per second over the timed steps, data loading included. The
reference is pytorch/examples' fast_neural_style loop: fp32, eager, NCHW, the
whole VGG run on the content photo, photos decoded in the main process. Rows 2-7
add one change each; the last row is ``stylize train`` itself with its defaults.
With ``--norms``, the rows are ``stylize train`` itself, once per norm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylize.devices import resolve_device
from stylize.images import load_image, resize_long_side
from stylize.model.network import NetConfig, TransformerNet
from stylize.model.norms import check_norm, norm_names
from stylize.training.config import TrainConfig, metrics_log_path
from stylize.training.data import crop_loader, training_files
from stylize.training.loop import train
from stylize.training.losses import LossWeights, perceptual_loss, style_targets
from stylize.training.vgg import LossNetwork
from tests.reference_fast_neural_style import ExamplesTransformerNet

from .common import machine, show, write_json


class ExamplesNetwork(ExamplesTransformerNet):
    """pytorch/examples' network in stylize's [0, 1] convention (its own works in 0..255)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * 255) / 255


CONTENT_LAYER = "relu2_2"
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
BATCH = 4


@dataclass(frozen=True)
class Variant:
    """One way of running the training step."""

    name: str
    examples_network: bool = True  # pytorch/examples' layers; False: stylize's (convforms)
    bf16: bool = False
    content_only: bool = False  # the content photo through the VGG only to the content layer
    vgg_bf16: bool = False  # the frozen VGG's weights cast to bf16 once, not at every call
    channels_last: bool = False
    workers: int = 0
    compile: bool = False
    product: bool = False  # stylize.train itself, default settings
    norm: str = "instance"  # the product's --norm


REFERENCE = Variant("reference (pytorch/examples: fp32, eager, NCHW, whole VGG on the content)")
_BF16 = replace(REFERENCE, name="+ bf16 autocast", bf16=True)
_CONTENT = replace(_BF16, name="+ content photo only to relu2_2", content_only=True)
_VGG = replace(_CONTENT, name="+ VGG weights in bf16 once", vgg_bf16=True)
_FORMS = replace(_VGG, name="+ sub-pixel upsampling, space-to-depth output conv", examples_network=False)
PATHS = (
    REFERENCE,
    _BF16,
    _CONTENT,
    _VGG,
    _FORMS,
    replace(_FORMS, name="+ channels_last (not used)", channels_last=True),
    replace(_FORMS, name="+ 2 loader processes (not used)", workers=2),
    replace(_FORMS, name="+ 1 loader process", workers=1),
    Variant("stylize train (defaults)", product=True),
)
COMPILED = replace(_FORMS, name="+ torch.compile of the step (not used)", compile=True, workers=1)


def _step_function(variant: Variant, network: torch.nn.Module, loss_network: LossNetwork, targets: dict) -> object:
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    weights = LossWeights()
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format

    def step(images: torch.Tensor) -> None:
        images = images.contiguous(memory_format=fmt)
        precision = torch.autocast("cpu", dtype=torch.bfloat16) if variant.bf16 else contextlib.nullcontext()
        with precision:
            output = network(images)
            with torch.no_grad():
                content = loss_network(images, layers=(CONTENT_LAYER,) if variant.content_only else None)
            terms = perceptual_loss(output, loss_network(output), content, targets, CONTENT_LAYER, weights)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    return torch.compile(step) if variant.compile else step


def _timed_loop(
    variant: Variant, files: list[Path], style: torch.Tensor, weights: Path, size: int, steps: int, warmup: int
) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    network = (ExamplesNetwork() if variant.examples_network else TransformerNet(NetConfig())).train()
    network = network.to(memory_format=fmt)
    loss_network = LossNetwork("vgg16", [CONTENT_LAYER, *STYLE_LAYERS], weights).to(memory_format=fmt)
    if variant.vgg_bf16:
        loss_network.features.to(torch.bfloat16)
    with torch.no_grad():
        targets = style_targets(loss_network(style), STYLE_LAYERS)
    step = _step_function(variant, network, loss_network, targets)
    loader = crop_loader(
        files, size, BATCH, seed=0, start_step=0, steps=warmup + steps, workers=variant.workers, pin_memory=False
    )
    batches: Iterator = iter(loader)
    for _ in range(warmup):
        step(next(batches)[0])
    start = time.perf_counter()
    for images, _ in batches:
        step(images)
    return steps * BATCH / (time.perf_counter() - start)


def _product(files_dir: Path, style_file: Path, weights: Path, size: int, steps: int, warmup: int, norm: str) -> float:
    """``stylize train`` with its defaults at this crop size; the rate between two of its metric lines."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "bench.safetensors"
        config = TrainConfig(
            style_image=style_file, data=files_dir, out=out, loss_network="vgg16", loss_network_weights=weights,
            content_layer=CONTENT_LAYER, style_layers=STYLE_LAYERS, steps=warmup + steps, image_size=size,
            device="cpu", checkpoint_every=0, norm=norm,
        )  # fmt: skip
        train(config)
        seconds = [line["seconds"] for line in map(json.loads, metrics_log_path(out).read_text().splitlines())]
    return steps * BATCH / (seconds[warmup + steps - 1] - seconds[warmup - 1])


def _synthetic_photos(folder: Path, count: int = 16) -> Path:
    generator = np.random.default_rng(0)
    for index in range(count):
        coarse = generator.random((6, 8, 3))
        image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((481, 321), Image.BICUBIC)
        image.save(folder / f"photo{index}.jpg", quality=92)
    return folder


def _synthetic_style(path: Path) -> Path:
    stripes = np.sin(np.linspace(0, 40, 256))[None, :, None] * np.array([0.4, 0.2, -0.3]) + 0.5
    Image.fromarray((np.broadcast_to(stripes, (256, 256, 3)).clip(0, 1) * 255).astype(np.uint8)).save(path)
    return path


def measure(variant: Variant, data: Path, style_file: Path, weights: Path, size: int, steps: int, warmup: int) -> float:
    if variant.product:
        return _product(data, style_file, weights, size, steps, warmup, variant.norm)
    style = resize_long_side(load_image(style_file).rgb, 2 * size)
    return _timed_loop(variant, training_files(data), style, weights, size, steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss-network-weights", type=Path, required=True, help="VGG16 state dict (torchvision keys)")
    parser.add_argument("--data", type=Path, help="folder of photos (default: 16 synthetic ones)")
    parser.add_argument("--style", type=Path, help="style image (default: synthetic stripes)")
    parser.add_argument("--sizes", default="128,256", help="comma-separated crop sides")
    parser.add_argument("--steps", type=int, default=24, help="timed steps per row at 128 px (a quarter at 256 px)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    parser.add_argument("--norms", help="comma-separated norms, or all: stylize train once per norm instead")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train.json"))
    args = parser.parse_args()

    device = resolve_device("cpu")
    variants = (*PATHS, COMPILED) if args.compile else PATHS
    if args.norms:
        norms = norm_names() if args.norms == "all" else [check_norm(norm) for norm in args.norms.split(",")]
        variants = tuple(Variant(f"stylize train --norm {norm}", product=True, norm=norm) for norm in norms)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as folder:
        data = args.data or _synthetic_photos(Path(folder))
        style = args.style or _synthetic_style(Path(folder) / "style.png")
        for size in (int(side) for side in args.sizes.split(",")):
            steps = max(3, args.steps * 128 * 128 // (size * size))
            reference = None
            for number, variant in enumerate(variants, 1):
                rate = measure(variant, data, style, args.loss_network_weights, size, steps, args.warmup)
                reference = reference or rate
                rows.append({"size": size, "number": number, "config": variant.name, "steps": steps,
                             "images_per_s": rate, "speedup": rate / reference})  # fmt: skip
    show(
        f"training images/s, batch {BATCH}, VGG16 to relu4_3, on {machine(device)['cpu']}",
        ["px", "#", "configuration", "timed steps", "images/s", "vs reference"],
        [
            [
                str(row["size"]),
                str(row["number"]),
                str(row["config"]),
                str(row["steps"]),
                f"{row['images_per_s']:.2f}",
                f"{row['speedup']:.2f}x",
            ]
            for row in rows
        ],  # fmt: skip
    )
    write_json(
        args.out,
        {
            "benchmark": "train",
            "machine": machine(device),
            "settings": {
                "batch": BATCH,
                "sizes": args.sizes,
                "warmup": args.warmup,
                "content_layer": CONTENT_LAYER,
                "style_layers": STYLE_LAYERS,
                "data": "given folder" if args.data else "synthetic",
                "loss_network_weights": args.loss_network_weights.name,
            },  # fmt: skip
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
