"""Shared fixtures: tiny generated photos, a random-weight VGG file, the CLI in-process.

Nothing here needs ../shared or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers
from PIL import Image

from stylize.cli import main
from stylize.modelfile import save_model
from stylize.network import NetConfig, TransformerNet

# vgg16 up to relu2_2 (index 8): enough for a content and a two-layer style loss.
SMALL_VGG_DEPTH = 9
ALL_NORMS = ["instance", "batch", "layer", "group", "none", "ibn", "batch-instance"]
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


@pytest.fixture(scope="session")
def vgg_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    features = make_layers(cfgs["D"])[:SMALL_VGG_DEPTH]
    path = tmp_path_factory.mktemp("vgg") / "vgg16-small.pth"
    torch.save({f"features.{key}": value for key, value in features.state_dict().items()}, path)
    return path


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested").mkdir()
    for i in range(6):
        target = folder / ("nested" if i % 3 == 0 else ".") / f"photo{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(photo(40 + 3 * i, 56 - 2 * i, seed=i)).save(target)
    return folder


@pytest.fixture(scope="session")
def style_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("style") / "swirls.png"
    rng = np.random.default_rng(7)
    stripes = np.sin(np.linspace(0, 12, 48))[None, :, None] * np.array([0.5, 0.2, -0.4])
    noise = rng.normal(0, 0.1, (48, 48, 3))
    Image.fromarray(((0.5 + stripes + noise).clip(0, 1) * 255).astype(np.uint8)).save(path)
    return path


def train_args(style: Path, data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    """A few-second training run on 32 px crops with the small VGG."""
    return [
        "train", str(style), "--data", str(data), "--out", str(out),
        "--loss-weights", str(weights), *SMALL_LOSS_ARGS,
        "--steps", "4", "--batch-size", "2", "--image-size", "32", "--style-size", "32",
        "--workers", "0", "--device", "cpu", *extra,
    ]  # fmt: skip


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    def run(*args: str) -> CliResult:
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def write_model(
    path: Path,
    norm: str = "instance",
    seed: int = 0,
    style: str = "test-style",
    training: dict[str, object] | None = None,
    style_thumbnail: str = "",
) -> Path:
    """A ``random_network`` saved as a model file."""
    record = training if training is not None else {"image_size": 32, "steps_done": 0}
    save_model(path, random_network(norm, seed), style=style, training=record, style_thumbnail=style_thumbnail)
    return path


def photo_tensor(height: int, width: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(photo(height, width, seed)).permute(2, 0, 1)[None].float().div(255)


def random_network(norm: str = "instance", seed: int = 0) -> TransformerNet:
    """Random weights in eval mode; batch-norm layers get running statistics of real-looking photos."""
    torch.manual_seed(seed)
    network = TransformerNet(NetConfig(norm=norm))
    with torch.no_grad():
        network.train()(photo_tensor(32, 32, seed).repeat(4, 1, 1, 1))
    return network.eval()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model.safetensors")
