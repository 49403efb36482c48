from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from stylize.errors import InvalidSetting, StylizeError
from stylize.inference.temporal import (
    MOVING_SHARE,
    FlowStabilizer,
    StabilizerSettings,
    carried_share,
    high_pass,
)
from stylize.report.flicker import noise_clip, pan_and_zoom_clip, warping_error
from tests.helpers import photo_tensor

SIZE = (96, 128)
FRAMES = 10


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """Structure at every scale, as optical flow needs: a smooth field and a finer one."""
    torch.manual_seed(0)
    fine = F.interpolate(torch.rand(1, 3, 40, 52), size=(160, 208), mode="bicubic", align_corners=False)
    return (photo_tensor(160, 208, seed=1) * 0.6 + fine * 0.4).clamp(0, 1)


def boiling(frames: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A 'stylization' that paints fresh fine texture on every frame, as a frame-by-frame network does."""
    texture = torch.randn(frames.shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    return (frames + texture).clamp(0, 1)


def test_a_boiling_texture_settles_along_the_flow_and_the_painted_one_stays(photo: torch.Tensor) -> None:
    """A stylization = strokes that belong to the scene + what boils from frame to frame."""
    strokes = torch.randn(1, 3, 80, 104, generator=torch.Generator().manual_seed(3)) * 0.15
    strokes = F.interpolate(strokes, size=photo.shape[-2:], mode="bicubic", align_corners=False)
    for make in (pan_and_zoom_clip, noise_clip):
        clip, painted = make(photo, SIZE, FRAMES), make((photo + strokes).clamp(0, 1), SIZE, FRAMES).frames
        frame_by_frame = boiling(painted)
        stabilized = FlowStabilizer()(clip.frames, frame_by_frame)
        before = float(warping_error(frame_by_frame, clip).mean())
        assert float(warping_error(stabilized, clip).mean()) < 0.75 * before, clip.name
        # Closer to the strokes than the boiling frames, and the strokes are not blurred away.
        assert (stabilized - painted)[1:].abs().mean() < 0.8 * (frame_by_frame - painted)[1:].abs().mean()
        assert (stabilized - painted)[1:].abs().mean() < 0.5 * (clip.frames - painted)[1:].abs().mean()


def test_the_footage_itself_passes_through_unchanged(photo: torch.Tensor) -> None:
    """A strength-0 stylization (the source) must come out as the source, exposure changes included."""
    clip = pan_and_zoom_clip(photo, SIZE, FRAMES)
    frames = clip.frames * torch.linspace(1, 0.7, FRAMES)[:, None, None, None]
    stabilized = FlowStabilizer()(frames, frames)
    assert (stabilized - frames).abs().mean() * 255 < 1


def test_a_scene_cut_and_a_new_frame_size_start_afresh(photo: torch.Tensor) -> None:
    first = pan_and_zoom_clip(photo, SIZE, 3).frames
    other = photo_tensor(*SIZE, seed=7)
    stabilizer = FlowStabilizer()
    stabilizer(first, boiling(first))
    cut = boiling(other, seed=1)
    # Nothing of the last shot's texture lands on the new one.
    assert (stabilizer(other, cut) - cut).abs().mean() * 255 < 0.5
    smaller = photo_tensor(48, 64, seed=2)
    assert torch.equal(stabilizer(smaller, boiling(smaller)), boiling(smaller))


def test_batches_do_not_matter_and_carry_0_is_frame_by_frame(photo: torch.Tensor) -> None:
    clip = pan_and_zoom_clip(photo, SIZE, 6)
    frame_by_frame = boiling(clip.frames)
    whole = FlowStabilizer()(clip.frames, frame_by_frame)
    split = FlowStabilizer()
    in_batches = torch.cat([split(clip.frames[i : i + 4], frame_by_frame[i : i + 4]) for i in (0, 4)])
    assert torch.equal(whole, in_batches)
    still = FlowStabilizer(StabilizerSettings(carry=0))(clip.frames, frame_by_frame)
    assert torch.equal(still, frame_by_frame)


@pytest.mark.parametrize("size", [(24, 96), (12, 80), (8, 8)])
def test_frames_too_small_for_opencvs_flow_are_padded_for_it(size: tuple[int, int]) -> None:
    """DIS crashes the process on these sizes (a segfault, not an exception)."""
    frames = photo_tensor(*size, seed=4).expand(3, -1, -1, -1)
    stabilized = FlowStabilizer()(frames, boiling(frames))
    assert stabilized.shape == frames.shape and (stabilized - boiling(frames)).abs().mean() < 0.05


def test_the_output_stays_in_range_and_mismatched_shapes_are_refused(photo: torch.Tensor) -> None:
    clip = pan_and_zoom_clip(photo, SIZE, 4)
    saturated = (clip.frames - 0.5).sign().add(1).div(2)  # all 0 or 1: carried texture would overshoot
    stabilized = FlowStabilizer()(clip.frames, saturated)
    assert stabilized.min() >= 0 and stabilized.max() <= 1
    with pytest.raises(ValueError, match="stylized frames for"):
        FlowStabilizer()(clip.frames, saturated[:2])


def test_the_carry_is_whole_on_still_footage_and_falls_where_it_moves_or_the_flow_fails() -> None:
    settings = StabilizerSettings(carry=0.8)
    flow = torch.zeros(4, 6, 2)
    flow[:, 3:, 0] = 2.0  # the right half moves 2 px a frame
    mismatch, in_view = torch.zeros(1, 4, 6), torch.ones(1, 4, 6, dtype=torch.bool)
    mismatch[:, 0, :], in_view[:, 1, :] = 1.0, False  # the top row mismatched, the next one out of view
    share = carried_share(settings, flow, mismatch, in_view)[0]
    assert share.shape == (4, 6)
    torch.testing.assert_close(share[2:, :3], torch.full((2, 3), 0.8))
    torch.testing.assert_close(share[2:, 3:], torch.full((2, 3), 0.8 * MOVING_SHARE), atol=1e-6, rtol=0)
    assert share[:2].abs().max() < 1e-6


def test_high_pass_keeps_fine_detail_and_drops_colour() -> None:
    flat = torch.full((3, 32, 48), 0.4)
    assert high_pass(flat, 8).abs().max() < 1e-6
    checker = (torch.arange(48)[None, :] + torch.arange(32)[:, None]) % 2
    fine = checker.float().expand(3, -1, -1)
    assert torch.allclose(high_pass(fine + 0.3, 8), fine - 0.5, atol=1e-5)
    assert torch.allclose(high_pass(fine[:, :3, :5], 8), fine[:, :3, :5] - fine[:, :3, :5].mean(), atol=1e-6)


@pytest.mark.parametrize(("settings", "message"), [({"carry": 1.0}, "carry"), ({"tolerance": 0.0}, "tolerance")])
def test_settings_out_of_range_are_refused(settings: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        StabilizerSettings(**settings)


def test_without_opencv_one_line_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(StylizeError, match=r"pip install 'stylize\[video\]'.*--no-stabilize"):
        FlowStabilizer()
