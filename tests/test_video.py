"""stylize video: frames stylized in batches, frame rate, timestamps and sound kept."""

from __future__ import annotations

import io
import sys
from fractions import Fraction
from pathlib import Path

import av  # the test extra installs the video extra: a broken install fails, never skips
import numpy as np
import pytest
import torch

from stylize import load_stylizer
from stylize.images import resize
from stylize.inference.temporal import FlowStabilizer

FRAMES, FPS, SAMPLE_RATE = 10, 12, 8000


def make_video(
    path: Path, width: int = 64, height: int = 48, codec: str = "libx264", sound: bool = True, rotation: int = 0
) -> Path:
    """A moving bright square on a gradient, with a 440 Hz tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p" if codec == "libx264" else "yuv444p"
        video.options = {"crf": "0"} if codec == "libx264" else {}
        if rotation:
            video.set_display_rotation(rotation)
        audio = container.add_stream("aac", rate=SAMPLE_RATE) if sound else None
        if audio is not None:
            audio.layout = "mono"
        for index in range(FRAMES):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[..., 0] = np.linspace(0, 255, width)[None]
            pixels[..., 1] = 40 + 10 * index
            pixels[10:30, 5 + 3 * index : 25 + 3 * index] = 220
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        if audio is not None:
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE * FRAMES // FPS) / SAMPLE_RATE)
            for start in range(0, len(tone), 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024].astype(np.float32), format="fltp",
                                                   layout="mono")  # fmt: skip
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
        container.mux(video.encode(None))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def rotation(path: Path) -> int:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).rotation


def decode(path: Path) -> tuple[torch.Tensor, list[float], Fraction]:
    """Frames as NCHW in [0, 1], their times in seconds, and the stream's frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        pixels = np.stack([frame.to_ndarray(format="rgb24") for frame in frames])
        times = [float(frame.pts * frame.time_base) for frame in frames]
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, times, stream.average_rate


def luma(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma, the Y that the encoder keeps at full resolution."""
    return torch.einsum("c,nchw->nhw", torch.tensor([0.299, 0.587, 0.114]), images)


def audio_streams(path: Path) -> list[tuple[str, int, int]]:
    with av.open(str(path)) as container:
        return [(stream.codec_context.name, stream.rate, stream.duration) for stream in container.streams.audio]


def audio_packets(path: Path) -> list[bytes]:
    """The sound's coded packets, byte for byte: a copy matches, a re-encode does not."""
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


def test_video_is_stylized_frame_by_frame_with_rate_times_and_sound_kept(
    cli, clip: Path, model_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "styled.mp4"
    args = ("--batch-size", "4", "--quality", "0", "--no-stabilize")
    result = cli("video", clip, "--model", model_file, "--out", out, *args)
    assert result.code == 0, result.err
    assert result.out.startswith(f"wrote {out} ({FRAMES} frames, 64x48 at 12 fps, sound: aac copied;")
    source, source_times, _ = decode(clip)
    styled, times, rate = decode(out)
    assert styled.shape == source.shape and rate == FPS and times == source_times
    assert audio_streams(out) == audio_streams(clip) and audio_streams(out)[0][:2] == ("aac", SAMPLE_RATE)
    assert audio_packets(out) == audio_packets(clip) and len(audio_packets(clip)) > 5
    expected = load_stylizer(model_file, "cpu")(source)
    # 4:2:0 video keeps colour at half resolution: compare full-resolution lightness.
    assert (luma(styled) - luma(expected)).abs().mean() * 255 < 2, "the frames are the model's"
    assert (luma(styled) - luma(source)).abs().mean() * 255 > 10, "and not the source's"


def test_batch_size_does_not_change_the_frames(cli, clip: Path, model_file: Path, tmp_path: Path) -> None:
    for batch in (1, 8):
        args = ("--batch-size", batch, "--quality", "0")
        assert cli("video", clip, "--model", model_file, "--out", tmp_path / f"b{batch}.mp4", *args).code == 0
    one, eight = decode(tmp_path / "b1.mp4")[0], decode(tmp_path / "b8.mp4")[0]
    assert one.shape == eight.shape == (FRAMES, 3, 48, 64)
    # Lossless luma. Kernels differ by batch shape (and torch release), so float rounding
    # flips a level here and there, which 4:2:0's shared colour spreads to neighbours;
    # a wrong frame differs by tens of levels.
    difference = (luma(one) - luma(eight)).abs() * 255
    assert difference.max() <= 3 and difference.mean() < 0.1


def test_no_audio_max_size_and_odd_sides(cli, model_file: Path, tmp_path: Path) -> None:
    odd = make_video(tmp_path / "odd.mkv", width=35, height=27, codec="ffv1")
    result = cli("video", odd, "--model", model_file, "--out", tmp_path / "o.mp4", "--no-audio")
    assert result.code == 0, result.err
    assert decode(tmp_path / "o.mp4")[0].shape == (FRAMES, 3, 26, 34), "4:2:0 video needs even sides"
    assert audio_streams(tmp_path / "o.mp4") == []
    small = cli("video", odd, "--model", model_file, "--out", tmp_path / "s.webm", "--max-size", "20", "--no-audio")
    assert small.code == 0, small.err
    assert decode(tmp_path / "s.webm")[0].shape == (FRAMES, 3, 14, 20)


def test_a_phone_videos_display_rotation_is_kept(cli, model_file: Path, tmp_path: Path) -> None:
    portrait = make_video(tmp_path / "phone.mov", sound=False, rotation=90)
    assert cli("video", portrait, "--model", model_file, "--out", tmp_path / "o.mov").code == 0
    assert rotation(tmp_path / "o.mov") == 90
    assert decode(tmp_path / "o.mov")[0].shape[-2:] == (48, 64)  # frames stored as shot, turned on display
    level = make_video(tmp_path / "level.mov", sound=False)
    assert cli("video", level, "--model", model_file, "--out", tmp_path / "level-out.mov").code == 0
    assert rotation(tmp_path / "level-out.mov") == 0


def test_default_output_name_and_controls(cli, clip: Path, model_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("video", clip, "--model", model_file, "--strength", "0", "--quality", "0")
    assert result.code == 0, result.err
    styled, source = decode(tmp_path / "clip-model.mp4")[0], decode(clip)[0]
    # Stabilized, as by default: the carried texture must not drag the footage's own changes.
    assert (luma(styled) - luma(source)).abs().mean() * 255 < 2, "strength 0 gives the source back"


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda tmp: tmp / "missing.mp4", [], "error: no such file: {tmp}/missing.mp4"),
        (lambda tmp: (tmp / "text.mp4").write_text("hello") and tmp / "text.mp4", [],
         "error: cannot read {tmp}/text.mp4: not a video"),
        (lambda tmp: make_video(tmp / "v.mp4", sound=False), ["--out", "{tmp}/out.gif"],
         "error: cannot write video with extension '.gif'; use one of: .mp4, .mov, .mkv, .webm"),
        (lambda tmp: make_video(tmp / "v.mp4", sound=False), ["--quality", "60"],
         "error: --quality must be between 0 and 51, not 60"),
        (lambda tmp: make_video(tmp / "v.mp4", sound=False), ["--carry", "1"],
         "error: --carry must be at least 0 and below 1, not 1"),
        (lambda tmp: make_video(tmp / "v.mp4", sound=False), ["--no-stabilize", "--carry", "0.3"],
         "error: --carry sets the stabilizer, which --no-stabilize turns off"),
        (lambda tmp: make_video(tmp / "v.mp4", sound=False), ["--out", "{tmp}/v.mp4"],
         "error: refusing to overwrite the input {tmp}/v.mp4"),
    ],
)  # fmt: skip
def test_bad_video_requests_are_one_line_and_write_nothing(
    cli, model_file: Path, tmp_path: Path, make, args: list[str], message: str
) -> None:
    source = make(tmp_path)
    before = set(tmp_path.iterdir())
    result = cli("video", source, "--model", model_file, *[arg.format(tmp=tmp_path) for arg in args])
    assert result.code == 2 and len(result.error_lines) == 1
    assert result.error_lines[0].startswith(message.format(tmp=tmp_path))
    assert set(tmp_path.iterdir()) == before


def test_missing_pyav_says_which_extra_to_install(cli, clip: Path, model_file: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    result = cli("video", clip, "--model", model_file)
    assert result.code == 2 and result.error_lines == ["error: stylize video needs PyAV: pip install 'stylize[video]'"]


def test_without_opencv_only_stabilizing_is_refused(
    cli, clip: Path, model_file: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    result = cli("video", clip, "--model", model_file, "--out", tmp_path / "o.mp4")
    assert result.code == 2 and result.error_lines == [
        "error: stabilizing video needs OpenCV's optical flow: pip install 'stylize[video]' "
        "(or stabilize off: --no-stabilize, VideoSettings(stabilizer=None))"
    ]
    assert not (tmp_path / "o.mp4").exists()
    result = cli("video", clip, "--model", model_file, "--out", tmp_path / "o.mp4", "--no-stabilize")
    assert result.code == 0 and (tmp_path / "o.mp4").is_file()


BURSTS_MS = [0, 10, 20, 30, 40, 150, 160, 170, 180, 190, 300, 310, 320, 330, 340, 500]


def make_variable_rate_video(path: Path) -> Path:
    """Frames 10 ms apart in bursts, nominally 30 fps, like a screen recording."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        for index, ms in enumerate(BURSTS_MS):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm"])
def test_variable_frame_rate_keeps_every_frames_own_time(cli, model_file: Path, tmp_path: Path, suffix: str) -> None:
    source = make_variable_rate_video(tmp_path / "screen.mkv")
    assert [round(time * 1000) for time in decode(source)[1]] == BURSTS_MS
    out = tmp_path / f"out{suffix}"
    result = cli("video", source, "--model", model_file, "--out", out, "--batch-size", "3", "--no-compile")
    assert result.code == 0, result.err
    assert [round(time * 1000) for time in decode(out)[1]] == BURSTS_MS


def _ts_part(width: int, height: int, first_frame: int, frames: int) -> bytes:
    """One MPEG-TS segment; segments concatenated make one stream whose picture size changes."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "0"}
        for index in range(frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[..., 0] = np.linspace(0, 255, width)[None]
            pixels[..., 1] = np.linspace(255, 0, height)[:, None]
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = first_frame + index, Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return buffer.getvalue()


@pytest.mark.parametrize("batch", ["1", "4"])
def test_a_picture_size_change_midstream_is_fitted_with_its_aspect_kept(
    cli, model_file: Path, tmp_path: Path, batch: str
) -> None:
    source = tmp_path / "broadcast.ts"
    source.write_bytes(_ts_part(96, 64, 0, 5) + _ts_part(128, 72, 20, 5))
    result = cli("video", source, "--model", model_file, "--out", tmp_path / "o.mkv", "--batch-size", batch,
                 "--quality", "0", "--no-compile", "--no-stabilize")  # fmt: skip
    assert result.code == 0, result.err
    assert "5 frames were fitted into 96x64 with black bars" in result.err
    styled = decode(tmp_path / "o.mkv")[0]
    assert styled.shape == (10, 3, 64, 96)
    # 128x72 fits 96x64 as 96x54: five black rows above and below, the picture's stylization between.
    wide = decode_all_sizes(source)[-1]
    expected = load_stylizer(model_file, "cpu")(resize(wide, (54, 96)).clamp(0, 1))
    # (4:2:0 colour spans row pairs, so the rows touching the picture are left out.)
    assert luma(styled[-1:, :, :4]).max() * 255 < 3 and luma(styled[-1:, :, -4:]).max() * 255 < 3
    assert (luma(styled[-1:, :, 5:59]) - luma(expected)).abs().mean() * 255 < 2
    first = load_stylizer(model_file, "cpu")(decode_all_sizes(source)[0])
    assert (luma(styled[:1]) - luma(first)).abs().mean() * 255 < 2, "frames of the first size are as they were"


def test_timestamps_that_jump_back_are_shifted_to_follow_on(cli, model_file: Path, tmp_path: Path) -> None:
    source = tmp_path / "joined.ts"  # two recordings joined end to end, each starting at its own zero
    source.write_bytes(_ts_part(64, 48, 0, 5) + _ts_part(64, 48, 0, 5))
    result = cli("video", source, "--model", model_file, "--out", tmp_path / "o.mkv", "--no-compile")
    assert result.code == 0, result.err
    times = decode(tmp_path / "o.mkv")[1]
    assert len(times) == 10 and np.allclose(np.diff(times), 1 / FPS, atol=1e-3)


def decode_all_sizes(path: Path) -> list[torch.Tensor]:
    with av.open(str(path)) as container:
        return [torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float() / 255
                for frame in container.decode(video=0)]  # fmt: skip


def make_camera_avi(path: Path, frames: int = FRAMES, layout: str = "stereo") -> Path:
    """MJPEG video with 16-bit PCM sound (stereo unless told), as cameras write."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mjpeg", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuvj420p"
        audio = container.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout=layout)
        channels = audio.codec_context.layout.nb_channels
        for index in range(frames):
            pixels = np.full((48, 64, 3), 8 * index, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        samples = SAMPLE_RATE * frames // FPS
        tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(samples) / SAMPLE_RATE)).astype(np.int16)
        sound = av.AudioFrame.from_ndarray(np.repeat(tone[None], channels, axis=0).T.reshape(1, -1).copy(),
                                           format="s16", layout=layout)  # fmt: skip
        sound.sample_rate, sound.pts = SAMPLE_RATE, 0
        container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
        container.mux(video.encode(None))
    return path


def sound_rms(path: Path) -> float:
    with av.open(str(path)) as container:
        samples = np.concatenate([frame.to_ndarray().astype(np.float64).ravel() for frame in container.decode(audio=0)])
    scale = 32768 if np.abs(samples).max() > 2 else 1  # 16-bit integers or floats
    return float(np.sqrt(np.mean((samples / scale) ** 2)))


def sound_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
        return sum(frame.samples for frame in frames) / frames[0].sample_rate


@pytest.mark.parametrize(
    ("suffix", "codec", "layout"),
    [(".mp4", "aac", "stereo"), (".webm", "opus", "stereo"), (".mov", "pcm_s16le", "stereo"), (".webm", "opus", "2.1"),
     (".webm", "opus", "mono")],
)  # fmt: skip
def test_sound_a_container_cannot_hold_is_encoded_again(
    cli, model_file: Path, tmp_path: Path, suffix: str, codec: str, layout: str
) -> None:
    camera = make_camera_avi(tmp_path / "camera.avi", layout=layout)
    out = tmp_path / f"out{suffix}"
    result = cli("video", camera, "--model", model_file, "--out", out, "--no-compile")
    assert result.code == 0, result.err
    said = (
        "pcm_s16le copied"
        if codec == "pcm_s16le"
        else f"pcm_s16le re-encoded as {'libopus' if codec == 'opus' else codec}"
    )
    assert f"sound: {said};" in result.out
    assert audio_streams(out)[0][0] == codec
    # Within one codec frame (AAC: 1024 samples) of the source's, and the tone about as loud
    # (2.1 becomes Opus's 3.0: the low-frequency channel is mixed into the others).
    assert sound_seconds(out) == pytest.approx(sound_seconds(camera), abs=1024 / SAMPLE_RATE + 0.01)
    assert sound_rms(out) == pytest.approx(sound_rms(camera), rel=0.25)
    assert decode(out)[0].shape == (FRAMES, 3, 48, 64)


def test_a_truncated_video_says_how_many_frames_were_lost(cli, model_file: Path, tmp_path: Path) -> None:
    whole = make_camera_avi(tmp_path / "whole.avi", frames=30)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 55 // 100])
    decodable = 0
    with av.open(str(cut)) as container:
        for packet in container.demux(video=0):
            try:
                decodable += len(packet.decode())
            except av.InvalidDataError:
                pass
    assert 0 < decodable < 30
    result = cli("video", cut, "--model", model_file, "--out", tmp_path / "o.mp4", "--no-audio", "--no-compile")
    assert result.code == 0, result.err
    assert f"{30 - decodable} of the 30 frames {cut} counts could not be decoded" in result.err
    assert decode(tmp_path / "o.mp4")[0].shape[0] == decodable


def test_video_is_stabilized_by_default_along_the_footages_flow(
    cli, clip: Path, model_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "steady.mp4"
    result = cli("video", clip, "--model", model_file, "--out", out, "--batch-size", "3", "--quality", "0")
    assert result.code == 0, result.err
    source, _, _ = decode(clip)
    styled, _, _ = decode(out)
    frame_by_frame = load_stylizer(model_file, "cpu")(source)
    expected = FlowStabilizer()(source, frame_by_frame)  # one call: batches must not matter
    assert (luma(styled) - luma(expected)).abs().mean() * 255 < 2
    assert (luma(expected) - luma(frame_by_frame)).abs().mean() * 255 > 2  # it did change the frames
