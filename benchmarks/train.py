"""Training speed: pytorch/examples' training loop against each of stylize's changes.

    python -m benchmarks.train --loss-network-weights VGG16_FILE [--data PHOTOS] [--sizes 128,256]
    python -m benchmarks.train --loss-network-weights VGG16_FILE --norms all   # stylize train per norm

Every row trains the same network on the same photos (batch 4, VGG16 loss to
relu4_3: content at relu2_2, style at relu1_2..relu4_3) and counts images per
second over the timed steps, data loading included. Each row runs in a fresh
process, as a user's training would (no row inherits another's allocator or
thread-pool state), once per round; rounds alternate the rows, so a slow spell
of a shared machine spreads over all of them, and each row reports its median. The
reference is pytorch/examples' fast_neural_style loop: fp32, eager, NCHW, the
whole VGG run on the content photo, its loss (autograd through the Gram
matrices' bmm), photos decoded in the main process. Rows 2-11 add one change
each; the last row is ``stylize train`` itself with its defaults. On a CPU
without native bf16 the bf16 rows are left out (see ``paths_for``).
With ``--norms``, the rows are ``stylize train`` itself, once per norm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stylize.devices import keep_freed_memory, native_bf16, resolve_device
from stylize.images import load_image, resize_long_side
from stylize.model.network import NetConfig, TransformerNet
from stylize.model.norms import check_norm, norm_names
from stylize.training.config import TrainConfig
from stylize.training.data import crop_loader, training_files
from stylize.training.loop import train
from stylize.training.losses import LossWeights, perceptual_loss, style_targets
from stylize.training.metrics import metrics_log_path
from stylize.training.vgg import LossNetwork
from tests.reference_fast_neural_style import ExamplesTransformerNet

from .common import machine, run_child, show, write_json


class ExamplesNetwork(ExamplesTransformerNet):
    """pytorch/examples' network in stylize's [0, 1] convention (its own works in 0..255)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * 255) / 255


CONTENT_LAYER = "relu2_2"
STYLE_LAYERS = "relu1_2,relu2_2,relu3_3,relu4_3"
BATCH = 4


@dataclass(frozen=True)
class Setup:
    """What every row trains on."""

    data: Path
    style: Path
    weights: Path
    style_layers: tuple[str, ...]
    warmup: int


@dataclass(frozen=True)
class Variant:
    """One way of running the training step."""

    name: str
    examples_network: bool = True  # pytorch/examples' layers; False: stylize's (convforms, bf16 padding)
    examples_loss: bool = True  # pytorch/examples' Gram (autograd's bmm backward) and MSE; False: stylize's
    bf16: bool = False
    content_only: bool = False  # the content photo through the VGG only to the content layer
    vgg_bf16: bool = False  # the frozen VGG's weights cast to bf16 once, not at every call
    channels_last: bool = False
    fused_adam: bool = False  # Adam in one fused kernel instead of a loop over parameters
    workers: int = 0
    keep_freed: bool = False  # devices.keep_freed_memory
    product: bool = False  # stylize.train itself, default settings
    norm: str = "instance"  # the product's --norm


REFERENCE = Variant("reference (pytorch/examples: fp32, eager, NCHW, whole VGG on the content)")
_BF16 = replace(REFERENCE, name="+ bf16 autocast", bf16=True)
_CONTENT = replace(_BF16, name="+ content photo only to relu2_2", content_only=True)
_VGG = replace(_CONTENT, name="+ VGG weights in bf16 once", vgg_bf16=True)
_FORMS = replace(
    _VGG, name="+ sub-pixel upsampling, space-to-depth output conv, padding in bf16", examples_network=False
)
_LOSS = replace(_FORMS, name="+ float32 Gram with a one-product backward", examples_loss=False)
_ADAM = replace(_LOSS, name="+ fused Adam", fused_adam=True)
_LOADER = replace(_ADAM, name="+ 1 loader process", workers=1)
PATHS = (
    REFERENCE,
    _BF16,
    _CONTENT,
    _VGG,
    _FORMS,
    _LOSS,
    _ADAM,
    replace(_ADAM, name="+ channels_last (not used)", channels_last=True),
    replace(_ADAM, name="+ 2 loader processes (not used)", workers=2),
    _LOADER,
    replace(_LOADER, name="+ malloc keeps freed memory", keep_freed=True),
    Variant("stylize train (defaults)", product=True),
)


def paths_for(device: torch.device) -> tuple[Variant, ...]:
    """``PATHS`` as this CPU runs them: where bf16 is emulated (no AVX512-BF16
    or AMX) it is many times slower and stylize trains in fp32, so the rows
    that only add bf16 go and the others run in fp32."""
    if native_bf16(device):
        return PATHS
    return tuple(replace(row, bf16=False, vgg_bf16=False) for row in PATHS if row not in (_BF16, _VGG))


def _examples_gram(features: torch.Tensor) -> torch.Tensor:
    """pytorch/examples' ``utils.gram_matrix``: autograd differentiates the bmm."""
    n, c, h, w = features.shape
    flat = features.view(n, c, h * w)
    return flat.bmm(flat.transpose(1, 2)) / (c * h * w)


def _examples_loss(output_features: dict, content: dict, targets: dict) -> torch.Tensor:
    """pytorch/examples' loss: MSE of the content layer plus MSE of each style layer's Gram."""
    loss = F.mse_loss(output_features[CONTENT_LAYER], content[CONTENT_LAYER])
    for layer, target in targets.items():
        gram = _examples_gram(output_features[layer])
        loss = loss + F.mse_loss(gram, target.expand_as(gram))
    return loss


def _step_function(variant: Variant, network: torch.nn.Module, loss_network: LossNetwork, targets: dict) -> object:
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, fused=variant.fused_adam)
    weights = LossWeights()
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format

    def step(images: torch.Tensor) -> None:
        images = images.contiguous(memory_format=fmt)
        precision = torch.autocast("cpu", dtype=torch.bfloat16) if variant.bf16 else contextlib.nullcontext()
        with precision:
            output = network(images)
            with torch.no_grad():
                content = loss_network(images, layers=(CONTENT_LAYER,) if variant.content_only else None)
            if variant.examples_loss:
                loss = _examples_loss(loss_network(output), content, targets)
            else:
                loss = perceptual_loss(output, loss_network(output), content, targets, CONTENT_LAYER, weights).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _timed_loop(variant: Variant, setup: Setup, size: int, steps: int) -> float:
    torch.manual_seed(0)
    if variant.keep_freed:
        keep_freed_memory(torch.device("cpu"))
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    network = (ExamplesNetwork() if variant.examples_network else TransformerNet(NetConfig())).train()
    network = network.to(memory_format=fmt)
    loss_network = LossNetwork("vgg16", [CONTENT_LAYER, *setup.style_layers], setup.weights)
    loss_network = loss_network.to(memory_format=fmt)
    if variant.vgg_bf16:
        loss_network.features.to(torch.bfloat16)
    style = resize_long_side(load_image(setup.style).rgb, 2 * size)
    with torch.no_grad():
        targets = style_targets(loss_network(style), setup.style_layers)
    step = _step_function(variant, network, loss_network, targets)
    loader = crop_loader(
        training_files(setup.data), size, BATCH, seed=0, start_step=0, steps=setup.warmup + steps,
        workers=variant.workers, pin_memory=False,
    )  # fmt: skip
    batches: Iterator = iter(loader)
    for _ in range(setup.warmup):
        step(next(batches)[0])
    start = time.perf_counter()
    for images, _ in batches:
        step(images)
    return steps * BATCH / (time.perf_counter() - start)


def _product(variant: Variant, setup: Setup, size: int, steps: int) -> float:
    """``stylize train`` with its defaults at this crop size; the rate between two of its metric lines."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "bench.safetensors"
        config = TrainConfig(
            style_image=setup.style, data=setup.data, out=out, loss_network="vgg16", loss_network_weights=setup.weights,
            content_layer=CONTENT_LAYER, style_layers=setup.style_layers, steps=setup.warmup + steps, image_size=size,
            device="cpu", checkpoint_every=0, norm=variant.norm,
        )  # fmt: skip
        train(config)
        seconds = [line["seconds"] for line in map(json.loads, metrics_log_path(out).read_text().splitlines())]
    return steps * BATCH / (seconds[setup.warmup + steps - 1] - seconds[setup.warmup - 1])


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


def measure(variant: Variant, setup: Setup, size: int, steps: int) -> float:
    """Images per second of ``steps`` timed steps of one row, in this process."""
    return (_product if variant.product else _timed_loop)(variant, setup, size, steps)


def _timed_steps(size: int, steps: int, rounds: int) -> int:
    """Per round: ``steps`` in all at 128 px, the same pixels at other sizes, split over the rounds."""
    return max(3, steps * 128 * 128 // (size * size) // rounds)


def _measure_all(variants: Sequence[Variant], sizes: list[int], setup: Setup, args: argparse.Namespace) -> list[dict]:
    """Each round runs every row, each in a fresh process at every size; medians over rounds,
    each size's speed-ups against its first row."""
    shared = ["--loss-network-weights", str(setup.weights), "--data", str(setup.data), "--style", str(setup.style),
              "--style-layers", ",".join(setup.style_layers), "--warmup", str(setup.warmup),
              "--steps", str(args.steps), "--rounds", str(args.rounds), "--sizes", args.sizes]  # fmt: skip
    if args.norms:
        shared += ["--norms", args.norms]
    rounds: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.rounds):
        for number in range(1, len(variants) + 1):
            rates = run_child("benchmarks.train", [*shared, "--child", str(number)])
            for size in sizes:
                rounds.setdefault((size, number), []).append(rates[str(size)])
    rows = []
    for size in sizes:
        reference = statistics.median(rounds[size, 1])
        for number, variant in enumerate(variants, 1):
            rate = statistics.median(rounds[size, number])
            rows.append({"size": size, "number": number, "config": variant.name,
                         "steps": _timed_steps(size, args.steps, args.rounds) * args.rounds, "images_per_s": rate,
                         "rounds": rounds[size, number], "speedup": rate / reference})  # fmt: skip
    return rows


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss-network-weights", type=Path, required=True, help="VGG16 state dict (torchvision keys)")
    parser.add_argument("--data", type=Path, help="folder of photos (default: 16 synthetic ones)")
    parser.add_argument("--style", type=Path, help="style image (default: synthetic stripes)")
    parser.add_argument("--sizes", default="128,256", help="comma-separated crop sides")
    parser.add_argument("--steps", type=int, default=24, help="timed steps a row at 128 px, all rounds (1/4 at 256 px)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of every row, alternating; the steps split over them"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each run")
    parser.add_argument("--style-layers", default=STYLE_LAYERS, help="comma-separated VGG16 style layers")
    parser.add_argument("--norms", help="comma-separated norms, or all: stylize train once per norm instead")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train.json"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    variants = paths_for(torch.device("cpu"))
    if args.norms:
        norms = norm_names() if args.norms == "all" else [check_norm(norm) for norm in args.norms.split(",")]
        variants = tuple(Variant(f"stylize train --norm {norm}", product=True, norm=norm) for norm in norms)
    sizes = [int(side) for side in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        setup = Setup(
            data=args.data or _synthetic_photos(Path(folder)),
            style=args.style or _synthetic_style(Path(folder) / "style.png"),
            weights=args.loss_network_weights,
            style_layers=tuple(args.style_layers.split(",")),
            warmup=args.warmup,
        )
        if args.child:
            variant = variants[args.child - 1]
            print(json.dumps({size: measure(variant, setup, size, _timed_steps(size, args.steps, args.rounds))
                              for size in sizes}))  # fmt: skip
            return
        rows = _measure_all(variants, sizes, setup, args)
    _report(rows, setup, args)


def _report(rows: list[dict], setup: Setup, args: argparse.Namespace) -> None:
    device = resolve_device("cpu")
    show(
        f"training images/s, batch {BATCH}, VGG16 to {setup.style_layers[-1]}, median of {args.rounds} rounds, "
        f"on {machine(device)['cpu']}{'' if native_bf16(device) else ' (no native bf16: every row fp32)'}",
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
    settings = {**asdict(setup), "data": "given folder" if args.data else "synthetic", "weights": setup.weights.name,
                "style": setup.style.name, "batch": BATCH, "sizes": args.sizes, "rounds": args.rounds,
                "content_layer": CONTENT_LAYER}  # fmt: skip
    write_json(args.out, {"benchmark": "train", "machine": machine(device), "settings": settings, "results": rows})


if __name__ == "__main__":
    main()
