"""What every benchmark shares: the machine, timing, peak memory, the table and the JSON."""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from stylize.fileio import atomic_path
from stylize.images import load_image, resize, resize_long_side
from stylize.inference.stylizer import InferenceSettings, Stylizer
from stylize.model.files import ModelInfo, StyleModel, load_model
from stylize.model.network import NetConfig, ReflectConv, TransformerNet, UpsampleConv
from stylize.report.flicker import Clip, pan_and_zoom_clip

# Wide enough for every column when the output goes to a file.
console = Console(width=None if sys.stdout.isatty() else 220)


def machine(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def run_child(module: str, arguments: Sequence[str]) -> Any:
    """Run ``python -m module arguments`` in a fresh process; the JSON on its last line of output."""
    child = subprocess.run([sys.executable, "-m", module, *arguments], capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(arguments)} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    first_s: float  # includes compiling and warm-up
    median_s: float
    runs_s: list[float] = field(default_factory=list)


def time_calls(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> Timing:
    """Median wall time of ``run`` after ``warmup`` calls (the first one timed on its own)."""
    start = time.perf_counter()
    run()
    sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        run()
    sync(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync(device)
        runs.append(time.perf_counter() - start)
    return Timing(first_s=first, median_s=statistics.median(runs), runs_s=runs)


def reset_peak_memory(device: torch.device) -> None:
    """Peak RSS restarts from the current RSS (Linux ``clear_refs``); GPU peak from zero."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """Peak RSS since ``reset_peak_memory`` in GiB (None where /proc is missing), and peak GPU memory."""
    rss = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 2**20
    except OSError:
        pass
    gpu = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"peak_rss_gib": rss, "peak_gpu_gib": gpu}


def bench_network(model: str | None) -> TransformerNet:
    """The model's network in eval mode on the CPU, or random instance-norm weights (seed 0)."""
    if model:
        return load_model(model, torch.device("cpu")).network.eval()
    torch.manual_seed(0)
    return TransformerNet(NetConfig()).eval()


class _PlainUpsampleConv(torch.nn.Module):
    """Upsample, then convolve: how pytorch/examples computes what ``UpsampleConv`` does."""

    def __init__(self, source: UpsampleConv):
        super().__init__()
        self.conv2d = source.conv2d
        self.upsampling = source.upsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Reflection padding of a nearest-upsampled map; bilinear pads by replication.
        padding = "reflect" if self.upsampling == "nearest" else "replicate"
        upsampled = torch.nn.functional.interpolate(x, scale_factor=2, mode=self.upsampling)
        return self.conv2d(torch.nn.functional.pad(upsampled, (1, 1, 1, 1), mode=padding))


def examples_form(network: TransformerNet) -> TransformerNet:
    """A copy computing the same function with the same weights the way
    pytorch/examples' network does: a 4x upsampled map through a 3x3 conv, and
    the plain 9x9 output conv, not the cheaper forms of ``convforms``."""
    plain = copy.deepcopy(network)
    plain.up1 = _PlainUpsampleConv(plain.up1)
    plain.up2 = _PlainUpsampleConv(plain.up2)
    plain.conv_out.__class__ = ReflectConv  # BlockConv's plain parent: same pad and weights
    return plain


def bench_stylizer(network: TransformerNet, device: torch.device, settings: InferenceSettings) -> Stylizer:
    """The product's Stylizer around ``network``, as ``stylize image`` would build it."""
    info = ModelInfo(name="bench", path=Path("bench"), config=network.config)
    return Stylizer(StyleModel(info, network.to(device)), device, settings)


def bench_image(path: Path | None, width: int, height: int) -> torch.Tensor:
    """A photo cropped and resized to ``width`` x ``height``, or a seeded synthetic one."""
    if path is None:
        generator = torch.Generator().manual_seed(0)
        ramp = torch.linspace(0, 1, width).expand(height, width)
        noise = torch.rand(3, height // 8 + 1, width // 8 + 1, generator=generator)
        texture = torch.nn.functional.interpolate(noise[None], size=(height, width), mode="bicubic")[0]
        return (0.5 * texture + 0.5 * ramp).clamp(0, 1)[None]
    rgb = load_image(path).rgb
    scale = max(width / rgb.shape[-1], height / rgb.shape[-2])
    rgb = resize_long_side(rgb, round(max(rgb.shape[-2:]) * scale))
    top, left = (rgb.shape[-2] - height) // 2, (rgb.shape[-1] - width) // 2
    return rgb[..., top : top + height, left : left + width].contiguous()


def levels(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    """Max and mean difference between two outputs as saved (8-bit levels)."""
    difference = (_to_levels(a) - _to_levels(b)).abs()
    return int(difference.max().item()), difference.mean().item()


def _to_levels(x: torch.Tensor) -> torch.Tensor:
    return x.float().clamp(0, 1).mul(255).round()


def show(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def write_json(path: Path, record: dict[str, object]) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {path}")


def pan_clip(photo: torch.Tensor, size: tuple[int, int], frames: int) -> Clip:
    """A slow pan of ``frames`` frames of ``size`` (H, W) over ``photo`` (1, 3, H', W'),
    scaled so that the window has room for the pan's travel whatever its aspect."""
    height, width = photo.shape[-2:]
    factor = 1.25 * max(size[0] / height, size[1] / width)
    return pan_and_zoom_clip(resize(photo, (round(height * factor), round(width * factor))), size, frames=frames)
