from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stylize.report.flicker import (
    colour_drift,
    exposure_ramp_clip,
    hand_held_clip,
    measure_flicker,
    moving_object_clip,
    moving_window_clip,
    noise_clip,
    pan_and_zoom_clip,
    standard_clips,
    warping_error,
)

SIZE = (48, 64)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """Smooth structure at several scales, so a wrong motion shows."""
    torch.manual_seed(0)
    coarse = torch.rand(1, 3, 12, 16)
    return (F.interpolate(coarse, size=(96, 128), mode="bicubic", align_corners=False) * 0.7 + 0.15).clamp(0, 1)


def _integer_pan(photo: torch.Tensor, frames: int = 6) -> torch.Tensor:
    centres = torch.tensor([[64.0 + t, 48.0 + 2 * t] for t in range(frames)])
    return moving_window_clip("pan", photo, SIZE, centres, torch.ones(frames))


def _lattice(images: torch.Tensor) -> torch.Tensor:
    """A stride-4 network: every output pixel shows its place in a 4x4 grid fixed to the frame."""
    return F.interpolate(F.avg_pool2d(images, 4), scale_factor=4.0)


def test_a_pixelwise_network_is_perfectly_steady_on_a_whole_pixel_pan(photo: torch.Tensor) -> None:
    clip = _integer_pan(photo)
    # The frames are the photo's own pixels: the window moved 1 px right and 2 down per frame.
    torch.testing.assert_close(clip.frames[1], photo[0, :, 26 : 26 + 48, 33 : 33 + 64])
    assert warping_error(clip.frames, clip).abs().max() < 1e-4
    assert warping_error(clip.frames.square(), clip).abs().max() < 1e-4
    # Without the motion (the frames compared in place) the same clip is far from steady.
    still = moving_window_clip("still", photo, SIZE, torch.tensor([[64.0, 48.0]]).expand(6, 2), torch.ones(6))
    assert warping_error(clip.frames, still).mean() > 1.0


def test_fresh_noise_per_frame_and_a_frame_fixed_lattice_score_high_on_a_pan(photo: torch.Tensor) -> None:
    clip = pan_and_zoom_clip(photo, SIZE, frames=8)
    source = warping_error(clip.frames, clip).mean()
    noisy = (clip.frames + 0.05 * torch.randn(clip.frames.shape, generator=torch.Generator().manual_seed(1))).clamp(
        0, 1
    )
    assert warping_error(noisy, clip).mean() > 5 * source
    assert warping_error(_lattice(clip.frames), clip).mean() > 3 * source


def test_the_moving_object_is_followed_and_what_it_uncovers_is_left_out(photo: torch.Tensor) -> None:
    clip = moving_object_clip(photo, SIZE, frames=6, step=2.0)
    assert warping_error(clip.frames, clip).abs().max() < 1e-4
    # The disc moves: frames differ where it passes, and ignoring its motion is an error.
    assert (clip.frames[1] - clip.frames[0]).abs().amax() > 0.05
    still = moving_window_clip("still", photo, SIZE, torch.tensor([[64.0, 48.0]]).expand(6, 2), torch.ones(6))
    assert warping_error(clip.frames, still).mean() > 0.3
    assert 0 < clip.visible.mean() < 1
    # The source is exactly steady: a stylization's error has nothing to be read against.
    assert measure_flicker(lambda frame: frame.square(), clip).relative_warping_error is None


def test_instance_normalization_divides_out_an_exposure_ramp(photo: torch.Tensor) -> None:
    clip = exposure_ramp_clip(photo, SIZE, frames=8, stops=1.0)
    assert colour_drift(clip.frames).mean() > 1.0

    def standardized(images: torch.Tensor) -> torch.Tensor:
        mean, std = images.mean(dim=(-2, -1), keepdim=True), images.std(dim=(-2, -1), keepdim=True)
        return 0.5 + 0.15 * (images - mean) / std

    result = measure_flicker(standardized, clip)
    assert result.colour_drift < 0.1 * result.source_colour_drift
    assert result.relative_warping_error < 0.5


def test_measure_flicker_reads_a_stylization_against_the_source(photo: torch.Tensor) -> None:
    clip = noise_clip(photo, SIZE, frames=6)
    steady = measure_flicker(lambda frame: frame, clip)
    assert steady.relative_warping_error == pytest.approx(1.0)
    # The difference of two N(0, s^2) draws has a mean absolute value of 2s/sqrt(pi): s = 3 levels.
    assert steady.warping_error == pytest.approx(2 * 3 / math.pi**0.5, rel=0.05)
    assert len(steady.per_frame) == 5
    smoothed = measure_flicker(lambda frame: F.avg_pool2d(frame, 3, 1, 1), clip)
    assert smoothed.relative_warping_error < 0.5


def test_the_hand_held_clip_shakes_and_its_motion_is_known_up_to_the_noise(photo: torch.Tensor) -> None:
    clip = hand_held_clip(photo, SIZE, frames=12)
    # Fresh noise of s = 3 levels: |n_t - warped n_t-1| averages 2s/sqrt(pi) = 3.4 levels, less
    # where bilinear warping averaged the previous frame's noise; the photo itself is followed.
    assert 2.4 < warping_error(clip.frames, clip).mean() < 3.5
    # The camera moves, and not in a straight line: taken as still, the same frames are far off.
    still = moving_window_clip("still", photo, SIZE, torch.tensor([[64.0, 48.0]]).expand(12, 2), torch.ones(12))
    assert warping_error(clip.frames, still).mean() > 4.5
    identity = F.affine_grid(torch.eye(2, 3)[None], [1, 3, *SIZE], align_corners=False)
    px = torch.tensor([SIZE[1] / 2, SIZE[0] / 2])
    steps = (clip.previous - identity).mean(dim=(1, 2)) * px  # each frame's move from the last, x and y px
    assert steps[:, 0].mean() == pytest.approx(0.5, abs=0.4)  # the pan
    assert (steps.std(dim=0) > 0.3).all()  # the tremor: the move changes from frame to frame


def test_standard_clips_and_their_refusals(photo: torch.Tensor) -> None:
    clips = standard_clips(photo, SIZE, frames=5)
    names = ["pan and zoom", "exposure ramp", "sensor noise", "moving object", "hand-held"]
    assert [clip.name for clip in clips] == names
    for clip in clips:
        assert clip.frames.shape == (5, 3, *SIZE) and clip.previous.shape == (4, *SIZE, 2)
        assert clip.visible.shape == (4, 1, *SIZE) and 0.3 < clip.visible.mean() <= 1  # an 8 px margin on 64x48
    with pytest.raises(ValueError, match="window leaves the 128x96 photo"):
        standard_clips(photo, (90, 120))
    with pytest.raises(ValueError, match=r"\(4, 3, 48, 64\) frames for a clip of \(5, 3, 48, 64\)"):
        warping_error(clips[0].frames[:4], clips[0])
