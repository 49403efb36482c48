"""Flicker as a picture: consecutive frames of a slow pan made from a photo,
frame by frame and through ``stylize video``'s stabilizer, each above its
change from the previous frame moved by the true motion (brightened x16: what
boils or crawls; black is steady). With several models (the norm zoo, say),
each model's frames and changes, frame by frame, one pair of rows a model.

    python -m benchmarks.video_frames --photo PHOTO --out assets/video-steadied.png [--model NAME]
    python -m benchmarks.video_frames --photo PHOTO --out assets/video-norms.png --model A --model B ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stylize.images import load_image, save_image
from stylize.inference.stylizer import InferenceSettings, Stylizer
from stylize.inference.temporal import FlowStabilizer
from stylize.model.files import DEFAULT_STYLE, load_model
from stylize.report.flicker import Clip, stylize_clip, warp_previous

from .common import pan_clip

CPU = torch.device("cpu")
SHOWN = slice(9, 12)  # three frames in mid-clip, once the stabilizer has settled
CHANGE_GAIN = 16


def frames_sheet(stylizer: Stylizer, photo: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, 4H, 3W): rows frame by frame, its changes, stabilized, its changes; columns the shown frames."""
    clip = pan_clip(photo, size, frames=SHOWN.stop)
    frame_by_frame = stylize_clip(stylizer, clip)
    stabilized = FlowStabilizer()(clip.frames, frame_by_frame)
    return torch.cat([*_rows(frame_by_frame, clip), *_rows(stabilized, clip)], dim=-2)


def models_sheet(stylizers: list[Stylizer], photo: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, 2HM, 3W) for M models: each model's frames (frame by frame) above their changes."""
    clip = pan_clip(photo, size, frames=SHOWN.stop)
    return torch.cat([row for stylizer in stylizers for row in _rows(stylize_clip(stylizer, clip), clip)], dim=-2)


def _rows(frames: torch.Tensor, clip: Clip) -> list[torch.Tensor]:
    """The shown frames side by side, and under them each one's change from the previous frame."""
    changes = ((frames[1:] - warp_previous(frames, clip)).abs() * CHANGE_GAIN * clip.visible).clamp(0, 1)
    return [
        torch.cat(list(frames[SHOWN]), dim=-1),
        torch.cat(list(changes[SHOWN.start - 1 : SHOWN.stop - 1]), dim=-1),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, required=True, help="a photo the model never saw")
    parser.add_argument("--model", action="append", help=f"model name or file (default {DEFAULT_STYLE}); repeatable")
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    settings = InferenceSettings(precision="fp32", compile=False)
    stylizers = [Stylizer(load_model(name, CPU), CPU, settings) for name in args.model or [DEFAULT_STYLE]]
    photo, size = load_image(args.photo).rgb, tuple(args.size)
    sheet = frames_sheet(stylizers[0], photo, size) if len(stylizers) == 1 else models_sheet(stylizers, photo, size)
    save_image(args.out, sheet[None])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
