"""Stylizing videos: decoded frames go through the stylizer in batches; sound is copied.

Reading and writing use PyAV (the ``video`` extra): FFmpeg's own libraries in
process, with an FFmpeg (x264 included) inside its wheels. It keeps each frame's
timestamp and copies audio packets as they are, without re-encoding, which
imageio-ffmpeg's pipe of raw frames to an ffmpeg program cannot do in one pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylize.errors import InvalidSetting, StylizeError
from stylize.fileio import atomic_path, format_for_extension, refuse_overwriting
from stylize.images import from_uint8_nhwc, resize, scaled_size, to_uint8
from stylize.inference.controls import check_working_size
from stylize.inference.stylizer import ImageStylizer

VIDEO_EXTRA = "pip install 'stylize[video]'"
# Encoders by output extension; x264 and VP9 want even sides in 4:2:0.
ENCODERS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
PIXEL_FORMAT = "yuv420p"


@dataclass(frozen=True)
class VideoSettings:
    batch_size: int = 8  # frames per network call: fills a GPU, amortizes a CPU's overheads
    quality: int = 18  # the encoder's CRF: 0 best .. 51 worst; 18 looks like the source
    max_size: int | None = None  # shrink frames so the long side is at most this, px
    audio: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidSetting("batch_size", "must be at least 1")
        if not 0 <= self.quality <= 51:
            raise InvalidSetting("quality", f"must be between 0 and 51, not {self.quality}")
        if self.max_size is not None and self.max_size < 2:
            raise InvalidSetting("max_size", "must be at least 2")


@dataclass(frozen=True)
class VideoResult:
    path: Path
    frames: int
    rate: Fraction
    width: int
    height: int
    audio_streams: int
    seconds: float


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise StylizeError(f"stylize video needs PyAV: {VIDEO_EXTRA}") from None
    return av


def encoder_for(path: Path) -> str:
    return format_for_extension(path, ENCODERS, "video")


def _open_input(path: Path) -> Any:
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise StylizeError(f"no such file: {path}" if not path.exists() else f"{path} is a folder, not a video")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, ValueError) as error:
        raise StylizeError(f"cannot read {path}: not a video ({error})") from None
    if not container.streams.video:
        container.close()
        raise StylizeError(f"{path} has no video stream")
    return container


def count_frames(path: Path) -> int | None:
    """The number of frames the header gives, or else an estimate from the
    duration (Matroska has no count); None if neither says."""
    with _open_input(path) as container:
        return _frame_count(container, container.streams.video[0])


def _frame_count(container: Any, stream: Any) -> int | None:
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        seconds = stream.duration * stream.time_base
    elif container.duration:
        seconds = Fraction(container.duration, 1_000_000)  # in AV_TIME_BASE units
    else:
        return None
    return max(1, round(seconds * _rate(stream)))


def _rate(stream: Any) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(30)


def frame_sizes(width: int, height: int, max_size: int | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(height, width) the frames are shrunk to for ``max_size``, and the even
    (height, width) cropped from that, which 4:2:0 encoding needs."""
    if max_size is not None and max(width, height) > max_size:
        height, width = scaled_size(height, width, max_size / max(width, height))
    return (height, width), (max(2, height - height % 2), max(2, width - width % 2))


def _frames_to_tensor(frames: list[Any]) -> torch.Tensor:
    return from_uint8_nhwc(np.stack([frame.to_ndarray(format="rgb24") for frame in frames]))


def _tensor_to_frames(images: torch.Tensor, sources: list[Any]) -> Iterator[Any]:
    """Video frames of ``images``, each with its source frame's timestamp."""
    av = _av()
    pixels = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    for picture, source in zip(pixels, sources, strict=True):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        frame.pts, frame.time_base = source.pts, source.time_base
        yield frame


def _copy_stream(writer: Any, stream: Any, destination: Path) -> Any:
    try:
        return writer.add_stream_from_template(stream)
    except ValueError as error:  # the container cannot hold that codec
        raise InvalidSetting(
            "audio", f"cannot be copied into {destination} ({error}): turn it off, or write .mkv"
        ) from None


class _StylizedStream:
    """The output video stream: batches of decoded frames in, stylized frames encoded."""

    def __init__(self, writer: Any, video: Any, encoder: str, stylizer: ImageStylizer, settings: VideoSettings):
        self.writer, self.stylizer, self.batch_size = writer, stylizer, settings.batch_size
        width, height = video.codec_context.width, video.codec_context.height
        self.shrunk, (self.height, self.width) = frame_sizes(width, height, settings.max_size)
        check_working_size(self.height, self.width, stylizer.controls)
        self.output = writer.add_stream(encoder, rate=_rate(video))
        self.output.width, self.output.height, self.output.pix_fmt = self.width, self.height, PIXEL_FORMAT
        self.output.time_base = video.time_base
        self.output.options = {"crf": str(settings.quality), **({"b": "0"} if encoder == "libvpx-vp9" else {})}
        self.done = 0

    def write(self, frames: list[Any]) -> None:
        if self.done == 0 and frames[0].rotation:  # phone videos: shown turned, stored level
            self.output.set_display_rotation(frames[0].rotation)
        images = resize(_frames_to_tensor(frames), self.shrunk)[..., : self.height, : self.width]
        # A short last batch is filled up with copies of its last frame: one
        # batch shape, so a compiled network is not compiled a second time.
        missing = self.batch_size - len(frames) if self.done else 0
        filled = torch.cat([images, images[-1:].expand(missing, -1, -1, -1)]) if missing else images
        stylized = self.stylizer(filled)[: len(frames)]
        for frame in _tensor_to_frames(stylized, frames):
            self.writer.mux(self.output.encode(frame))
        self.done += len(frames)

    def finish(self) -> None:
        self.writer.mux(self.output.encode(None))  # what the encoder still holds


def _frame_batches(
    reader: Any, video: Any, sounds: list[Any], copies: dict[int, Any], writer: Any, size: int
) -> Iterator[list[Any]]:
    """Decoded video frames in batches of ``size``; sound packets go straight to
    their copies in ``writer`` as they come."""
    pending: list[Any] = []
    for packet in reader.demux(video, *sounds):
        if packet.stream.index in copies:
            if packet.dts is not None:  # demuxers end each stream with an empty packet
                packet.stream = copies[packet.stream.index]
                writer.mux(packet)
            continue
        for frame in packet.decode():
            pending.append(frame)
            if len(pending) == size:
                yield pending
                pending = []
    if pending:
        yield pending


def stylize_video(
    source: Path,
    destination: Path,
    stylizer: ImageStylizer,
    settings: VideoSettings = VideoSettings(),
    on_progress: Callable[[int, int | None], None] | None = None,
) -> VideoResult:
    """Write ``source`` stylized to ``destination`` (atomically): same frame
    timestamps and rate, sound copied unless ``settings.audio`` is off.
    ``on_progress(frames done, frames in all or None)`` hears after each batch."""
    av = _av()
    encoder = encoder_for(destination)
    refuse_overwriting(source, destination)
    started = time.perf_counter()
    with _open_input(source) as reader, atomic_path(destination) as temporary:
        video = reader.streams.video[0]
        video.thread_type = "AUTO"
        sounds = list(reader.streams.audio) if settings.audio else []
        total = _frame_count(reader, video)
        try:
            with av.open(str(temporary), "w") as writer:
                stream = _StylizedStream(writer, video, encoder, stylizer, settings)
                copies = {sound.index: _copy_stream(writer, sound, destination) for sound in sounds}
                for frames in _frame_batches(reader, video, sounds, copies, writer, settings.batch_size):
                    stream.write(frames)
                    if on_progress is not None:
                        on_progress(stream.done, total)
                stream.finish()
        except av.FFmpegError as error:
            hint = "; leaving the sound out may help" if sounds else ""
            raise StylizeError(f"cannot stylize {source} into {destination}: {error}{hint}") from None
    if on_progress is not None and stream.done != total:
        on_progress(stream.done, stream.done)  # the count was an estimate
    return VideoResult(
        path=Path(destination),
        frames=stream.done,
        rate=_rate(video),
        width=stream.width,
        height=stream.height,
        audio_streams=len(sounds),
        seconds=time.perf_counter() - started,
    )
