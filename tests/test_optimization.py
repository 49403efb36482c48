"""Stylizing by optimisation (stylize image --style): the photo's pixels against the training loss."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import stylize.training.vgg as vgg
from stylize.errors import InvalidSetting
from stylize.images import load_image
from stylize.inference.optimization import OptimizationSettings, StyleImage, StyleOptimizer, level_sizes

from .helpers import SMALL_LOSS_ARGS, photo, photo_tensor


def settings(vgg_weights: Path, **changes: object) -> OptimizationSettings:
    """The small test VGG (to relu2_2), on the CPU, in fp32."""
    values = {"loss_network": "vgg16", "loss_network_weights": vgg_weights, "content_layer": "relu2_2",
              "style_layers": ("relu1_2", "relu2_2"), "device": "cpu", "precision": "fp32", "steps": 5}  # fmt: skip
    return OptimizationSettings(**{**values, **changes})  # type: ignore[arg-type]


@pytest.fixture
def painting(style_image: Path) -> StyleImage:
    return StyleImage(load_image(style_image).rgb)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_the_loss_decreases_at_every_level(vgg_weights: Path, painting: StyleImage, optimizer: str) -> None:
    reports = []
    stylizer = StyleOptimizer([painting], settings(vgg_weights, optimizer=optimizer, steps=8), on_step=reports.append)
    image = photo_tensor(64, 88, seed=1)
    output = stylizer(image)
    assert output.shape == image.shape and 0 <= output.min() and output.max() <= 1
    assert [report.step for report in reports] == list(range(1, 25)) and {r.steps for r in reports} == {24}
    assert [report.size for report in reports[::8]] == [(16, 22), (32, 44), (64, 88)]
    for level in range(3):
        losses = [report.loss for report in reports if report.level == level]
        assert losses[-1] < 0.98 * losses[0], (level, losses)
    assert (output - image).abs().mean() > 0.01, "the pixels changed"


def test_no_steps_give_the_photo_back(vgg_weights: Path, painting: StyleImage) -> None:
    image = photo_tensor(40, 56, seed=2)
    assert torch.equal(StyleOptimizer([painting], settings(vgg_weights, steps=0))(image), image)


def test_the_content_loss_alone_keeps_the_photo(vgg_weights: Path, painting: StyleImage) -> None:
    image = photo_tensor(40, 56, seed=3)
    alone = settings(vgg_weights, style_weight=0.0, tv_weight=0.0, optimizer="adam")
    assert (StyleOptimizer([painting], alone)(image) - image).abs().max() < 1e-6


def test_a_blend_of_weights_one_and_zero_is_the_single_style(vgg_weights: Path, painting: StyleImage) -> None:
    other = StyleImage(photo_tensor(48, 48, seed=9))
    image = photo_tensor(32, 40, seed=4)
    single = StyleOptimizer([painting], settings(vgg_weights, levels=1))(image)
    blend = StyleOptimizer([painting, StyleImage(other.image, 0.0)], settings(vgg_weights, levels=1))(image)
    torch.testing.assert_close(blend, single, rtol=0, atol=1e-6)
    mixed = StyleOptimizer([painting, other], settings(vgg_weights, levels=1))(image)
    assert (mixed - single).abs().mean() > 1e-3, "a real blend differs"


def test_blended_targets_are_the_weighted_mean_of_the_styles_grams(vgg_weights: Path, painting: StyleImage) -> None:
    other = StyleImage(photo_tensor(48, 48, seed=9), 3.0)
    both = StyleOptimizer([painting, other], settings(vgg_weights)).style_targets(32)
    first = StyleOptimizer([painting], settings(vgg_weights)).style_targets(32)
    second = StyleOptimizer([other], settings(vgg_weights)).style_targets(32)
    for layer in both:
        torch.testing.assert_close(both[layer], 0.25 * first[layer] + 0.75 * second[layer])


def test_level_sizes_halve_down_to_the_smallest_size_the_loss_takes() -> None:
    assert level_sizes(400, 300, 3) == [(100, 75), (200, 150), (400, 300)]
    assert level_sizes(40, 24, 3) == [(40, 24)]
    assert level_sizes(40, 64, 3) == [(20, 32), (40, 64)]
    assert level_sizes(10, 10, 2) == [(10, 10)]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"steps": -1}, "steps must be at least 0"), ({"style_size": 4}, "style_size must be at least 16"),
     ({"optimizer": "sgd"}, "optimizer must be one of: lbfgs, adam; not 'sgd'"),
     ({"tv_weight": -1.0}, "tv_weight must not be negative")],
)  # fmt: skip
def test_bad_settings_are_refused(vgg_weights: Path, change: dict, message: str) -> None:
    with pytest.raises(InvalidSetting) as raised:
        settings(vgg_weights, **change)
    assert message in f"{raised.value.setting} {raised.value.problem}"


def test_style_through_the_cli_writes_a_stylized_photo(
    cli, tmp_path: Path, style_image: Path, vgg_weights: Path
) -> None:
    Image.fromarray(photo(40, 56, seed=5)).save(tmp_path / "photo.png")
    result = cli("image", tmp_path / "photo.png", "--style", f"{style_image}:0.5", "--out", tmp_path,
                 "--loss-network-weights", vgg_weights, *SMALL_LOSS_ARGS, "--steps", "3", "--device", "cpu",
                 "--style-size", "32")  # fmt: skip
    assert result.code == 0, result.err
    written = np.asarray(Image.open(tmp_path / "photo-swirls.png"))
    assert written.shape == (40, 56, 3) and np.abs(written.astype(int) - photo(40, 56, seed=5)).mean() > 1


@pytest.mark.parametrize(
    ("style", "extra", "message"),
    [
        ("{tmp}/missing.jpg", [], "error: no such file: {tmp}/missing.jpg"),
        ("{tmp}/notes.jpg", [], "error: cannot read {tmp}/notes.jpg: not an image"),
        ("{tmp}/dot.png", [], "error: --style images must be at least 16x16 pixels, not 1x1"),
        ("{style}:-1", [], "error: --style weights must not be negative, not -1"),
        ("{style}", ["--model", "starry-night"], "error: give --model or --style, not both"),
        ("{style}", ["--optimizer", "sgd"], "error: --optimizer must be one of: lbfgs, adam; not 'sgd'"),
    ],
)
def test_bad_style_requests_are_one_line_and_write_nothing(
    cli, tmp_path: Path, style_image: Path, vgg_weights: Path, style: str, extra: list[str], message: str
) -> None:
    (tmp_path / "notes.jpg").write_text("not a painting")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    Image.fromarray(photo(20, 20, seed=6)).save(tmp_path / "photo.png")
    before = set(tmp_path.iterdir())
    filled = style.format(tmp=tmp_path, style=style_image)
    result = cli("image", tmp_path / "photo.png", "--style", filled, "--loss-network-weights", vgg_weights,
                 *SMALL_LOSS_ARGS, *extra)  # fmt: skip
    assert result.code == 2 and len(result.error_lines) == 1, result.err
    assert result.error_lines[0].startswith(message.format(tmp=tmp_path))
    assert set(tmp_path.iterdir()) == before


def test_without_weights_offline_the_error_says_what_to_do(cli, tmp_path: Path, style_image: Path, monkeypatch) -> None:
    def offline(progress: bool) -> dict:
        raise OSError("no network")

    monkeypatch.setattr(vgg, "imagenet_weights_cached", lambda name: False)
    monkeypatch.setattr(vgg, "_imagenet_weights", lambda name: SimpleNamespace(get_state_dict=offline))
    Image.fromarray(photo(20, 20, seed=7)).save(tmp_path / "photo.png")
    result = cli("image", tmp_path / "photo.png", "--style", style_image, "--device", "cpu")
    assert result.code == 2
    assert result.error_lines[-1].startswith("error: --loss-network-weights is needed offline")
