from __future__ import annotations

import io
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageFile

from stylize import StylizeError, load_image, save_image
from stylize.images import expand_inputs, find_images, max_pixels_setting, resize_long_side

from .helpers import SRGB_BLUE, SRGB_GREEN, SRGB_RED, cmyk_profile, icc_profile, matrix_rgb_profile, photo


def test_rgb_becomes_nchw_float_in_unit_range(tmp_path: Path) -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.rgb.shape == (1, 3, 2, 3) and image.rgb.dtype == torch.float32 and image.alpha is None
    torch.testing.assert_close(image.rgb[0].permute(1, 2, 0), torch.from_numpy(pixels).float() / 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=100)
    rgb = load_image(tmp_path / "r.jpg").rgb
    assert rgb.shape[-2:] == (20, 10)
    assert rgb[0, :, :8].mean() > 0.9 and rgb[0, :, 12:].mean() < 0.1  # white on top after the turn


def test_grayscale_palette_and_cmyk_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (4, 3), 128).save(tmp_path / "g.png")
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    palette = Image.new("P", (4, 3), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    palette.save(tmp_path / "p.png")
    gray = load_image(tmp_path / "g.png").rgb
    assert gray.shape == (1, 3, 3, 4) and torch.allclose(gray, torch.full_like(gray, 128 / 255))
    red = load_image(tmp_path / "c.jpg").rgb.mean(dim=(0, 2, 3))
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1
    assert torch.allclose(load_image(tmp_path / "p.png").rgb.mean(dim=(0, 2, 3)), torch.tensor([0.0, 0.0, 1.0]))


# Red, green, blue, white and black patches side by side.
PRIMARIES = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], np.uint8)


def _levels(image: torch.Tensor) -> np.ndarray:
    """Each patch's mean colour, 0..255."""
    return (image[0].reshape(3, 4, len(PRIMARIES), 4).mean(dim=(1, 3)).T * 255).numpy()


def test_an_embedded_rgb_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    # A made-up wide-gamut space whose red is sRGB's green, green sRGB's blue, blue sRGB's red.
    rotated = matrix_rgb_profile(SRGB_GREEN, SRGB_BLUE, SRGB_RED)
    patches = np.repeat(np.repeat(PRIMARIES[None], 4, axis=0), 4, axis=1)
    Image.fromarray(patches).save(tmp_path / "wide.png", icc_profile=rotated)
    expected = PRIMARIES[[1, 2, 0, 3, 4]]
    assert np.abs(_levels(load_image(tmp_path / "wide.png").rgb) - expected).max() < 3
    Image.fromarray(patches).save(tmp_path / "plain.png")  # no profile: sRGB, as it is
    assert np.abs(_levels(load_image(tmp_path / "plain.png").rgb) - PRIMARIES).max() < 0.5
    Image.fromarray(patches).save(tmp_path / "damaged.png", icc_profile=rotated[:100])  # ignored, as browsers do
    assert np.abs(_levels(load_image(tmp_path / "damaged.png").rgb) - PRIMARIES).max() < 0.5


def test_a_cmyk_jpeg_from_print_is_read_in_its_profiles_colours(tmp_path: Path) -> None:
    # Cyan ink alone prints what sRGB calls pure red (Lab, D50), on paper that is the profile's white.
    inks = cmyk_profile({(0, 0, 0, 0): (100.0, 0.0, 0.0), (1, 0, 0, 0): (54.29, 80.80, 69.89)})
    cmyk = np.zeros((8, 16, 4), np.uint8)
    cmyk[:, :8, 0] = 255  # left: full cyan; right: bare paper
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "print.jpg", quality=100, icc_profile=inks)
    rgb = load_image(tmp_path / "print.jpg").rgb[0] * 255
    assert np.abs(rgb[:, 2:6, 2:6].mean(dim=(1, 2)).numpy() - [255, 0, 0]).max() < 6
    assert np.abs(rgb[:, 2:6, 10:14].mean(dim=(1, 2)).numpy() - [255, 255, 255]).max() < 3


def test_results_are_written_as_srgb(tmp_path: Path) -> None:
    for suffix in (".png", ".jpg", ".webp", ".tif"):
        save_image(tmp_path / f"out{suffix}", torch.rand(1, 3, 6, 8))
        with Image.open(tmp_path / f"out{suffix}") as written:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(written.info["icc_profile"]))
            assert "sRGB" in ImageCms.getProfileDescription(profile)


@pytest.mark.parametrize(("full", "top"), [(1.0, 1.0), (1.0, 1.02), (255.0, 1.0), (65535.0, 1.0)])
def test_floating_point_images_are_scaled_from_their_range(tmp_path: Path, full: float, top: float) -> None:
    values = np.linspace(0, top, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(values * full, mode="F").save(tmp_path / "float.tif")
    rgb = load_image(tmp_path / "float.tif").rgb
    assert rgb.shape == (1, 3, 3, 4)
    expected = torch.from_numpy(values).clamp(max=1).expand(3, 3, 4)  # a 0..1 image's overshoot is clipped
    torch.testing.assert_close(rgb[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [(-1.0, 3.0, "floating-point pixels from -1 to 3: not a range"),
     (0.0, 1e6, "floating-point pixels from 0 to 1e+06: not a range"),
     (0.0, float("nan"), "floating-point pixels that are not numbers")],
)  # fmt: skip
def test_floating_point_images_of_no_known_range_are_refused(
    tmp_path: Path, low: float, high: float, message: str
) -> None:
    Image.fromarray(np.array([[low, high]], np.float32), mode="F").save(tmp_path / "hdr.tif")
    with pytest.raises(StylizeError, match=rf"cannot read .*hdr\.tif: {re.escape(message)}"):
        load_image(tmp_path / "hdr.tif")


def test_a_grey_profile_and_transparency_are_kept_through_the_conversion(tmp_path: Path) -> None:
    # Grey in linear light: 128 is half the light, which sRGB writes as 188.
    linear = icc_profile(b"mntr", b"GRAY", b"XYZ ", {b"kTRC": b"curv" + bytes(4) + struct.pack(">I", 0)})
    grey = np.dstack([np.full((4, 6), 128, np.uint8), np.tile(np.array([0, 255], np.uint8), (4, 3))])
    Image.fromarray(grey, mode="LA").save(tmp_path / "grey.png", icc_profile=linear)
    image = load_image(tmp_path / "grey.png")
    assert np.abs(image.rgb[0].numpy() * 255 - 188).max() < 2
    assert torch.equal(image.alpha[0, 0], torch.from_numpy(grey[..., 1] / 255).float())
    # A colour key (tRNS) on an RGB image with a profile: still transparent where it was.
    rotated = matrix_rgb_profile(SRGB_GREEN, SRGB_BLUE, SRGB_RED)
    Image.fromarray(np.full((4, 6, 3), [255, 0, 0], np.uint8)).save(
        tmp_path / "keyed.png", icc_profile=rotated, transparency=(255, 0, 0)
    )
    keyed = load_image(tmp_path / "keyed.png")
    assert keyed.alpha is not None and float(keyed.alpha.max()) == 0
    assert np.abs(_levels_of(keyed.rgb) - [0, 255, 0]).max() < 3


def _levels_of(rgb: torch.Tensor) -> np.ndarray:
    return rgb[0].mean(dim=(1, 2)).numpy() * 255


def test_the_same_picture_gives_the_same_file(tmp_path: Path) -> None:
    picture = torch.rand(1, 3, 6, 8)
    for name in ("a.png", "b.png"):
        save_image(tmp_path / name, picture)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as written:  # no creation date in the profile: any day, the same bytes
        assert written.info["icc_profile"][24:36] == bytes(12)


def test_sixteen_bit_grayscale_keeps_its_range(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    rgb = load_image(tmp_path / "16.png").rgb
    torch.testing.assert_close(rgb[0, 0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))


def test_alpha_is_kept_and_written_back_to_png_but_not_jpeg(tmp_path: Path) -> None:
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.array([0, 85, 170, 255], dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.alpha is not None and image.alpha.shape == (1, 1, 3, 4)
    save_image(tmp_path / "out.png", image.rgb, image.alpha)
    save_image(tmp_path / "out.jpg", image.rgb, image.alpha)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), rgba)
    assert Image.open(tmp_path / "out.jpg").mode == "RGB"


def test_palette_transparency_becomes_alpha(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "t.png", transparency=0)
    alpha = load_image(tmp_path / "t.png").alpha
    assert alpha is not None and alpha[0, 0, 0, 0] == 0 and alpha[0, 0, 1, 1] == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello"), "not an image"),
        (lambda p: p.write_bytes(b""), "not an image"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: None, "no such file"),
    ],
)
def test_unreadable_inputs_raise_one_clear_error(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "x.jpg"
    make(path)
    with pytest.raises(StylizeError, match=message):
        load_image(path)


def test_truncated_jpeg_is_an_error(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "f.jpg")
    data = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(StylizeError, match="cannot read"):
        load_image(tmp_path / "t.jpg")


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.png"
    target.write_bytes(b"old contents")

    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(str(fp)).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(StylizeError, match="No space left"):
        save_image(target, torch.rand(1, 3, 4, 4))
    assert target.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["keep.png"]


def test_unknown_output_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StylizeError, match="extension '.xyz'"):
        save_image(tmp_path / "a.xyz", torch.rand(1, 3, 4, 4))
    assert not list(tmp_path.iterdir())


def test_rounding_to_uint8(tmp_path: Path) -> None:
    rgb = torch.tensor([0.0, 0.5 / 255, 1.6 / 255, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    save_image(tmp_path / "r.png", rgb)
    assert np.asarray(Image.open(tmp_path / "r.png"))[0, :, 0].tolist() == [0, 0, 2, 255]


def test_resize_long_side() -> None:
    assert resize_long_side(torch.rand(1, 3, 30, 60), 20).shape == (1, 3, 10, 20)


def test_input_expansion_handles_files_folders_and_globs(photos: Path) -> None:
    images = find_images(photos)
    assert len(images) == 6 and images == sorted(images)
    from_folder = expand_inputs([str(photos)])
    assert {str(rel) for _, rel in from_folder} >= {"photo1.png", "nested/photo0.jpg"}
    from_glob = expand_inputs([str(photos / "*.png")])
    assert sorted(rel.name for _, rel in from_glob) == ["photo1.png", "photo5.png"]
    with pytest.raises(StylizeError, match="no files match"):
        expand_inputs([str(photos / "*.gif")])


@pytest.mark.parametrize("suffix", [".webp", ".tiff"])
def test_alpha_is_kept_in_webp_and_tiff(tmp_path: Path, suffix: str) -> None:
    rgba = np.dstack([photo(6, 8, seed=3), np.tile(np.linspace(0, 255, 8, dtype=np.uint8), (6, 1))])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    save_image(tmp_path / f"out{suffix}", image.rgb, image.alpha)
    written = np.asarray(Image.open(tmp_path / f"out{suffix}"))
    assert written.shape == (6, 8, 4) and np.array_equal(written[..., 3], rgba[..., 3])


def test_the_default_pixel_limit_refuses_from_the_header_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STYLIZE_MAX_PIXELS", raising=False)
    assert max_pixels_setting() == 150_000_000
    Image.new("L", (15_000, 10_001)).save(tmp_path / "huge.png")  # 150,015,000 pixels of black: a small file
    decoded: list[object] = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or real_load(self))
    with pytest.raises(StylizeError, match="over the limit of 150,000,000"):
        load_image(tmp_path / "huge.png")
    assert decoded == []
    Image.new("L", (3, 2)).save(tmp_path / "small.png")
    load_image(tmp_path / "small.png")
    assert len(decoded) >= 1  # the spy does see decoding
