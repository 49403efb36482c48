from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, ImageSequence
from safetensors.torch import save_file

from stylize import ImageLimits, InvalidSetting, load_image, load_model, load_stylizer, plan_outputs, stylize_files
from stylize.images import expand_inputs
from stylize.model.files import DEFAULT_STYLE

from .helpers import minimal_record, photo, train_args, write_model
from .reference_fast_neural_style import randomized, stylize_like_examples

ROOT = Path(__file__).resolve().parents[1]


def _expected(model: Path, image: Path) -> np.ndarray:
    """An independent oracle: Pillow's pixels through the plain (unoptimized) network."""
    opened = ImageOps.exif_transpose(Image.open(image))
    if opened.mode.startswith("I;16"):  # Pillow's convert("RGB") would clip 16-bit grey at 255
        pixels = np.repeat(np.asarray(opened, dtype=np.float32)[..., None] / 65535, 3, axis=2)
    else:
        pixels = np.asarray(opened.convert("RGB"), dtype=np.float32) / 255
    with torch.no_grad():
        output = load_model(model).network(torch.from_numpy(pixels).permute(2, 0, 1)[None])
    return (output.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _same_pixels(written: np.ndarray, expected: np.ndarray) -> bool:
    """Equal up to one level where float rounding of the fast path flips a pixel."""
    return written.shape == expected.shape and np.abs(written.astype(int) - expected.astype(int)).max() <= 1


def test_stylize_one_image_to_a_file_keeps_its_size(cli, tmp_path: Path, model_file: Path) -> None:
    Image.fromarray(photo(37, 51, seed=1)).save(tmp_path / "in.png")
    result = cli("image", tmp_path / "in.png", "--model", model_file, "--out", tmp_path / "out.png", "--device", "cpu")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {tmp_path / 'out.png'}" and result.err == ""
    written = np.asarray(Image.open(tmp_path / "out.png"))
    assert written.shape == (37, 51, 3)
    assert _same_pixels(written, _expected(model_file, tmp_path / "in.png"))


def test_the_api_stylizes_pil_images_like_files(tmp_path: Path, model_file: Path) -> None:
    Image.fromarray(photo(26, 33, seed=8)).save(tmp_path / "in.png")
    styled = load_stylizer(model_file, "cpu").stylize_pil(Image.open(tmp_path / "in.png"))
    assert styled.size == (33, 26) and styled.mode == "RGB"
    assert _same_pixels(np.asarray(styled), _expected(model_file, tmp_path / "in.png"))


def test_output_format_follows_the_extension_and_max_size_shrinks(cli, tmp_path: Path, model_file: Path) -> None:
    Image.fromarray(photo(60, 90, seed=2)).save(tmp_path / "in.png")
    result = cli("image", tmp_path / "in.png", "--model", model_file, "--out", tmp_path / "o.jpg", "--max-size", "45")
    assert result.code == 0, result.err
    with Image.open(tmp_path / "o.jpg") as written:
        assert written.format == "JPEG" and written.size == (45, 30)


def test_alpha_survives_stylizing_to_png(cli, tmp_path: Path, model_file: Path) -> None:
    rgba = np.dstack([photo(20, 24, seed=3), np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (20, 1))])
    Image.fromarray(rgba).save(tmp_path / "logo.png")
    assert cli("image", tmp_path / "logo.png", "--model", model_file, "--out", tmp_path / "o.png").code == 0
    written = np.asarray(Image.open(tmp_path / "o.png"))
    assert written.shape == (20, 24, 4) and np.array_equal(written[..., 3], rgba[..., 3])


def test_many_inputs_go_to_a_folder(cli, tmp_path: Path, photos: Path, model_file: Path) -> None:
    result = cli("image", photos, "--model", model_file, "--out", tmp_path / "out")
    assert result.code == 0, result.err
    assert "wrote 6 of 6 images" in result.out
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*"))
    assert "nested/photo0-model.jpg" in written and "photo1-model.png" in written and len(written) == 6
    result = cli("image", str(photos / "*.png"), "--model", model_file, "--out", tmp_path / "globbed")
    assert result.code == 0 and len(list((tmp_path / "globbed").iterdir())) == 2


def test_the_library_stylizes_a_folder_as_the_cli_does(tmp_path: Path, photos: Path, model_file: Path) -> None:
    """Planning names, limits and per-file failures belong to the library; the CLI only shows them."""
    shutil.copytree(photos, tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    stylizer = load_stylizer(model_file, device="cpu")
    pairs = plan_outputs(expand_inputs([str(tmp_path / "in")]), tmp_path / "out", stylizer.name)
    done: list[Path] = []
    result = stylize_files(stylizer, pairs, ImageLimits(max_size=24), on_file=done.append)
    assert len(result.written) == 6 and all(path.is_file() for path in result.written)
    assert [source.name for source, _ in result.failures] == ["broken.png"] and len(done) == 7
    assert max(load_image(result.written[0]).rgb.shape[-2:]) == 24
    with pytest.raises(InvalidSetting, match="max_size must be at least 1"):
        stylizer.stylize(load_image(result.written[0]), max_size=0)
    with pytest.raises(InvalidSetting, match="max_pixels must be at least 1"):
        ImageLimits(max_pixels=0)


def test_default_output_is_the_current_folder(cli, tmp_path: Path, model_file: Path, monkeypatch) -> None:
    Image.fromarray(photo(20, 20, seed=4)).save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    assert cli("image", "cat.jpg", "--model", model_file).code == 0
    assert (tmp_path / "cat-model.jpg").is_file()


def _results(folder: Path) -> dict[str, np.ndarray]:
    return {str(path.relative_to(folder)): np.asarray(Image.open(path)) for path in sorted(folder.rglob("*.png"))}


@pytest.mark.parametrize("given", ["files", "folders", "glob"])
def test_same_named_inputs_each_keep_their_own_result(
    cli, tmp_path: Path, model_file: Path, monkeypatch, given: str
) -> None:
    for seed, trip in enumerate(["trip1", "trip2"]):
        (tmp_path / trip).mkdir()
        Image.fromarray(photo(20, 28, seed=seed)).save(tmp_path / trip / "photo.png")
    monkeypatch.chdir(tmp_path)
    inputs = {
        "files": ["trip1/photo.png", "trip2/photo.png"],
        "folders": ["trip1", "trip2"],
        "glob": ["trip*/photo.png"],
    }
    result = cli("image", *inputs[given], "--model", model_file, "--out", "results")
    assert result.code == 0, result.err
    assert "wrote 2 of 2 images" in result.out and "trip2/photo.png -> photo-model-2.png" in result.err
    written = _results(tmp_path / "results")
    assert list(written) == ["photo-model-2.png", "photo-model.png"]
    assert _same_pixels(written["photo-model.png"], _expected(model_file, tmp_path / "trip1/photo.png"))
    assert _same_pixels(written["photo-model-2.png"], _expected(model_file, tmp_path / "trip2/photo.png"))


def test_results_never_replace_an_input_nor_leave_the_out_folder(
    cli, tmp_path: Path, model_file: Path, monkeypatch
) -> None:
    (tmp_path / "work" / "sub").mkdir(parents=True)
    Image.fromarray(photo(20, 28, seed=1)).save(tmp_path / "work" / "photo.png")
    Image.fromarray(photo(20, 28, seed=2)).save(tmp_path / "work" / "photo-model.png")  # looks like a result
    Image.fromarray(photo(20, 28, seed=3)).save(tmp_path / "outside.png")
    Image.fromarray(photo(20, 28, seed=4)).save(tmp_path / "linked.png")
    (tmp_path / "work" / "link.png").symlink_to(tmp_path / "linked.png")
    before = (tmp_path / "work" / "photo-model.png").read_bytes()
    monkeypatch.chdir(tmp_path / "work" / "sub")
    inputs = [
        "../photo.png",
        tmp_path / "work" / "photo.png",
        "../photo-model.png",
        tmp_path / "outside.png",
        "../link.png",
    ]
    result = cli("image", *inputs, "--model", model_file, "--out", "..")
    assert result.code == 0, result.err
    assert "wrote 4 of 4 images" in result.out  # photo.png was given twice: stylized once
    assert (tmp_path / "work" / "photo-model.png").read_bytes() == before
    written = _results(tmp_path / "work")
    assert set(written) == {"photo.png", "photo-model.png", "link.png", "photo-model-2.png",
                            "photo-model-model.png", "outside-model.png", "link-model.png"}  # fmt: skip
    assert _same_pixels(written["photo-model-2.png"], _expected(model_file, tmp_path / "work" / "photo.png"))
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "linked.png",
        "model.safetensors",
        "outside.png",
        "work",
    ]


def _frames(path: Path) -> tuple[list[np.ndarray], list[int], int | None]:
    with Image.open(path) as animation:
        shown = [
            (np.asarray(frame.convert("RGB")), frame.info["duration"]) for frame in ImageSequence.Iterator(animation)
        ]
        return [pixels for pixels, _ in shown], [ms for _, ms in shown], animation.info.get("loop")


@pytest.mark.parametrize(
    ("source", "out", "loop", "tolerance"),
    # Mean levels of 255 a frame may be off: GIF has 256 colours, WebP is written lossy (quality 95).
    [(".png", ".png", 2, 0.5), (".gif", ".gif", 0, 10), (".gif", ".gif", None, 10), (".webp", ".png", 0, 0.5),
     (".png", ".webp", 0, 20)],
)  # fmt: skip
def test_animations_are_stylized_frame_by_frame_with_their_timing(
    cli, tmp_path: Path, model_file: Path, source: str, out: str, loop: int | None, tolerance: float
) -> None:
    frames = [Image.fromarray(photo(24, 32, seed=seed)) for seed in range(3)]
    looping = {} if loop is None else {"loop": loop}
    lossless = {"lossless": True} if source == ".webp" else {}
    animation = tmp_path / f"anim{source}"
    frames[0].save(animation, save_all=True, append_images=frames[1:], duration=[100, 250, 400], **looping, **lossless)
    result = cli("image", animation, "--model", model_file, "--out", tmp_path / f"out{out}")
    assert result.code == 0, result.err
    written, durations, written_loop = _frames(tmp_path / f"out{out}")
    assert durations == [100, 250, 400] and written_loop == loop
    for index, (pixels, shown) in enumerate(zip(written, _frames(animation)[0], strict=True)):
        Image.fromarray(shown).save(tmp_path / f"frame{index}.png")
        expected = _expected(model_file, tmp_path / f"frame{index}.png").astype(int)
        assert np.abs(pixels.astype(int) - expected).mean() < tolerance, "each frame is its own stylization"
        assert np.abs(shown.astype(int) - expected).mean() > 2 * tolerance, "and far from the photo"


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_each_animation_frame_keeps_its_own_transparency(cli, tmp_path: Path, model_file: Path, suffix: str) -> None:
    frames = []
    for index in range(3):  # a photo with a clear hole that moves right
        alpha = np.full((24, 32), 255, np.uint8)
        alpha[8:16, 8 * index : 8 * index + 8] = 0
        frames.append(Image.fromarray(np.dstack([photo(24, 32, seed=index), alpha])))
    exact = {".webp": {"lossless": True}, ".gif": {"disposal": 2}}.get(suffix, {})
    frames[0].save(tmp_path / f"anim{suffix}", save_all=True, append_images=frames[1:], duration=100, loop=0, **exact)
    result = cli("image", tmp_path / f"anim{suffix}", "--model", model_file, "--out", tmp_path / f"out{suffix}")
    assert result.code == 0, result.err
    with Image.open(tmp_path / f"out{suffix}") as written:
        holes = [
            np.argwhere(np.asarray(frame.convert("RGBA"))[..., 3] < 128) for frame in ImageSequence.Iterator(written)
        ]
    assert [hole.min(axis=0).tolist() + hole.max(axis=0).tolist() for hole in holes] == [
        [8, 8 * index, 15, 8 * index + 7] for index in range(3)
    ]
    if suffix == ".webp":  # and the file says so (the VP8X header's alpha flag), for viewers that ask it
        assert (tmp_path / "out.webp").read_bytes()[20] & 0x10


def test_an_animation_to_a_still_format_is_refused_in_one_line(cli, tmp_path: Path, model_file: Path) -> None:
    frames = [Image.fromarray(photo(24, 32, seed=seed)) for seed in range(2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    result = cli("image", tmp_path / "anim.gif", "--model", model_file, "--out", tmp_path / "still.jpg")
    assert result.code == 2 and result.error_lines == [
        f"error: cannot write an animation to {tmp_path / 'still.jpg'}: write .gif, .png or .webp "
        "(or use stylize video)"
    ]
    assert not (tmp_path / "still.jpg").exists()


def test_bundled_models_by_name_and_the_models_listing(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STYLIZE_MODELS", str(tmp_path / "bundle"))
    assert "no bundled models" in cli("models").out
    write_model(tmp_path / "bundle" / "wave-instance.safetensors", style="great-wave")
    tuned = {**minimal_record(tmp_path), "image_size": 32, "steps_done": 5,
             "init": "somewhere/starry-night-batch.safetensors"}  # fmt: skip
    write_model(tmp_path / "bundle" / "wave-batch.safetensors", norm="batch", style="great-wave", training=tuned)
    rows = {line.split()[1]: line for line in cli("models").out.splitlines() if "wave-" in line}
    assert rows.keys() == {"wave-instance", "wave-batch"} and all("great-wave" in row for row in rows.values())
    assert "scratch" in rows["wave-instance"] and "starry-night-batch" in rows["wave-batch"]
    Image.fromarray(photo(20, 20, seed=5)).save(tmp_path / "in.png")
    assert cli("image", tmp_path / "in.png", "--model", "wave", "--out", tmp_path / "o.png").code == 0
    assert _same_pixels(
        np.asarray(Image.open(tmp_path / "o.png")),
        _expected(tmp_path / "bundle" / "wave-instance.safetensors", tmp_path / "in.png"),
    )


def test_without_a_model_the_default_bundled_style_is_used_and_named(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STYLIZE_MODELS", str(tmp_path / "bundle"))
    Image.fromarray(photo(20, 20, seed=6)).save(tmp_path / "in.png")
    result = cli("image", tmp_path / "in.png", "--out", tmp_path / "none.png")
    assert result.code == 2 and result.error_lines == [
        f"error: no bundled models in {tmp_path / 'bundle'}: pass --model with a model file"
    ]
    write_model(tmp_path / "bundle" / "aaa-instance.safetensors", seed=1, style="aaa")
    result = cli("image", tmp_path / "in.png", "--out", tmp_path / "first.png")
    assert result.code == 0 and "using the bundled aaa-instance" in result.err
    write_model(tmp_path / "bundle" / f"{DEFAULT_STYLE}-batch.safetensors", norm="batch", seed=2, style=DEFAULT_STYLE)
    write_model(tmp_path / "bundle" / f"{DEFAULT_STYLE}-instance.safetensors", seed=3, style=DEFAULT_STYLE)
    result = cli("image", tmp_path / "in.png", "--out", tmp_path / "default.png")
    assert result.code == 0 and f"using the bundled {DEFAULT_STYLE} " in result.err
    assert _same_pixels(
        np.asarray(Image.open(tmp_path / "default.png")),
        _expected(tmp_path / "bundle" / f"{DEFAULT_STYLE}-instance.safetensors", tmp_path / "in.png"),
    )


def test_bad_files_among_good_ones_are_summarized_and_the_rest_written(
    cli, tmp_path: Path, photos: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(photos, folder)
    (folder / "broken.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    good = (folder / "photo1.png").read_bytes()
    (folder / "nested" / "cut.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (300, 200)).save(folder / "huge.png")
    monkeypatch.setenv("STYLIZE_MAX_PIXELS", "50000")
    monkeypatch.chdir(tmp_path)  # short relative paths keep the table's rows unwrapped
    result = cli("image", "mixed", "--model", model_file, "--out", tmp_path / "out", "--device", "cpu")
    assert result.code == 2
    assert "wrote 6 of 10 images" in result.out
    assert "4 of 10 images failed" in result.err and "Traceback" not in result.err
    rows = [line for line in result.err.splitlines() if "mixed/" in line]
    for name, problem in [("broken.jpg", "cannot read broken.jpg: not an image"),
                          ("empty.png", "cannot read empty.png: not an image"), ("cut.png", "cannot read cut.png"),
                          ("huge.png", "huge.png is 300x200 = 60,000 pixels, over the limit of 50,000")]:  # fmt: skip
        assert any(f"/{name} " in row and problem in row for row in rows), (name, result.err)
    written = sorted(path.relative_to(tmp_path / "out") for path in (tmp_path / "out").rglob("*.*"))
    assert len(written) == 6 and not any("broken" in str(path) or "cut" in str(path) for path in written)
    for source in [folder / "photo1.png", folder / "nested" / "photo0.jpg"]:
        relative = source.relative_to(folder)
        result_file = tmp_path / "out" / relative.parent / f"{relative.stem}-model{relative.suffix}"
        if relative.suffix == ".png":
            assert _same_pixels(np.asarray(Image.open(result_file)), _expected(model_file, source))
        else:
            assert Image.open(result_file).size == Image.open(source).size


# (case, command line with {tmp}, {good} and {model} filled in per test, message)
TRAIN = "train {good} --data {tmp} --out {tmp}/m.safetensors --device cpu"
BAD_INPUTS = [
    ("missing input", "image {tmp}/nope.png --model {model} --out {tmp}/r.png", "no such file"),
    ("zero-byte file", "image {tmp}/empty.png --model {model} --out {tmp}/r.png", "not an image"),
    ("truncated jpeg", "image {tmp}/cut.jpg --model {model} --out {tmp}/r.png", "cannot read"),
    ("png with a bad crc", "image {tmp}/badcrc.png --model {model} --out {tmp}/r.png", "bad header checksum"),
    ("decompression bomb", "image {good} --model {model} --out {tmp}/r.png --max-pixels 399", "over the limit of 399"),
    (
        "bad pixel limit",
        "image {good} --model {model} --out {tmp}/r.png --max-pixels 0",
        "--max-pixels must be at least 1",
    ),
    ("folder as style image", "train {tmp} --data {tmp} --out {tmp}/m.safetensors --device cpu", "is a folder, not"),
    ("truncated model", "image {good} --model {tmp}/trunc.safetensors --out {tmp}/r.png", "not a readable model"),
    ("pickle with a payload", "image {good} --model {tmp}/evil.pth --out {tmp}/r.png", "is not a model file"),
    ("norm disagrees with weights", "image {good} --model {tmp}/lying.safetensors", "not hold a batch-norm network"),
    ("unknown train device", TRAIN + " --device tpu", "--device must be one of: auto, cpu, cuda, cuda:N; not 'tpu'"),
    ("cuda train without gpu", TRAIN + " --device cuda", "no CUDA GPU"),
    ("negative batch", TRAIN + " --batch-size -2", "--batch-size must be at least 1"),
    ("folder as model", "image {good} --model {tmp} --out {tmp}/r.png", "is a folder"),
    ("non-image", "image {tmp}/text.jpg --model {model} --out {tmp}/r.png", "not an image"),
    ("corrupt image", "image {tmp}/cut.png --model {model} --out {tmp}/r.png", "cannot read"),
    ("unknown model", "image {good} --model no-such-style --out {tmp}/r.png", "no model file or bundled model"),
    (
        "not a model",
        "image {good} --model {tmp}/notmodel.safetensors --out {tmp}/r.png",
        "notmodel.safetensors is not a model file",
    ),
    ("wrong architecture", "image {good} --model {tmp}/foreign.safetensors --out {tmp}/r.png", "not a stylize model"),
    ("bad max size", "image {good} --model {model} --out {tmp}/r.png --max-size -3", "--max-size must be at least 1"),
    ("bad device", "image {good} --model {model} --out {tmp}/r.png --device tpu", "--device must be one of"),
    ("cuda without gpu", "image {good} --model {model} --out {tmp}/r.png --device cuda", "no CUDA GPU"),
    ("unwritable output", "image {good} --model {model} --out {tmp}/afile/o.png", "is a file, not a folder"),
    ("bad extension", "image {good} --model {model} --out {tmp}/r.xyz", "extension '.xyz'"),
    ("not a number", "image {good} --model {model} --max-size big", "Invalid value for '--max-size'"),
    ("unknown option", "image {good} --model {model} --colour", "No such option"),
    ("zero steps", TRAIN + " --steps 0", "--steps must be at least 1"),
    ("negative size", TRAIN + " --image-size -5", "--image-size must be at least"),
    ("unknown norm", TRAIN + " --norm nope", "--norm must be one of: instance, batch, layer"),
    ("missing data", TRAIN + " --data {tmp}/nodata", "training data folder not found"),
    ("missing style", "train {tmp}/nostyle.png --data {tmp} --out {tmp}/m.safetensors", "no such file"),
    ("unwritable model", TRAIN.replace("{tmp}/m.safetensors", "{tmp}/afile/m.safetensors"), "is a file, not a folder"),
    ("missing checkpoint", TRAIN + " --resume {tmp}/none.pt", "checkpoint not found"),
    ("garbage checkpoint", TRAIN + " --resume {tmp}/text.jpg", "not a training checkpoint"),
    ("checkpoint of wrong types", TRAIN + " --resume {tmp}/odd.pt", "odd.pt is not a readable training checkpoint"),
    ("missing loss weights", TRAIN + " --loss-weights {tmp}/none.pth", "loss network weights file not found"),
    ("image as loss weights", TRAIN + " --loss-weights {good}", "not a PyTorch weights file"),
]


@pytest.mark.parametrize("command, message", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_no_output(
    cli, tmp_path: Path, model_file: Path, command: str, message: str
) -> None:
    if "--device cuda" in command and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    good = tmp_path / "good.png"
    Image.fromarray(photo(20, 20, seed=6)).save(good)
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])
    (tmp_path / "notmodel.safetensors").write_text("nope")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(photo(40, 40, seed=2)).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:600])
    (tmp_path / "whole.jpg").unlink()
    png = bytearray(good.read_bytes())
    crc_at = png.index(b"IDAT") + 4 + int.from_bytes(png[png.index(b"IDAT") - 4 : png.index(b"IDAT")], "big")
    png[crc_at] ^= 0xFF  # the pixels are intact, only the checksum is wrong
    (tmp_path / "badcrc.png").write_bytes(bytes(png))
    (tmp_path / "trunc.safetensors").write_bytes(model_file.read_bytes()[:3000])

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"in1.weight": Payload()}, tmp_path / "evil.pth")
    torch.save({"model": {}, "optimizer": {}, "step": "many", "config": []}, tmp_path / "odd.pt")
    honest = model_file.read_bytes()
    (tmp_path / "lying.safetensors").write_bytes(
        honest.replace(b'\\"norm\\": \\"instance\\"', b'\\"norm\\":    \\"batch\\"')
    )
    assert (tmp_path / "lying.safetensors").read_bytes() != honest
    before = set(tmp_path.rglob("*"))

    result = cli(*command.format(tmp=tmp_path, good=good, model=model_file).split())
    assert result.code == 2
    assert len(result.error_lines) == 1, result.err
    assert result.error_lines[0].startswith("error: ") and message in result.error_lines[0]
    assert "Traceback" not in result.err
    assert set(tmp_path.rglob("*")) == before  # nothing written, not even a temporary file
    assert not (tmp_path / "pwned").exists()  # the pickle payload never ran


def test_loss_network_download_failure_is_one_line(
    cli, tmp_path: Path, style_image: Path, photos: Path, monkeypatch
) -> None:
    from urllib.error import URLError

    import torchvision

    progress_bars: list[bool] = []

    def offline(self: object, progress: bool = True, **kwargs: object) -> None:
        progress_bars.append(progress)
        raise URLError("Name or service not known")

    monkeypatch.setattr(type(torchvision.models.VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # nothing cached
    result = cli("train", style_image, "--data", photos, "--out", tmp_path / "m.safetensors", "--device", "cpu")
    assert result.code == 2
    assert result.error_lines == [
        "note: downloading torchvision's ImageNet vgg16 weights (about 530 MB, once)",
        "error: --loss-network-weights is needed offline: cannot download the ImageNet weights for vgg16 "
        "(<urlopen error Name or service not known>); give a torchvision-format VGG state dict file",
    ]
    assert progress_bars == [False]  # only the CLI prints: no download bar from the library


def test_trained_model_stylizes_through_the_cli(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    model = tmp_path / "swirls.safetensors"
    assert cli(*train_args(style_image, photos, model, vgg_weights)).code == 0
    result = cli("image", photos / "photo1.png", "--model", model, "--out", tmp_path / "styled.png")
    assert result.code == 0, result.err
    assert Image.open(tmp_path / "styled.png").size == Image.open(photos / "photo1.png").size


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry",
    [
        [sys.executable, "-m", "stylize"],
        [sys.executable, str(ROOT / "cli.py")],
        [str(Path(sys.executable).parent / "stylize")],
    ],
    ids=["python -m stylize", "python cli.py", "console script"],
)
def test_every_entry_point_runs_the_same_app(entry: list[str], tmp_path: Path) -> None:
    assert Path(entry[0]).exists(), "the console script comes with pip install -e ."
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    listing = subprocess.run([*entry, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert listing.returncode == 0
    assert all(name in listing.stdout for name in ("train", "image", "compare", "curves", "models"))
    bad = subprocess.run(
        [*entry, "image", "nope.png", "--model", "nope"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ")


def _odd_but_valid(tmp_path: Path, kind: str) -> tuple[Path, tuple[int, int], bool]:
    """An unusual image that must work: (path, (height, width) as displayed, has alpha)."""
    pixels = photo(24, 36, seed=11)
    if kind == "16-bit png":
        Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(path := tmp_path / "deep.png")
    elif kind == "cmyk jpeg":
        Image.fromarray(pixels).convert("CMYK").save(path := tmp_path / "print.jpg")
    elif kind == "palette png with transparency":
        image = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.save(path := tmp_path / "icon.png", transparency=0)
        return path, (24, 36), True
    elif kind == "grayscale":
        Image.fromarray(pixels[..., 1]).save(path := tmp_path / "gray.jpg")
    elif kind == "rgba":
        alpha = np.tile(np.linspace(0, 255, 36, dtype=np.uint8), (24, 1))
        Image.fromarray(np.dstack([pixels, alpha])).save(path := tmp_path / "glass.png")
        return path, (24, 36), True
    elif kind == "exif-rotated jpeg":
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(pixels).save(path := tmp_path / "phone.jpg", exif=exif)
        return path, (36, 24), False
    elif kind == "1x1":
        Image.fromarray(pixels[:1, :1]).save(path := tmp_path / "dot.png")
        return path, (1, 1), False
    else:  # smaller than the network's receptive field
        Image.fromarray(pixels[:5, :7]).save(path := tmp_path / "tiny.png")
        return path, (5, 7), False
    return path, (24, 36), False


ODD_KINDS = ["16-bit png", "cmyk jpeg", "palette png with transparency", "grayscale", "rgba", "exif-rotated jpeg",
             "1x1", "smaller than the receptive field"]  # fmt: skip


@pytest.mark.parametrize("kind", ODD_KINDS)
def test_unusual_images_stylize_with_orientation_and_alpha_kept(
    cli, tmp_path: Path, model_file: Path, kind: str
) -> None:
    source, size, has_alpha = _odd_but_valid(tmp_path, kind)
    out = tmp_path / "result.png"
    result = cli("image", source, "--model", model_file, "--out", out, "--device", "cpu")
    assert result.code == 0 and result.err == "", result.err
    written = Image.open(out)
    assert (written.height, written.width) == size
    assert written.mode == ("RGBA" if has_alpha else "RGB")
    rgb = np.asarray(written.convert("RGB"))
    assert _same_pixels(rgb, _expected(model_file, source))
    if has_alpha:
        expected_alpha = load_image(source).alpha
        assert np.array_equal(np.asarray(written)[..., 3], expected_alpha[0, 0].mul(255).round().byte().numpy())


def test_output_folders_are_created(cli, tmp_path: Path, model_file: Path) -> None:
    Image.fromarray(photo(20, 20, seed=1)).save(tmp_path / "in.png")
    out = tmp_path / "new" / "deeper" / "r.png"
    assert cli("image", tmp_path / "in.png", "--model", model_file, "--out", out, "--device", "cpu").code == 0
    assert Image.open(out).size == (20, 20)


def test_a_read_only_output_folder_is_one_clear_error(
    cli, tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.fromarray(photo(20, 20, seed=1)).save(tmp_path / "in.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the OS refuse as it would for anyone else
        real_open = os.open

        def refusing_open(path: str | os.PathLike[str], flags: int, *args: object, **kwargs: object) -> int:
            if Path(path).parent == locked and flags & (os.O_WRONLY | os.O_RDWR):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
    try:
        result = cli("image", tmp_path / "in.png", "--model", model_file, "--out", locked / "r.png", "--device", "cpu")
    finally:
        locked.chmod(0o755)
    assert result.code == 2 and result.error_lines == [f"error: cannot write {locked / 'r.png'}: Permission denied"]
    assert list(locked.iterdir()) == []


def test_a_pytorch_examples_model_stylizes_through_the_cli(cli, tmp_path: Path) -> None:
    reference = randomized()
    torch.save(reference.state_dict(), tmp_path / "udnie.model")  # pytorch/examples' own suffix
    Image.fromarray(photo(30, 44, seed=11)).save(tmp_path / "in.png")
    result = cli("image", tmp_path / "in.png", "--model", tmp_path / "udnie.model", "--out", tmp_path / "out.png")
    assert result.code == 0, result.err
    pixels = torch.from_numpy(np.array(Image.open(tmp_path / "in.png"))).permute(2, 0, 1)[None].float() / 255
    expected = stylize_like_examples(reference, pixels)[0, :, :30, :44].permute(1, 2, 0).numpy()  # theirs pads to 4
    written = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    assert written.shape == expected.shape and np.abs(written - expected.astype(int)).max() <= 1


def test_version_comes_from_the_package_metadata(cli) -> None:
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"stylize {importlib.metadata.version('stylize')}"
