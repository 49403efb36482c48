"""Temporal stability of a frame-by-frame stylization, on clips with known motion.

A clip is made from one still photo, so every pixel's true motion is known and
no optical-flow network is needed: a slow pan and zoom in sub-pixel steps, an
exposure ramp, a still shot with fresh sensor-like noise per frame, a small
object moving over a still background, and a hand-held shot: a pan under a
hand's tremor, with noise.

The measure is the warping error of video style transfer (Lai et al., "Learning
Blind Video Temporal Consistency", ECCV 2018; Ruder et al., 2016): the mean
absolute difference between frame t and frame t-1 warped by the true motion,
over the pixels visible in both, on the 0..255 scale. A stylization's error is
read against the source clip's own (1 = as steady as the footage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Pixels this close to where the previous frame's picture ends are
# left out of the error: the stylization of a border is not the question.
EDGE_MARGIN = 8
# A source clip this steady (levels of 255; bilinear resampling alone leaves more
# on a sub-pixel pan) has no warping error to read a stylization against.
STEADY_SOURCE = 0.1
SENSOR_NOISE = 3 / 255  # the standard deviation of a phone's noise in daylight, roughly
SHAKE = 0.7  # px: the standard deviation of a hand's tremor's fresh step in each frame


@dataclass(frozen=True)
class Clip:
    """Frames with their true motion.

    ``frames``: (T, 3, H, W) in [0, 1]. ``previous``: (T-1, H, W, 2), for each
    pixel of frame t (t >= 1), where it was in frame t-1, in ``grid_sample``'s
    normalized coordinates (align_corners=False). ``visible``: (T-1, 1, H, W),
    1 where that place was in view (not occluded, not outside frame t-1).
    """

    name: str
    frames: torch.Tensor
    previous: torch.Tensor
    visible: torch.Tensor


def warp_previous(frames: torch.Tensor, clip: Clip) -> torch.Tensor:
    """Frames 0..T-2 of ``frames`` (T, C, H, W) moved onto frames 1..T-1 by the
    clip's motion (bilinear): (T-1, C, H, W)."""
    return F.grid_sample(frames[:-1].float(), clip.previous, mode="bilinear", align_corners=False)


def warping_error(frames: torch.Tensor, clip: Clip) -> torch.Tensor:
    """Per frame pair, the mean absolute difference (0..255) between frame t of
    ``frames`` (T, 3, H, W, in [0, 1]) and frame t-1 warped onto it, over the
    visible pixels: a (T-1,) tensor. Raises ValueError if the frames do not
    match the clip's."""
    if frames.shape != clip.frames.shape:
        raise ValueError(f"{tuple(frames.shape)} frames for a clip of {tuple(clip.frames.shape)}")
    difference = (frames[1:].float() - warp_previous(frames, clip)).abs().mean(dim=1, keepdim=True)
    visible = clip.visible
    return (difference * visible).sum(dim=(1, 2, 3)) / visible.sum(dim=(1, 2, 3)).clamp_min(1) * 255


def colour_drift(frames: torch.Tensor) -> torch.Tensor:
    """Per frame pair, how far the whole frame's mean colour moved (0..255,
    the mean over R, G, B of the absolute change): a (T-1,) tensor."""
    means = frames.float().mean(dim=(-2, -1))
    return (means[1:] - means[:-1]).abs().mean(dim=-1) * 255


@dataclass(frozen=True)
class Flicker:
    """A stylization's steadiness on one clip, 0..255: its mean warping error
    (also as a multiple of the source clip's own) and colour drift (beside the
    source clip's)."""

    clip: str
    warping_error: float
    # None where the source is steady to within STEADY_SOURCE (a ratio to ~0 means nothing).
    relative_warping_error: float | None
    colour_drift: float
    source_colour_drift: float
    per_frame: tuple[float, ...]  # the warping error of each frame pair


def stylize_clip(stylize: Callable[[torch.Tensor], torch.Tensor], clip: Clip) -> torch.Tensor:
    """The clip's frames stylized one at a time (``stylize``: (1, 3, H, W) ->
    (1, 3, H, W), in [0, 1]): (T, 3, H, W)."""
    return torch.cat([stylize(frame[None]).float().clamp(0, 1) for frame in clip.frames])


def flicker_of(stylized: torch.Tensor, clip: Clip) -> Flicker:
    """How steady ``stylized`` (the clip's frames stylized, (T, 3, H, W) in [0, 1]) is.
    Raises ValueError if its shape is not the clip's."""
    errors = warping_error(stylized, clip)
    source = float(warping_error(clip.frames, clip).mean())
    return Flicker(
        clip=clip.name,
        warping_error=float(errors.mean()),
        relative_warping_error=float(errors.mean()) / source if source >= STEADY_SOURCE else None,
        colour_drift=float(colour_drift(stylized).mean()),
        source_colour_drift=float(colour_drift(clip.frames).mean()),
        per_frame=tuple(errors.tolist()),
    )


def measure_flicker(stylize: Callable[[torch.Tensor], torch.Tensor], clip: Clip) -> Flicker:
    """Stylize the clip frame by frame (``stylize_clip``) and measure it."""
    return flicker_of(stylize_clip(stylize, clip), clip)


def _window_grids(
    photo_size: tuple[int, int], size: tuple[int, int], centres: torch.Tensor, zooms: torch.Tensor
) -> torch.Tensor:
    """Affine maps (T, 2, 3) from each frame's normalized coordinates to the
    photo's: a ``size`` window at ``zooms`` x, centred on ``centres`` (T, 2: x, y in photo pixels)."""
    (photo_h, photo_w), (h, w) = photo_size, size
    theta = torch.zeros(len(zooms), 2, 3)
    theta[:, 0, 0] = w / photo_w / zooms
    theta[:, 1, 1] = h / photo_h / zooms
    theta[:, 0, 2] = 2 * centres[:, 0] / photo_w - 1
    theta[:, 1, 2] = 2 * centres[:, 1] / photo_h - 1
    return theta


def _inverse(theta: torch.Tensor) -> torch.Tensor:
    linear, shift = theta[..., :2], theta[..., 2:]
    inverse = torch.linalg.inv(linear)
    return torch.cat([inverse, -inverse @ shift], dim=-1)


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The affine map ``outer(inner(x))``."""
    linear = outer[..., :2] @ inner[..., :2]
    return torch.cat([linear, outer[..., :2] @ inner[..., 2:] + outer[..., 2:]], dim=-1)


def _in_view(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """1 where a (…, H, W, 2) normalized grid lands at least EDGE_MARGIN px inside a frame of ``size``."""
    height, width = size
    inside_x = grid[..., 0].abs() <= 1 - 2 * EDGE_MARGIN / width
    inside_y = grid[..., 1].abs() <= 1 - 2 * EDGE_MARGIN / height
    return (inside_x & inside_y).float()


def moving_window_clip(
    name: str, photo: torch.Tensor, size: tuple[int, int], centres: torch.Tensor, zooms: torch.Tensor
) -> Clip:
    """Frames of ``size`` (H, W) seen through a window moving over ``photo``
    (1, 3, H', W'): frame t centred on ``centres[t]`` (x, y, photo pixels) at
    ``zooms[t]`` x; sub-pixel positions are sampled bilinearly. Raises
    ValueError if a window leaves the photo."""
    count, (height, width) = len(zooms), size
    theta = _window_grids((photo.shape[-2], photo.shape[-1]), size, centres.float(), zooms.float())
    grids = F.affine_grid(theta, [count, 3, height, width], align_corners=False)
    if grids.abs().max() > 1:
        raise ValueError(f"a {width}x{height} window leaves the {photo.shape[-1]}x{photo.shape[-2]} photo")
    frames = F.grid_sample(photo.expand(count, -1, -1, -1).float(), grids, mode="bilinear", align_corners=False)
    # Frame t's pixel -> photo -> frame t-1's normalized coordinates.
    to_previous = _compose(_inverse(theta[:-1]), theta[1:])
    previous = F.affine_grid(to_previous, [count - 1, 3, height, width], align_corners=False)
    return Clip(name, frames.clamp(0, 1), previous, _in_view(previous, size)[:, None])


def pan_and_zoom_clip(photo: torch.Tensor, size: tuple[int, int], frames: int = 24, step: float = 0.75) -> Clip:
    """A slow diagonal pan of ``step`` px per frame with a 0.2% zoom per frame."""
    height, width = photo.shape[-2:]
    t = torch.arange(frames, dtype=torch.float32)
    start = torch.tensor([width / 2 - step * frames / 2, height / 2 - step * frames / 4])
    centres = start + t[:, None] * torch.tensor([step, step / 2])
    return moving_window_clip("pan and zoom", photo, size, centres, 1.002**t)


def hand_held_clip(photo: torch.Tensor, size: tuple[int, int], frames: int = 24, seed: int = 0) -> Clip:
    """A phone held in the hand: a slow pan (0.5 px a frame) under a tremor
    (each frame's offset pulled 20% back toward the path, plus a fresh random
    step of SHAKE px in x and y: about 1.2 px from the path and 0.7 px from one
    frame to the next), with fresh sensor noise in every frame."""
    height, width = photo.shape[-2:]
    generator = torch.Generator().manual_seed(seed)
    steps = torch.randn(frames, 2, generator=generator) * SHAKE
    offsets = torch.zeros(frames, 2)
    for t in range(1, frames):
        offsets[t] = 0.8 * offsets[t - 1] + steps[t]
    path = torch.arange(frames, dtype=torch.float32)[:, None] * torch.tensor([0.5, 0.0])
    centres = torch.tensor([width / 2 - 0.25 * frames, height / 2]) + path + offsets
    moving = moving_window_clip("hand-held", photo, size, centres, torch.ones(frames))
    noise = torch.randn(moving.frames.shape, generator=generator) * SENSOR_NOISE
    return Clip(moving.name, (moving.frames + noise).clamp(0, 1), moving.previous, moving.visible)


def still_clip(name: str, photo: torch.Tensor, size: tuple[int, int], frames: int) -> Clip:
    """The centre ``size`` window of the photo, unmoving, ``frames`` times."""
    height, width = photo.shape[-2:]
    centre = torch.tensor([[width / 2, height / 2]]).expand(frames, 2)
    return moving_window_clip(name, photo, size, centre, torch.ones(frames))


def exposure_ramp_clip(photo: torch.Tensor, size: tuple[int, int], frames: int = 24, stops: float = 1.0) -> Clip:
    """A still shot whose exposure falls by ``stops`` (a factor 2**stops in linear light) over the clip."""
    still = still_clip("exposure ramp", photo, size, frames)
    linear = still.frames.clamp(0, 1) ** 2.2
    gains = 2 ** (-stops * torch.linspace(0, 1, frames))
    frames_out = (linear * gains[:, None, None, None]) ** (1 / 2.2)
    return Clip(still.name, frames_out, still.previous, still.visible)


def noise_clip(photo: torch.Tensor, size: tuple[int, int], frames: int = 24, seed: int = 0) -> Clip:
    """A still shot with fresh Gaussian sensor noise (SENSOR_NOISE) in every frame."""
    still = still_clip("sensor noise", photo, size, frames)
    noise = torch.randn(still.frames.shape, generator=torch.Generator().manual_seed(seed)) * SENSOR_NOISE
    return Clip(still.name, (still.frames + noise).clamp(0, 1), still.previous, still.visible)


def moving_object_clip(photo: torch.Tensor, size: tuple[int, int], frames: int = 24, step: float = 2.0) -> Clip:
    """A disc cut from the photo's corner, moving ``step`` px per frame to the
    right over the still centre window. Pixels the disc covers in frame t-1 but
    not in t (just uncovered) are not visible in t-1."""
    height, width = size
    still = still_clip("moving object", photo, size, frames)
    radius = min(height, width) // 6
    disc_image = photo[..., : 2 * radius, : 2 * radius]
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    x0 = radius + EDGE_MARGIN + torch.arange(frames) * step
    covered = ((xs - x0[:, None, None]) ** 2 + (ys - height / 2) ** 2 <= radius**2).float()[:, None]
    shift = torch.zeros(frames - 1, height, width, 2)
    shift[..., 0] = -2 * step / width * covered[1:, 0]  # disc pixels were step px to the left
    previous = still.previous + shift
    # The disc sampled from its own image at each frame's position (bilinear, sub-pixel positions too).
    disc_theta = torch.zeros(frames, 2, 3)
    disc_theta[:, 0, 0] = width / (2 * radius)
    disc_theta[:, 1, 1] = height / (2 * radius)
    disc_theta[:, 0, 2] = (width / 2 - x0) / radius
    disc_grid = F.affine_grid(disc_theta, [frames, 3, height, width], align_corners=False)
    disc = F.grid_sample(disc_image.expand(frames, -1, -1, -1).float(), disc_grid, align_corners=False)
    frames_out = still.frames * (1 - covered) + disc * covered
    uncovered = covered[:-1] * (1 - covered[1:])
    visible = still.visible * (1 - uncovered)
    return Clip(still.name, frames_out, previous, visible)


def standard_clips(photo: torch.Tensor, size: tuple[int, int] = (192, 256), frames: int = 24) -> list[Clip]:
    """The five clips of the flicker table, from one photo (1, 3, H, W) larger
    than ``size`` by the pan's travel. Raises ValueError for a smaller photo."""
    return [
        pan_and_zoom_clip(photo, size, frames),
        exposure_ramp_clip(photo, size, frames),
        noise_clip(photo, size, frames),
        moving_object_clip(photo, size, frames),
        hand_held_clip(photo, size, frames),
    ]
