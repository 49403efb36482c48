"""Shared fixtures: tiny generated photos, a random-weight VGG file, the CLI in-process.

Nothing here needs ../shared or the network. Helpers live in helpers.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.vgg import cfgs, make_layers

import stylize.inference.stylizer as stylizer_module
from stylize.cli import main

from .helpers import CliResult, photo, write_model


@pytest.fixture(autouse=True)
def exact_stylizing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stylize in fp32 by default, so that outputs can be checked pixel for pixel
    against the plain network; tests of the bf16 default put it back."""
    monkeypatch.setattr(stylizer_module, "BF16_BY_DEFAULT_NORMS", frozenset())


# vgg16 up to relu2_2 (index 8): enough for a content and a two-layer style loss.
SMALL_VGG_DEPTH = 9


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


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    def run(*args: str) -> CliResult:
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model.safetensors")
