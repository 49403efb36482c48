"""Image I/O: every file becomes float NCHW RGB in [0, 1] here, and only here.

Handles what cameras and editors actually produce: EXIF orientation, grayscale,
palette, CMYK, 16-bit and images with alpha (kept aside and written back).
"""

from __future__ import annotations

import base64
import binascii
import functools
import glob
import io
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageOps, ImageSequence

from stylize.errors import StylizeError
from stylize.fileio import atomic_path, format_for_extension

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


@dataclass(frozen=True)
class LoadedImage:
    """An image's pixels as ``load_image`` gives them: ``rgb`` in sRGB and, kept
    aside, ``alpha`` (1: opaque); H and W in pixels."""

    rgb: torch.Tensor  # (1, 3, H, W) float in [0, 1]
    alpha: torch.Tensor | None  # (1, 1, H, W) float in [0, 1], or None for an image without alpha


# A pixel-count limit against decompression bombs: a tiny file that decodes to
# gigabytes. 150 megapixels is above any camera's; panoramas may need more.
DEFAULT_MAX_PIXELS = 150_000_000
MAX_PIXELS_VARIABLE = "STYLIZE_MAX_PIXELS"
_PIL_LIMIT_LOCK = threading.Lock()


def max_pixels_setting() -> int:
    """The pixel limit: $STYLIZE_MAX_PIXELS, else ``DEFAULT_MAX_PIXELS``."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise StylizeError(f"{MAX_PIXELS_VARIABLE} must be a positive whole number of pixels, not {text!r}")
    return int(text)


def _open_unchecked(path: Path) -> Image.Image:
    """``Image.open`` (header only) without Pillow's own bomb limit, which would
    refuse images that ours allows; ``open_image`` checks the size itself."""
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def open_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Decode fully (so truncated files fail here) and apply EXIF orientation.

    Images over ``max_pixels`` (default: ``max_pixels_setting()``) are refused
    from their header, before any pixel is decoded.
    """
    path = Path(path)
    limit = max_pixels if max_pixels is not None else max_pixels_setting()
    if not path.exists():
        raise StylizeError(f"no such file: {path}")
    if path.is_dir():
        raise StylizeError(f"{path} is a folder, not an image")
    try:
        with warnings.catch_warnings():
            # Pillow warns about damage it works around (corrupt EXIF, short tags);
            # the user gets the image, or one error line, but no warning noise.
            warnings.simplefilter("ignore")
            return _decode(path, limit)
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as error:
        reason = "not an image" if isinstance(error, Image.UnidentifiedImageError) else str(error)
        raise StylizeError(f"cannot read {path}: {reason}") from None


def _decode(path: Path, limit: int) -> Image.Image:
    """Check the size from the header, verify PNG checksums, then decode."""
    image = _open_unchecked(path)
    try:
        width, height = image.size
        if width * height > limit:
            raise StylizeError(
                f"{path} is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
                f"(a decompression bomb?); raise the limit with {MAX_PIXELS_VARIABLE} or the max_pixels setting"
            )
        if image.format == "PNG":
            # Decoding ignores the checksums of PNG chunks; a corrupt file should
            # fail rather than give subtly wrong pixels. verify() uses the file up.
            image.verify()
            image.close()
            image = _open_unchecked(path)
        image.load()
        return ImageOps.exif_transpose(image)
    finally:
        image.close()


def _array(image: Image.Image) -> np.ndarray:
    """HWC float32 in [0, 1], three or four channels, in sRGB."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if image.mode == "F":
        return np.repeat(_float_grey(image)[..., None], 3, axis=2)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    converted = to_srgb(image, "RGBA" if has_alpha else "RGB")
    return np.asarray(converted, dtype=np.float32) / 255.0


# The ranges floating-point images are written in: 0..1 (the usual, here with
# room for an overshoot, which is clipped), or 8- or 16-bit levels; the full
# scale of each, and the largest value taken for it.
_FLOAT_RANGES = ((1.0, 2.0), (255.0, 255.0), (65535.0, 65535.0))


def _float_grey(image: Image.Image) -> np.ndarray:
    """A 32-bit float image's values scaled from the range it is written in
    (``_FLOAT_RANGES``) to [0, 1]; other values are refused, not guessed at."""
    values = np.asarray(image, dtype=np.float32)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not np.isfinite(values).all():
        raise StylizeError("floating-point pixels that are not numbers (NaN or infinite)")
    full = next((scale for scale, top in _FLOAT_RANGES if low >= 0 and high <= top), None)
    if full is None:
        raise StylizeError(
            f"floating-point pixels from {low:g} to {high:g}: not a range stylize knows (0..1, 0..255 or 0..65535)"
        )
    return np.clip(values / full, 0.0, 1.0)


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# The profile written into results, with its creation date (bytes 24-35) zeroed
# so that the same picture gives the same file; its ID field is unset (zero).
SRGB_PROFILE = _SRGB.tobytes()[:24] + bytes(12) + _SRGB.tobytes()[36:]


def to_srgb(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in ``mode`` (RGB or RGBA), its colours converted from its
    embedded ICC profile (CMYK print, Adobe RGB, Display P3, grey, ...) to sRGB,
    the space the networks were trained in and every result is written in.
    Alpha (a channel or a transparent colour) is kept aside, as LittleCMS
    converts colour only. A profile that cannot be read, or that does not fit
    the image, is ignored, as browsers do."""
    colour = _colour_mode(image.mode)
    transform = _transform_to_srgb(image.info.get("icc_profile") or b"", colour)
    if transform is None:
        return image.convert(mode)
    converted = ImageCms.applyTransform(image.convert(colour), transform)
    assert converted is not None  # only an in-place transform returns None
    if mode == "RGBA":
        converted.putalpha(image.convert("RGBA").getchannel("A"))
    return converted


def _colour_mode(mode: str) -> str:
    """The colour channels of a Pillow mode, as LittleCMS takes them."""
    return mode if mode in ("RGB", "CMYK", "L") else "L" if mode in ("LA", "La", "1") else "RGB"


@functools.lru_cache(maxsize=16)
def _transform_to_srgb(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """Built once per profile (training reads thousands of photos that share one);
    None without a profile, for sRGB itself, and for profiles that do not work."""
    if not profile:
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if "sRGB" in ImageCms.getProfileDescription(source):
            return None
        return ImageCms.buildTransform(source, _SRGB, mode, "RGB")
    except (OSError, ImageCms.PyCMSError):
        return None


def image_to_tensor(image: Image.Image) -> LoadedImage:
    pixels = torch.from_numpy(_array(image)).permute(2, 0, 1).unsqueeze(0).contiguous()
    alpha = pixels[:, 3:4] if pixels.shape[1] == 4 else None
    return LoadedImage(rgb=pixels[:, :3], alpha=alpha)


def load_image(path: Path, max_pixels: int | None = None) -> LoadedImage:
    """An image file (an animation's first frame) as 1x3xHxW float RGB in [0, 1],
    converted to sRGB with EXIF orientation applied, and its alpha if it has one.

    Raises StylizeError if the file is missing, a folder or not a readable image,
    if it has more than ``max_pixels`` pixels (default: $STYLIZE_MAX_PIXELS, else
    150 million) or $STYLIZE_MAX_PIXELS is not a positive whole number, or if its
    floating-point pixels are not finite or in a range stylize knows.
    """
    image = open_image(path, max_pixels)
    try:
        return image_to_tensor(image)
    except StylizeError as error:
        raise StylizeError(f"cannot read {path}: {error}") from None


@dataclass(frozen=True)
class Animation:
    """An animated GIF, PNG (APNG) or WebP: every frame as shown (disposal and
    blending applied), how long each is shown, and how often it loops."""

    frames: list[LoadedImage]
    durations: list[int]  # ms
    loop: int | None  # times to play again, 0: forever; None: play once (a GIF without a loop block)


ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP"})
_DEFAULT_FRAME_MS = 100


def load_animation(path: Path, max_pixels: int | None = None) -> Animation | None:
    """``path``'s frames if it is animated (more than one frame), else None.
    ``max_pixels`` bounds all frames' pixels together, as a decompression bomb
    may hide in a frame count as well as in a size."""
    frames = _frame_count(path)
    if frames < 2:
        return None
    width, height = open_image(path, max_pixels).size  # checks the file and its first frame
    limit = max_pixels if max_pixels is not None else max_pixels_setting()
    if width * height * frames > limit:
        raise StylizeError(
            f"{path} has {frames} frames of {width}x{height} = {width * height * frames:,} pixels in all, over the "
            f"limit of {limit:,}; raise it with {MAX_PIXELS_VARIABLE} or the max_pixels setting"
        )
    with _open_unchecked(path) as animated, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            shown = [
                (image_to_tensor(frame.convert("RGBA")), frame.info.get("duration"))
                for frame in ImageSequence.Iterator(animated)
            ]
        except (OSError, SyntaxError, ValueError) as error:
            raise StylizeError(f"cannot read {path}: {error}") from None
        loop = animated.info.get("loop")
    durations = [int(ms) if ms else _DEFAULT_FRAME_MS for _, ms in shown]
    return Animation([_opaque_if_so(frame) for frame, _ in shown], durations, loop)


def _frame_count(path: Path) -> int:
    """The frames a file's header announces, without decoding a pixel; 1 for a
    file Pillow cannot open (``open_image`` then says why)."""
    try:
        with _open_unchecked(path) as header:
            return int(getattr(header, "n_frames", 1))
    except (OSError, SyntaxError, ValueError):
        return 1


def _opaque_if_so(image: LoadedImage) -> LoadedImage:
    """Drop an alpha channel that is opaque everywhere."""
    if image.alpha is not None and bool((image.alpha >= 1).all()):
        return LoadedImage(rgb=image.rgb, alpha=None)
    return image


_ALPHA_ANIMATION_OPTIONS: dict[str, dict[str, object]] = {"GIF": {"disposal": 2}, "WEBP": {"lossless": True}}


def save_animation(path: Path, animation: Animation) -> None:
    """Write atomically as an animated GIF, PNG (APNG) or WebP, as the extension says."""
    fmt = output_format(path)
    if fmt not in ANIMATED_FORMATS:
        raise StylizeError(f"cannot write an animation to {path}: write .gif, .png or .webp (or use stylize video)")
    first, *rest = [tensor_to_image(frame.rgb, frame.alpha) for frame in animation.frames]
    options: dict[str, object] = {**_SAVE_OPTIONS.get(fmt, {}), "save_all": True, "append_images": rest,
                                  "duration": animation.durations}  # fmt: skip
    if animation.loop is not None:
        options["loop"] = animation.loop
    if any(frame.alpha is not None for frame in animation.frames):
        # Each frame replaces the one before, transparent pixels included (GIF's
        # default lets them pile up); Pillow's lossy animated WebP drops alpha.
        options.update(_ALPHA_ANIMATION_OPTIONS.get(fmt, {}))
    with atomic_path(path) as temporary:
        first.save(temporary, format=fmt, **options)


def from_uint8_nhwc(pixels: np.ndarray) -> torch.Tensor:
    """Decoded 8-bit frames (NHWC, as video decoders give them) -> float NCHW in [0, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> [0, 255] uint8, rounding to nearest."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def tensor_to_image(rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> Image.Image:
    channels = rgb if alpha is None else torch.cat([rgb, alpha.to(rgb)], dim=-3)
    pixels = to_uint8(channels.reshape(channels.shape[-3:])).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels)


def output_format(path: Path) -> str:
    """The Pillow format that ``path``'s extension names."""
    writable = {suffix: fmt for suffix, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    common_first = {suffix: writable[suffix] for suffix in _COMMON_SUFFIXES if suffix in writable}
    return format_for_extension(path, {**common_first, **writable}, "images")


_COMMON_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tiff", ".bmp")


def save_image(path: Path, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> None:
    """Write atomically; the extension picks the format; alpha kept where it can be.

    ``rgb``: 1x3xHxW (or 3xHxW) float in [0, 1], clamped and rounded to 8 bits;
    ``alpha``: 1x1xHxW in [0, 1], written for PNG, WebP and TIFF only. Raises
    StylizeError if the extension names no image format Pillow writes, or the
    file cannot be written (a file where a folder should be, no permission, disk full).
    """
    save_pil(path, tensor_to_image(rgb, alpha if output_format(path) in _ALPHA_FORMATS else None))


# PNG is lossless at any level: level 1 writes a stylized 2048x1536 image in
# 0.27 s instead of 0.48 s (Pillow's default, 6), for a file 10% larger.
_SAVE_OPTIONS: dict[str, dict[str, int]] = {
    "JPEG": {"quality": 95},
    "WEBP": {"quality": 95},
    "PNG": {"compress_level": 1},
}


_PROFILE_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})


def save_pil(path: Path, image: Image.Image) -> None:
    path = Path(path)
    fmt = output_format(path)
    options: dict[str, object] = {**_SAVE_OPTIONS.get(fmt, {})}
    if fmt in _PROFILE_FORMATS:
        options["icc_profile"] = SRGB_PROFILE  # what every result is in, said in the file
    with atomic_path(path) as temporary:
        image.save(temporary, format=fmt, **options)


def spatial_size(images: torch.Tensor) -> tuple[int, int]:
    """(height, width) of an NCHW (or CHW, HW) tensor."""
    height, width = images.shape[-2:]
    return height, width


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased when shrinking; not clamped (bicubic overshoots a little)."""
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)


def resize_long_side(images: torch.Tensor, long_side: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    return resize(images, scaled_size(height, width, long_side / max(height, width))).clamp(0, 1)


def fit_into(images: torch.Tensor, width: int, height: int, enlarge: bool = False) -> torch.Tensor:
    """Scale into a width x height box, keeping the aspect ratio; smaller
    images stay as they are unless ``enlarge``."""
    h, w = images.shape[-2:]
    scale = min(width / w, height / h)
    return resize(images, scaled_size(h, w, scale if enlarge else min(scale, 1.0))).clamp(0, 1)


THUMBNAIL_SIZE = 256


def encode_thumbnail(rgb: torch.Tensor) -> str:
    """A small JPEG as base64 text, so a model file's metadata can show its style."""
    if max(rgb.shape[-2:]) > THUMBNAIL_SIZE:
        rgb = resize_long_side(rgb, THUMBNAIL_SIZE)
    buffer = io.BytesIO()
    tensor_to_image(rgb).save(buffer, format="JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_thumbnail(text: str) -> torch.Tensor | None:
    """The thumbnail's pixels, or None when there is none or it is damaged."""
    if not text:
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as image:
            image.load()
            return image_to_tensor(image).rgb
    except (binascii.Error, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def find_images(root: Path) -> list[Path]:
    """Every image file below ``root`` by extension, sorted for a stable order."""
    return sorted(path for path in Path(root).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def expand_inputs(inputs: Iterable[str]) -> list[tuple[Path, Path]]:
    """Files, folders and (quoted) globs -> (image path, its path relative to the output folder)."""
    found: list[tuple[Path, Path]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            images = find_images(path)
            if not images:
                raise StylizeError(f"no images in folder {path}")
            found.extend((image, image.relative_to(path)) for image in images)
        elif path.exists() or not glob.has_magic(text):
            found.append((path, Path(path.name)))
        else:
            matches = sorted(Path(match) for match in glob.glob(text, recursive=True))
            files = [match for match in matches if match.is_file()]
            if not files:
                raise StylizeError(f"no files match {text}")
            found.extend((match, Path(match.name)) for match in files)
    return found
