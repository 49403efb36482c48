"""--preserve-color, --strength and --scale: Oklab, luminance-only transfer, blending, stroke scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylize import StyleControls, StylizeError, load_image, load_stylizer
from stylize.images import resize
from stylize.inference.controls import apply_controls, check_working_size, oklab_to_srgb, srgb_to_oklab

from .helpers import photo, photo_tensor


def recolour(images: torch.Tensor) -> torch.Tensor:
    """A stand-in stylization that changes lightness and colour everywhere."""
    return torch.stack([images[:, 2] * 0.8, 1 - images[:, 0], images[:, 1] * 0.5 + 0.3], dim=1)


class Recording:
    """``recolour`` that remembers the sizes it was given."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(images.shape[-2:]))
        return recolour(images)


def test_oklab_round_trips_and_has_its_reference_values() -> None:
    colours = torch.rand(2, 3, 17, 9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(oklab_to_srgb(srgb_to_oklab(colours)), colours, atol=2e-5)
    white, black = srgb_to_oklab(torch.ones(1, 3, 1, 1)), srgb_to_oklab(torch.zeros(1, 3, 1, 1))
    assert torch.allclose(white.flatten(), torch.tensor([1.0, 0, 0]), atol=1e-4)
    assert torch.allclose(black.flatten(), torch.zeros(3), atol=1e-6)
    # Ottosson's published value for sRGB red.
    red = srgb_to_oklab(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(red, torch.tensor([0.6279554, 0.2248631, 0.1258463]), atol=1e-4)


def test_default_controls_leave_the_stylization_untouched() -> None:
    photos = photo_tensor(20, 28, seed=1)
    assert torch.equal(apply_controls(recolour, photos, StyleControls()), recolour(photos))


def test_strength_zero_returns_the_photo_without_running_the_network() -> None:
    photos, network = photo_tensor(20, 28, seed=2), Recording()
    result = apply_controls(network, photos, StyleControls(strength=0))
    assert torch.equal(result, photos) and network.sizes == []
    result.add_(1)
    assert photos.max() <= 1, "the photo itself must not be handed out"


def test_strength_blends_halfway_in_oklab_not_in_rgb() -> None:
    photos = photo_tensor(24, 24, seed=3)
    half = apply_controls(recolour, photos, StyleControls(strength=0.5))
    midpoint = (srgb_to_oklab(photos) + srgb_to_oklab(recolour(photos))) / 2
    assert torch.allclose(srgb_to_oklab(half), midpoint, atol=1e-3)
    pixel_alpha = (photos + recolour(photos)) / 2
    assert (half - pixel_alpha).abs().max() > 0.02, "a pixel alpha blend would not need Oklab"
    lightness = [srgb_to_oklab(apply_controls(recolour, photos, StyleControls(strength=s)))[:, 0].mean() for s in
                 (0.0, 0.25, 0.5, 0.75, 1.0)]  # fmt: skip
    steps = np.diff([float(value) for value in lightness])
    assert np.allclose(steps, steps[0], atol=1e-3), "equal strength steps give equal lightness steps"


def test_preserve_color_keeps_the_photos_colour_and_the_styles_lightness() -> None:
    photos = photo_tensor(24, 30, seed=4) * 0.6 + 0.2  # inside the gamut after the swap
    kept = srgb_to_oklab(apply_controls(recolour, photos, StyleControls(preserve_color=True)))
    assert torch.allclose(kept[:, 1:], srgb_to_oklab(photos)[:, 1:], atol=2e-3)
    assert torch.allclose(kept[:, :1], srgb_to_oklab(recolour(photos))[:, :1], atol=2e-3)
    assert (kept[:, 1:] - srgb_to_oklab(recolour(photos))[:, 1:]).abs().max() > 0.05


@pytest.mark.parametrize(("scale", "seen"), [(0.5, (20, 31)), (2.0, (80, 124)), (0.01, (1, 1))])
def test_scale_sets_the_size_the_network_sees_and_the_output_keeps_the_photos(
    scale: float, seen: tuple[int, int]
) -> None:
    photos, network = photo_tensor(40, 62, seed=5), Recording()
    result = apply_controls(network, photos, StyleControls(scale=scale))
    assert network.sizes == [seen] and result.shape == photos.shape
    assert 0 <= result.min() and result.max() <= 1


def test_downscaled_stylization_gets_the_photos_fine_detail_back() -> None:
    photos = photo_tensor(48, 48, seed=6)
    photos = (photos + 0.3 * (torch.arange(48) % 2).float().view(1, 1, 1, 48)).clamp(0, 1)  # 1-px stripes
    identity = apply_controls(lambda x: x, photos, StyleControls(scale=0.5))
    blurred = resize(resize(photos, (24, 24)), (48, 48)).clamp(0, 1)
    lightness = srgb_to_oklab(photos)[:, 0]
    assert (srgb_to_oklab(blurred)[:, 0] - lightness).abs().mean() > 0.02, "the stripes are lost at half size"
    assert (srgb_to_oklab(identity)[:, 0] - lightness).abs().mean() < 0.005, "and restored afterwards"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"strength": -0.1}, "strength must be between 0 and 1"),
        ({"strength": 1.5}, "strength must be between 0 and 1"),
        ({"scale": 0.0}, "scale must be above 0"),
        ({"scale": 4.5}, "and at most 4"),
    ],
)
def test_bad_controls_are_refused(settings: dict[str, float], message: str) -> None:
    with pytest.raises(StylizeError, match=message):
        StyleControls(**settings)


def test_the_cli_applies_every_control(cli, tmp_path: Path, model_file: Path) -> None:
    Image.fromarray(photo(36, 44, seed=7)).save(tmp_path / "in.png")
    controls = StyleControls(preserve_color=True, strength=0.7, scale=0.5)
    options = ["--preserve-color", "--strength", "0.7", "--scale", "0.5"]
    result = cli("image", tmp_path / "in.png", "--model", model_file, "--out", tmp_path / "o.png", *options)
    assert result.code == 0, result.err
    expected = load_stylizer(model_file, "cpu", controls=controls)
    pixels = expected.stylize(load_image(tmp_path / "in.png")).rgb[0].mul(255).round().byte().permute(1, 2, 0)
    written = np.asarray(Image.open(tmp_path / "o.png"))
    assert np.array_equal(written, pixels.numpy())
    plain = cli("image", tmp_path / "in.png", "--model", model_file, "--out", tmp_path / "p.png")
    assert plain.code == 0 and not np.array_equal(np.asarray(Image.open(tmp_path / "p.png")), written)


def test_bad_strength_on_the_cli_is_one_line_and_writes_nothing(cli, tmp_path: Path, model_file: Path) -> None:
    Image.fromarray(photo(20, 20, seed=8)).save(tmp_path / "in.png")
    result = cli("image", tmp_path / "in.png", "--model", model_file, "--out", tmp_path / "o.png", "--strength", "2")
    assert result.code == 2 and result.error_lines == ["error: --strength must be between 0 and 1, not 2.0"]
    assert not (tmp_path / "o.png").exists()


def test_a_scale_that_would_exceed_the_pixel_limit_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("STYLIZE_MAX_PIXELS", "10000")
    with pytest.raises(
        StylizeError, match=r"^scale 4 would stylize 240x160 = 38,400 pixels, over the limit of 10,000;"
    ):
        check_working_size(40, 60, StyleControls(scale=4))
    check_working_size(40, 60, StyleControls(scale=2))
    check_working_size(40, 60, StyleControls(scale=4), max_pixels=38_400)


def test_the_scale_limit_follows_max_pixels_on_the_cli(cli, tmp_path: Path, model_file: Path, monkeypatch) -> None:
    Image.fromarray(photo(40, 60, seed=9)).save(tmp_path / "in.png")
    args = ("image", tmp_path / "in.png", "--model", model_file, "--scale", "4")
    monkeypatch.setenv("STYLIZE_MAX_PIXELS", "10000")
    assert cli(*args, "--max-pixels", "40000", "--out", tmp_path / "allowed.png").code == 0
    monkeypatch.delenv("STYLIZE_MAX_PIXELS")
    refused = cli(*args, "--max-pixels", "10000", "--out", tmp_path / "refused.png")
    assert refused.code == 2 and refused.error_lines == [
        "error: scale 4 would stylize 240x160 = 38,400 pixels, over the limit of 10,000; use a smaller scale or image"
    ]
    assert not (tmp_path / "refused.png").exists()


def test_calling_a_stylizer_applies_its_controls(model_file: Path) -> None:
    photos = photo_tensor(24, 32, seed=12)
    plain = load_stylizer(model_file, "cpu")
    grey = load_stylizer(model_file, "cpu", controls=StyleControls(preserve_color=True))
    untouched = load_stylizer(model_file, "cpu", controls=StyleControls(strength=0))
    assert torch.equal(untouched(photos), photos)
    assert torch.equal(plain(photos), plain.run(photos)) and not torch.allclose(grey(photos), plain(photos))
    colour = srgb_to_oklab(grey(photos))[:, 1:]  # preserve_color keeps the photo's a, b (up to gamut clipping)
    assert (colour - srgb_to_oklab(photos)[:, 1:]).abs().median() < 1e-3
