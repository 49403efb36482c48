"""Controls over a stylization: keep the photo's colours, blend strength, stroke scale.

They work on the network's output in Oklab (Ottosson 2020), a perceptual colour
space: L is lightness, (a, b) is colour, and equal steps look about equally
large. Keeping colours is luminance-only transfer (Gatys et al. 2017,
"Controlling Perceptual Factors in Neural Style Transfer"): the stylized L with
the photo's (a, b). Strength blends photo and stylization in Oklab rather than
in sRGB, so a half-way blend looks half-way in lightness and colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from stylize.errors import InvalidSetting, StylizeError
from stylize.images import max_pixels_setting, resize, scaled_size, spatial_size

MAX_SCALE = 4.0

# linear sRGB -> LMS cone responses, and cube-rooted LMS -> Lab (Ottosson's matrices).
_RGB_TO_LMS = torch.tensor([
    [0.4122214708, 0.5363325363, 0.0514459929],
    [0.2119034982, 0.6806995451, 0.1073969566],
    [0.0883024619, 0.2817188376, 0.6299787005],
])  # fmt: skip
_LMS_TO_LAB = torch.tensor([
    [0.2104542553, 0.7936177850, -0.0040720468],
    [1.9779984951, -2.4285922050, 0.4505937099],
    [0.0259040371, 0.7827717662, -0.8086757660],
])  # fmt: skip
_LMS_TO_RGB = torch.linalg.inv(_RGB_TO_LMS)
_LAB_TO_LMS = torch.linalg.inv(_LMS_TO_LAB)


def _mix(matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Multiply every pixel's channel vector by ``matrix``."""
    return torch.einsum("ij,njhw->nihw", matrix.to(images), images)


def srgb_to_oklab(images: torch.Tensor) -> torch.Tensor:
    """NCHW sRGB in [0, 1] -> NCHW Oklab (L in [0, 1], a and b about +-0.4)."""
    rgb = images.float().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return _mix(_LMS_TO_LAB, _mix(_RGB_TO_LMS, linear).clamp(min=0) ** (1 / 3))


def oklab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of ``srgb_to_oklab``, clamped into [0, 1] (blends may leave the gamut)."""
    linear = _mix(_LMS_TO_RGB, _mix(_LAB_TO_LMS, lab) ** 3).clamp(0, 1)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055).clamp(0, 1)


@dataclass(frozen=True)
class StyleControls:
    """How a stylization is applied to the photo (module docstring): its colours
    kept, a blend strength, and a stroke scale of at most 4.

    Raises InvalidSetting for a ``strength`` outside [0, 1] or a ``scale``
    outside (0, 4].
    """

    preserve_color: bool = False
    strength: float = 1.0  # 0: the photo, 1: the full stylization
    # Stroke size: the network sees the image at this scale, so 0.5 paints
    # strokes twice as large (relative to the image) and 2 half as large.
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.strength <= 1:
            raise InvalidSetting("strength", f"must be between 0 and 1, not {self.strength}")
        if not 0 < self.scale <= MAX_SCALE:
            raise InvalidSetting("scale", f"must be above 0 and at most {MAX_SCALE:g}, not {self.scale}")

    @property
    def is_plain(self) -> bool:
        return not self.preserve_color and self.strength == 1 and self.scale == 1


PLAIN = StyleControls()


def check_working_size(height: int, width: int, controls: StyleControls, max_pixels: int | None = None) -> None:
    """Refuse a scale at which the network would see more than ``max_pixels``
    (default: ``max_pixels_setting()``), the limit on decoded images."""
    working_height, working_width = scaled_size(height, width, controls.scale)
    limit = max_pixels if max_pixels is not None else max_pixels_setting()
    if working_height * working_width > limit:
        raise StylizeError(
            f"scale {controls.scale:g} would stylize {working_width}x{working_height} = "
            f"{working_height * working_width:,} pixels, over the limit of {limit:,}; use a smaller scale or image"
        )


def apply_controls(
    stylize: Callable[[torch.Tensor], torch.Tensor], photos: torch.Tensor, controls: StyleControls
) -> torch.Tensor:
    """``stylize`` (NCHW [0, 1] -> same) applied to ``photos`` under ``controls``.

    Below scale 1 the stylization is upsampled and the photo's fine lightness
    detail (what the downsampling removed) is added back, so edges stay as
    sharp as the photo's while the strokes grow.
    """
    if controls.strength == 0:
        return photos.clone()
    if controls.is_plain:
        return stylize(photos)
    size = spatial_size(photos)
    small = resize(photos, scaled_size(*size, controls.scale))
    stylized = resize(stylize(small).float(), size)
    photo_lab = srgb_to_oklab(photos)
    lab = srgb_to_oklab(stylized)
    if controls.scale < 1:
        lost_detail = photo_lab[:, :1] - srgb_to_oklab(resize(small, size).clamp(0, 1))[:, :1]
        lab = torch.cat([lab[:, :1] + lost_detail, lab[:, 1:]], dim=1)
    if controls.preserve_color:
        lab = torch.cat([lab[:, :1], photo_lab[:, 1:]], dim=1)
    if controls.strength < 1:
        lab = torch.lerp(photo_lab, lab, controls.strength)
    return oklab_to_srgb(lab)
