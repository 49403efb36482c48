"""Steadier video: each stylized frame takes on the previous output's texture, carried along the footage's motion.

A frame-by-frame network repaints every frame's texture on its own, so strokes
boil on a still camera and crawl on a pan. Here the optical flow between
consecutive source frames (DIS: Kroeger et al., "Fast Optical Flow using Dense
Inverse Search", ECCV 2016, as OpenCV ships it) carries the previous output
onto the new frame, and its fine texture is blended in where the flow explains
the new source frame; where it does not (occlusions, cuts, new content), the
frame's own stylization stays. This is the blending that learned
temporal-consistency methods start from (Lai et al., "Learning Blind Video
Temporal Consistency", ECCV 2018), without a network: OpenCV's flow runs
anywhere, in milliseconds. Only detail finer than TEXTURE_SCALE is carried:
colour, exposure and shading follow each new frame at once, so a fade or an
exposure change does not lag.

The output is recursive (the blended frame is what the next one is blended
with), so a still shot's texture settles instead of boiling; a frame k frames
back weighs at most carry**k (0.8: 33% after five frames). Where the footage
moves, half as much is carried: texture carried along motion is resampled at
every frame, which softens it, and the network paints a moved scene's texture
anew, so blending in more of the old one costs strength (on the flicker
benchmark's slow pan, a carry of 0.5 raised the style loss 11%, 0.4 raised it
8%; on its noisy still shot 0.8 raised it 8%: see README, "Steadier video").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stylize.errors import InvalidSetting, StylizeError

OPENCV_EXTRA = "pip install 'stylize[video]'"
# The source mismatch: the absolute difference of 3x3 box means (sensor noise
# averages out, a misplaced edge or another scene's texture does not), averaged
# over 5x5 windows.
NOISE_WINDOW, MISMATCH_WINDOW = 3, 5
# Only the texture is carried: detail finer than this (px). Colour, exposure and
# shading, coarser, follow the new frame at once.
TEXTURE_SCALE = 8
# Where the footage moves by this much (px a frame) or more, the carry falls
# toward MOVING_SHARE of itself (a Gaussian of the flow's length).
MOTION_SCALE, MOVING_SHARE = 0.5, 0.5
# OpenCV's DIS crashes the process on some frames under 32 px a side (24x96,
# 12x80); smaller frames are padded to this for the flow.
FLOW_MIN_SIDE = 32


@dataclass(frozen=True)
class StabilizerSettings:
    """``carry``: the previous output's share of the fine texture where the flow
    explains the new frame and the footage is still (0: frame by frame; where it
    moves, MOVING_SHARE of that). ``tolerance``: the source mismatch
    (0..1, see ``source_mismatch``) at which that share has fallen to 1/e.

    Raises InvalidSetting for a ``carry`` outside [0, 1) or a ``tolerance`` not above 0.
    """

    carry: float = 0.8
    tolerance: float = 0.04

    def __post_init__(self) -> None:
        if not 0 <= self.carry < 1:
            raise InvalidSetting("carry", f"must be at least 0 and below 1, not {self.carry:g}")
        if not self.tolerance > 0:
            raise InvalidSetting("tolerance", "must be positive")


def _cv2() -> Any:
    try:
        return importlib.import_module("cv2")
    except ImportError:
        raise StylizeError(
            f"stabilizing video needs OpenCV's optical flow: {OPENCV_EXTRA} "
            "(or stabilize off: --no-stabilize, VideoSettings(stabilizer=None))"
        ) from None


def _grey(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W) uint8 luma, what DIS estimates flow on."""
    luma = 0.299 * frame[0] + 0.587 * frame[1] + 0.114 * frame[2]
    return (luma.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """A (H, W, 2) flow in pixels (where each pixel was in the previous frame,
    x then y) as a (1, H, W, 2) ``grid_sample`` grid (align_corners=False)."""
    height, width = flow.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    x = (xs + flow[..., 0]) / width * 2 - 1
    y = (ys + flow[..., 1]) / height * 2 - 1
    return torch.stack([x, y], dim=-1)[None]


def _box(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.avg_pool2d(images[None], size, 1, size // 2, count_include_pad=False)[0]


def source_mismatch(warped: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """How far the warped previous source frame is from the new one, (3, H, W)
    each in [0, 1] -> (1, H, W) in [0, 1]: 0 where the flow explains the new frame."""
    difference = _box(warped - source, NOISE_WINDOW).abs().mean(dim=0, keepdim=True)
    return _box(difference, MISMATCH_WINDOW)


def high_pass(images: torch.Tensor, scale: int) -> torch.Tensor:
    """``images`` (C, H, W) less their low-pass: means over ``scale``-px cells,
    bilinearly interpolated (a box-and-tent blur at the cost of one pass)."""
    height, width = images.shape[-2:]
    cells = F.adaptive_avg_pool2d(images[None], (max(1, height // scale), max(1, width // scale)))
    return images - F.interpolate(cells, size=(height, width), mode="bilinear", align_corners=False)[0]


def carried_share(
    settings: StabilizerSettings, flow: torch.Tensor, mismatch: torch.Tensor, in_view: torch.Tensor
) -> torch.Tensor:
    """(1, H, W): the previous output's share of the texture at each pixel, from
    the flow (H, W, 2, px), the source mismatch ((1, H, W), see ``source_mismatch``)
    and where the carried frame is in view ((1, H, W) bool): the carry where the footage
    is still, MOVING_SHARE of it where it moves, falling to 0 where the carried
    source frame does not match the new one."""
    still = torch.exp(-((flow.norm(dim=-1) / MOTION_SCALE) ** 2))
    reliable = torch.exp(-((mismatch / settings.tolerance) ** 2)) * in_view
    return settings.carry * (MOVING_SHARE + (1 - MOVING_SHARE) * still) * reliable


class FlowStabilizer:
    """Call it with consecutive frames, in order, batch after batch: the source
    frames and their stylizations (both (N, 3, H, W) in [0, 1], the same shape);
    it returns the stabilized stylizations, (N, 3, H, W) in [0, 1]. A change of
    frame size starts afresh; frames of any size work (small ones are padded for
    the flow).

    Raises StylizeError if OpenCV is not installed; ValueError if ``sources``
    and ``stylized`` differ in shape.
    """

    def __init__(self, settings: StabilizerSettings = StabilizerSettings()):
        cv2 = _cv2()
        self.settings = settings
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self.previous: tuple[np.ndarray, torch.Tensor, torch.Tensor] | None = None  # grey, source, output

    def __call__(self, sources: torch.Tensor, stylized: torch.Tensor) -> torch.Tensor:
        if sources.shape != stylized.shape:
            raise ValueError(f"{tuple(stylized.shape)} stylized frames for {tuple(sources.shape)} source frames")
        return torch.stack([self._next(source, output) for source, output in zip(sources, stylized, strict=True)])

    def _next(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        grey = _grey(source)
        previous = self.previous
        if previous is not None and previous[0].shape == grey.shape and self.settings.carry > 0:
            output = self._blend(grey, source, output, previous)
        self.previous = (grey, source, output)
        return output

    def _blend(
        self,
        grey: np.ndarray,
        source: torch.Tensor,
        output: torch.Tensor,
        previous: tuple[np.ndarray, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """The new stylization with the previous output's texture blended in where the flow holds."""
        previous_grey, previous_source, previous_output = previous
        flow = self._flow(grey, previous_grey)
        grid = sampling_grid(flow).to(output.device)
        both = torch.cat([previous_source, previous_output]).float()[None].to(output.device)
        warped = F.grid_sample(both, grid, mode="bicubic", padding_mode="border", align_corners=False)[0]
        warped_source, warped_output = warped[:3], warped[3:]
        mismatch = source_mismatch(warped_source, source.float().to(output.device))
        in_view = (grid.abs() <= 1).all(dim=-1)
        share = carried_share(self.settings, flow.to(output.device), mismatch, in_view)
        change = warped_output - output.float()
        steadied = output.float() + share * high_pass(change, TEXTURE_SCALE)
        return steadied.clamp(0, 1).to(output.dtype)

    def _flow(self, grey: np.ndarray, previous_grey: np.ndarray) -> torch.Tensor:
        """(H, W, 2): for each pixel of ``grey``, how far away (x, y, px) it was in ``previous_grey``."""
        height, width = grey.shape
        padding = ((0, max(0, FLOW_MIN_SIDE - height)), (0, max(0, FLOW_MIN_SIDE - width)))
        padded = [np.pad(image, padding, mode="edge") for image in (grey, previous_grey)]
        return torch.from_numpy(self.flow.calc(*padded, None)[:height, :width].copy())
