"""Stylizing videos: decoded frames go through the stylizer in batches, then the
flow stabilizer (``temporal``) unless it is off; sound is copied.

Reading and writing use PyAV (the ``video`` extra): FFmpeg's own libraries in
process, with an FFmpeg (x264 included) inside its wheels. It keeps each frame's
timestamp and copies audio packets as they are, without re-encoding, which
imageio-ffmpeg's pipe of raw frames to an ffmpeg program cannot do in one pass.
"""

from __future__ import annotations

import io
import itertools
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
from stylize.images import fit_into, from_uint8_nhwc, resize, scaled_size, to_uint8
from stylize.inference.controls import check_working_size
from stylize.inference.stylizer import ImageStylizer
from stylize.inference.temporal import FlowStabilizer, StabilizerSettings

VIDEO_EXTRA = "pip install 'stylize[video]'"
# Encoders by output extension; x264 and VP9 want even sides in 4:2:0.
ENCODERS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
PIXEL_FORMAT = "yuv420p"


@dataclass(frozen=True)
class VideoSettings:
    """How ``stylize_video`` batches, sizes and encodes the frames.

    Raises InvalidSetting for a ``batch_size`` under 1, a ``quality`` outside
    0..51 or a ``max_size`` under 2 pixels.
    """

    batch_size: int = 8  # frames per network call: fills a GPU, amortizes a CPU's overheads
    quality: int = 18  # the encoder's CRF: 0 best .. 51 worst; 18 looks like the source
    max_size: int | None = None  # shrink frames so the long side is at most this, px
    audio: bool = True
    # None: frame by frame, each frame's stylization as it is.
    stabilizer: StabilizerSettings | None = StabilizerSettings()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidSetting("batch_size", "must be at least 1")
        if not 0 <= self.quality <= 51:
            raise InvalidSetting("quality", f"must be between 0 and 51, not {self.quality}")
        if self.max_size is not None and self.max_size < 2:
            raise InvalidSetting("max_size", "must be at least 2")


@dataclass(frozen=True)
class VideoResult:
    """What ``stylize_video`` wrote: the file, its frame count and rate (frames
    per second), picture size in pixels, sound streams and wall-clock seconds."""

    path: Path
    frames: int
    rate: Fraction
    width: int
    height: int
    audio: tuple[str, ...]  # each sound stream: "aac copied", "pcm_s16le re-encoded as aac"
    seconds: float
    # Frames the source's header counts but that could not be decoded (a truncated file).
    missing_frames: int = 0
    # Frames of another picture size than the first, fitted and letterboxed.
    letterboxed_frames: int = 0


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


def _first_frame_size(path: Path) -> tuple[int, int]:
    """(height, width) of the first frame: the stream's header may give another
    size where the picture size changes midway (a header read further on)."""
    with _open_input(path) as container:
        for frame in container.decode(video=0):
            return frame.height, frame.width
    raise StylizeError(f"{path} has no video frame that can be decoded")


def frame_sizes(width: int, height: int, max_size: int | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(height, width) the frames are shrunk to for ``max_size``, and the even
    (height, width) cropped from that, which 4:2:0 encoding needs."""
    if max_size is not None and max(width, height) > max_size:
        height, width = scaled_size(height, width, max_size / max(width, height))
    return (height, width), (max(2, height - height % 2), max(2, width - width % 2))


def _frames_to_tensor(frames: list[Any]) -> torch.Tensor:
    return from_uint8_nhwc(np.stack([frame.to_ndarray(format="rgb24") for frame in frames]))


def _tensor_to_frames(images: torch.Tensor, timestamps: list[int], time_base: Fraction) -> Iterator[Any]:
    av = _av()
    pixels = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    for picture, pts in zip(pixels, timestamps, strict=True):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        yield frame


class _Timestamps:
    """Each source frame's own timestamp, in the source's time base, so that
    variable-rate video keeps its timing. A frame without one comes one
    nominal frame after the last; where the timestamps jump back (files joined
    end to end), everything after the jump is shifted to follow on, spacing
    kept: muxers refuse timestamps that do not increase."""

    def __init__(self, video: Any):
        self.time_base = Fraction(video.time_base)
        self.step = max(1, round(1 / (_rate(video) * self.time_base)))
        self.last: int | None = None
        self.shift = 0

    def __call__(self, frame: Any) -> int:
        if self.last is None:
            pts = frame.pts if frame.pts is not None else 0
        elif frame.pts is None:
            pts = self.last + self.step
        else:
            pts = frame.pts + self.shift
            if pts <= self.last:
                self.shift += self.last + self.step - pts
                pts = self.last + self.step
        self.last = pts
        return pts


def letterbox(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre ``images`` on a black ``height`` x ``width`` canvas (they fit inside)."""
    top, left = (height - images.shape[-2]) // 2, (width - images.shape[-1]) // 2
    sides = (left, width - images.shape[-1] - left, top, height - images.shape[-2] - top)
    return torch.nn.functional.pad(images, sides) if any(sides) else images


# Sound the output container cannot hold as it is gets encoded again in this
# codec (by output extension; AAC elsewhere), in a channel layout the encoder
# takes for the source's number of channels (over 8: mixed down to 7.1).
REENCODED_AUDIO = {".webm": "libopus"}
_LAYOUTS = {
    "aac": ("mono", "stereo", "3.0", "4.0", "5.0", "5.1", "6.1", "7.1"),
    "libopus": ("mono", "stereo", "3.0", "quad", "5.0", "5.1", "6.1", "7.1"),
}
# Opus takes only a few sample rates; 48 kHz is its own.
_OPUS_RATE = 48_000


def _can_copy(source: Path, index: int, container_format: str) -> bool:
    """Whether a ``container_format`` file takes stream ``index`` of ``source``
    as it is: its first packets are written to a file in memory, trailer
    included (where MP4 refuses PCM), which is the only sure test."""
    av = _av()
    with av.open(str(source)) as reader:
        sound = reader.streams[index]
        try:
            with av.open(io.BytesIO(), "w", format=container_format) as trial:
                copy = trial.add_stream_from_template(sound)
                packets = (packet for packet in reader.demux(sound) if packet.dts is not None)
                for packet in itertools.islice(packets, 3):
                    packet.stream = copy
                    trial.mux(packet)
        except (av.FFmpegError, ValueError):
            return False
    return True


class SoundTrack:
    """One sound stream of the source in the output: its packets copied as they
    are or, where the output container cannot hold its codec (PCM in MP4, AAC
    in WebM), decoded and encoded again (AAC; Opus in WebM)."""

    def __init__(self, writer: Any, source: Path, sound: Any, destination: Path):
        self.writer, self.source = writer, sound
        self.reencoded_from: str | None = None
        if _can_copy(source, sound.index, writer.format.name):
            self.output = writer.add_stream_from_template(sound)
            return
        codec = REENCODED_AUDIO.get(Path(destination).suffix.lower(), "aac")
        rate = _OPUS_RATE if codec == "libopus" else sound.codec_context.sample_rate
        layouts = _LAYOUTS[codec]
        layout = layouts[min(sound.codec_context.layout.nb_channels, len(layouts)) - 1]
        self.output = writer.add_stream(codec, rate=rate, layout=layout)
        self.reencoded_from = sound.codec_context.name

    def write(self, packet: Any) -> None:
        if self.reencoded_from is not None:
            for frame in packet.decode():  # the stream's last, empty packet flushes the decoder
                self.writer.mux(self.output.encode(frame))
        elif packet.dts is not None:  # demuxers end each stream with an empty packet
            packet.stream = self.output
            self.writer.mux(packet)

    def finish(self) -> None:
        if self.reencoded_from is not None:
            self.writer.mux(self.output.encode(None))

    def describe(self) -> str:
        name = self.output.codec_context.name
        return f"{self.reencoded_from} re-encoded as {name}" if self.reencoded_from else f"{name} copied"


class _StylizedStream:
    """The output video stream: batches of decoded frames in, stylized frames encoded.

    Its size is the first frame's (after ``max_size``). A stream whose picture
    size changes midway (broadcast recordings do) has its other frames
    stylized at their own aspect, scaled to fit and letterboxed in black.
    """

    def __init__(
        self,
        writer: Any,
        video: Any,
        first_size: tuple[int, int],
        encoder: str,
        stylizer: ImageStylizer,
        settings: VideoSettings,
        stabilizer: FlowStabilizer | None,
    ):
        self.writer, self.stylizer, self.batch_size = writer, stylizer, settings.batch_size
        self.stabilizer = stabilizer
        self.source_size = height, width = first_size
        self.shrunk, (self.height, self.width) = frame_sizes(width, height, settings.max_size)
        check_working_size(self.height, self.width, stylizer.controls)
        self.output = writer.add_stream(encoder, rate=_rate(video))
        self.output.width, self.output.height, self.output.pix_fmt = self.width, self.height, PIXEL_FORMAT
        # The encoder counts in the source's time base too: in 1/rate it would
        # round variable-rate timestamps onto the average rate's grid.
        self.output.time_base = self.output.codec_context.time_base = video.time_base
        self.output.options = {"crf": str(settings.quality), **({"b": "0"} if encoder == "libvpx-vp9" else {})}
        self.timestamps = _Timestamps(video)
        self.done = self.letterboxed = 0

    def write(self, frames: list[Any]) -> None:
        """Stylize and encode ``frames``, all of one size."""
        if self.done == 0 and frames[0].rotation:  # phone videos: shown turned, stored level
            self.output.set_display_rotation(frames[0].rotation)
        images = _frames_to_tensor(frames)
        size = tuple(images.shape[-2:])
        if size == self.source_size:
            images = resize(images, self.shrunk)[..., : self.height, : self.width]
        else:
            images = fit_into(images, self.width, self.height, enlarge=True)
            self.letterboxed += len(frames)
        stylized = self._stylize(images, first=self.done == 0)
        if self.stabilizer is not None:
            stylized = self.stabilizer(images, stylized)
        stylized = letterbox(stylized, self.height, self.width)
        for frame in _tensor_to_frames(stylized, [self.timestamps(f) for f in frames], self.timestamps.time_base):
            self.writer.mux(self.output.encode(frame))
        self.done += len(frames)

    def _stylize(self, images: torch.Tensor, first: bool) -> torch.Tensor:
        # A short batch after the first is filled up with copies of its last
        # frame: one batch shape, so a compiled network is not compiled again.
        missing = 0 if first else self.batch_size - len(images)
        filled = torch.cat([images, images[-1:].expand(missing, -1, -1, -1)]) if missing else images
        return self.stylizer(filled)[: len(images)]

    def finish(self) -> None:
        self.writer.mux(self.output.encode(None))  # what the encoder still holds


def _frame_batches(reader: Any, video: Any, tracks: dict[int, SoundTrack], size: int) -> Iterator[list[Any]]:
    """Decoded video frames in batches of up to ``size`` frames of one picture
    size; sound packets go straight to their tracks as they come."""
    av = _av()
    pending: list[Any] = []
    for packet in reader.demux(video, *(track.source for track in tracks.values())):
        if packet.stream.index in tracks:
            tracks[packet.stream.index].write(packet)
            continue
        try:
            decoded = packet.decode()
        except av.InvalidDataError:  # a damaged or cut-off packet: its frames count as missing
            continue
        for frame in decoded:
            if pending and (frame.width, frame.height) != (pending[0].width, pending[0].height):
                yield pending
                pending = []
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
    timestamps and rate, sound copied unless ``settings.audio`` is off, each
    frame stabilized against the previous output unless ``settings.stabilizer``
    is None.
    ``on_progress(frames done, frames in all or None)`` hears after each batch.

    ``destination``'s extension picks the encoder (.mp4, .mov, .mkv: H.264;
    .webm: VP9); frames keep the first frame's size, shrunk to ``max_size`` and
    cropped to even sides. Raises StylizeError if PyAV (or, to stabilize,
    OpenCV) is not installed, the
    extension is not one of those, ``destination`` is ``source``, the source is
    missing or has no decodable video, the scale control's working size is over
    the pixel limit, or ``destination`` cannot be written or encoded.
    """
    av = _av()
    encoder = encoder_for(destination)
    refuse_overwriting(source, destination)
    stabilizer = FlowStabilizer(settings.stabilizer) if settings.stabilizer is not None else None
    started = time.perf_counter()
    with _open_input(source) as reader, atomic_path(destination) as temporary:
        video = reader.streams.video[0]
        video.thread_type = "AUTO"
        sounds = list(reader.streams.audio) if settings.audio else []
        total = _frame_count(reader, video)
        try:
            with av.open(str(temporary), "w") as writer:
                first_size = _first_frame_size(source)
                stream = _StylizedStream(writer, video, first_size, encoder, stylizer, settings, stabilizer)
                tracks = {sound.index: SoundTrack(writer, source, sound, destination) for sound in sounds}
                for frames in _frame_batches(reader, video, tracks, settings.batch_size):
                    stream.write(frames)
                    if on_progress is not None:
                        on_progress(stream.done, total)
                stream.finish()
                for track in tracks.values():
                    track.finish()
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
        audio=tuple(track.describe() for track in tracks.values()),
        seconds=time.perf_counter() - started,
        missing_frames=max(0, int(video.frames) - stream.done),  # 0 where the header has no count
        letterboxed_frames=stream.letterboxed,
    )
