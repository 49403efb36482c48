"""Shared test helpers: generated photos, random networks and model files,
training arguments, CLI results, weight comparisons. Fixtures live in conftest."""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import stylize.training.loop as training
from stylize.model.files import save_model
from stylize.model.network import NetConfig, TransformerNet

ALL_NORMS = [
    "instance", "batch", "layer", "group", "none", "weight", "ibn", "batch-instance",
    "conditional-instance", "conditional-batch",
]  # fmt: skip
SMALL_LOSS_ARGS = ["--loss-network", "vgg16", "--style-layers", "relu1_2,relu2_2", "--content-layer", "relu2_2"]


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random colour field with an edge, more photo-like than noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((4, 4, 3))
    rows = np.linspace(0, 3, height)[:, None]
    cols = np.linspace(0, 3, width)[None, :]
    r0, c0 = np.floor(rows).astype(int).clip(0, 2), np.floor(cols).astype(int).clip(0, 2)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    image = (
        coarse[r0, c0] * (1 - fr) * (1 - fc)
        + coarse[r0 + 1, c0] * fr * (1 - fc)
        + coarse[r0, c0 + 1] * (1 - fr) * fc
        + coarse[r0 + 1, c0 + 1] * fr * fc
    )
    image[:, width // 2 :] *= 0.6
    return (image * 255).round().astype(np.uint8)


def train_args(style: Path, data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    """A few-second training run on 32 px crops with the small VGG, without the
    shift term (it costs a third more a step; ``extra`` may turn it on)."""
    return [
        "train", str(style), "--data", str(data), "--out", str(out),
        "--loss-weights", str(weights), *SMALL_LOSS_ARGS,
        "--steps", "4", "--batch-size", "2", "--image-size", "32", "--style-size", "32",
        "--workers", "0", "--device", "cpu", "--shift-weight", "0", *extra,
    ]  # fmt: skip


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def write_model(
    path: Path,
    norm: str = "instance",
    seed: int = 0,
    style: str = "test-style",
    training: dict[str, object] | None = None,
    style_thumbnail: str = "",
) -> Path:
    """A ``random_network`` saved as a model file, with a training record as ``train`` writes one."""
    record = training if training is not None else {**minimal_record(path), "image_size": 32, "steps_done": 0}
    save_model(path, random_network(norm, seed), style=style, training=record, style_thumbnail=style_thumbnail)
    return path


def minimal_record(out: Path) -> dict[str, object]:
    """The settings every training record holds (``TrainConfig.from_dict`` needs them)."""
    return {"style_image": "style.jpg", "data": "photos", "out": str(out)}


def photo_tensor(height: int, width: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(photo(height, width, seed)).permute(2, 0, 1)[None].float().div(255)


def random_network(norm: str = "instance", seed: int = 0, resampling: str = NetConfig.resampling) -> TransformerNet:
    """Random weights in eval mode; batch-norm layers get running statistics of real-looking photos."""
    torch.manual_seed(seed)
    network = TransformerNet(NetConfig(norm=norm, resampling=resampling))
    with torch.no_grad():
        network.train()(photo_tensor(32, 32, seed).repeat(4, 1, 1, 1))
    return network.eval()


def assert_same_weights(a: Path, b: Path) -> None:
    """Two model files hold equal tensors, key for key."""
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def count_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on the training loss: the list grows by one per step this process computes."""
    steps: list[int] = []
    real = training.perceptual_loss

    def counted(*args, **kwargs):
        steps.append(len(steps) + 1)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "perceptual_loss", counted)
    return steps


def _s15(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(value * 65536)) for value in values)


D50 = (0.9642, 1.0, 0.8249)
# sRGB's primaries adapted to D50, as ICC profiles hold them.
SRGB_RED, SRGB_GREEN, SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)


def icc_profile(device_class: bytes, colour_space: bytes, connection: bytes, tags: dict[bytes, bytes]) -> bytes:
    """A minimal ICC v2 profile (ICC.1:2001-04): header, tag table, tags."""
    tags = {
        b"desc": b"desc" + bytes(4) + struct.pack(">I", 5) + b"test\0" + bytes(8) + bytes(3) + bytes(67),
        b"wtpt": b"XYZ " + bytes(4) + _s15(*D50),
        **tags,
    }
    offset, table, data = 128 + 4 + 12 * len(tags), struct.pack(">I", len(tags)), b""
    for signature, body in tags.items():
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000) + device_class
              + colour_space + connection + bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0) + _s15(*D50)
              + bytes(48))  # fmt: skip
    return header + table + data


def matrix_rgb_profile(red: tuple[float, ...], green: tuple[float, ...], blue: tuple[float, ...]) -> bytes:
    """An RGB display profile with these primaries (XYZ, D50) and a 2.2 gamma."""
    gamma = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256))
    xyz = {b"rXYZ": red, b"gXYZ": green, b"bXYZ": blue}
    return icc_profile(b"mntr", b"RGB ", b"XYZ ", {
        **{tag: b"XYZ " + bytes(4) + _s15(*value) for tag, value in xyz.items()},
        b"rTRC": gamma, b"gTRC": gamma, b"bTRC": gamma,
    })  # fmt: skip


def cmyk_profile(corner_lab: dict[tuple[int, int, int, int], tuple[float, float, float]]) -> bytes:
    """A CMYK printer profile whose inks, at the 16 corners of CMYK (0 or full
    ink each), give these Lab colours; corners not listed are mid grey."""
    lut = b"mft2" + bytes(4) + struct.pack(">BBBB", 4, 3, 2, 0) + _s15(1, 0, 0, 0, 1, 0, 0, 0, 1)
    lut += struct.pack(">HH", 2, 2) + struct.pack(">2H", 0, 65535) * 4
    for corner in itertools.product((0, 1), repeat=4):  # the first ink varies slowest
        lightness, a, b = corner_lab.get(corner, (50.0, 0.0, 0.0))
        lut += struct.pack(">3H", round(lightness * 652.8), round((a + 128) * 256), round((b + 128) * 256))
    lut += struct.pack(">2H", 0, 65535) * 3
    return icc_profile(b"prtr", b"CMYK", b"Lab ", {b"A2B0": lut})
