"""stylize export: ONNX (run with onnxruntime) and TorchScript files match the PyTorch model.

The test extra installs the onnx extra, so nothing here skips: a broken install fails."""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylize import ExportedNetwork, StyleControls, load_image, load_model, load_stylizer, save_model
from stylize.cli import main
from stylize.inference.stylizer import ExportedStylizer

from .helpers import ALL_NORMS, photo, photo_tensor, random_network, write_model


@pytest.fixture(scope="module")
def export_to(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    """Per format, once: (model file, the file `stylize export` wrote from it).
    Batch norm, so the folded form is what gets exported."""
    folder = tmp_path_factory.mktemp("export")
    model = write_model(folder / "mosaic.safetensors", norm="batch", seed=3, style="mosaic")
    made: dict[str, tuple[Path, Path]] = {}

    def export(fmt: str) -> tuple[Path, Path]:
        if fmt not in made:
            out = folder / ("mosaic.onnx" if fmt == "onnx" else "mosaic.pt")
            assert main(["export", str(model), "--format", fmt, "--out", str(out)]) == 0
            made[fmt] = (model, out)
        return made[fmt]

    return export


@pytest.fixture(params=["onnx", "torchscript"])
def exported(request: pytest.FixtureRequest, export_to: Callable[[str], tuple[Path, Path]]) -> tuple[Path, Path]:
    return export_to(request.param)


@pytest.mark.parametrize("shape", [(1, 3, 40, 52), (3, 3, 37, 61), (2, 3, 16, 97), (1, 3, 5, 9)])
def test_exported_file_matches_pytorch_for_any_batch_and_size(exported: tuple[Path, Path], shape: tuple) -> None:
    model, out = exported
    images = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        reference = load_model(model).network(images).clamp(0, 1)
    result = ExportedNetwork(out, torch.device("cpu"))(images)
    assert result.shape == images.shape
    assert (result - reference).abs().max() < 1e-4


def test_onnx_file_runs_in_plain_onnxruntime_with_free_batch_height_width(export_to) -> None:
    model, out = export_to("onnx")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()
    assert image_input.name == "image" and image_input.shape == ["batch", 3, "height", "width"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["name"] == "mosaic" and meta["style"] == "mosaic" and '"norm": "batch"' in meta["network"]
    images = photo_tensor(48, 70, seed=1).repeat(2, 1, 1, 1)
    (output,) = session.run(None, {"image": images.numpy()})
    with torch.no_grad():
        reference = load_model(model).network(images)
    assert np.abs(output - reference.numpy()).max() < 1e-4


def test_onnx_output_is_clamped_inside_the_graph(tmp_path: Path) -> None:
    import onnxruntime

    network = random_network(seed=4)
    with torch.no_grad():
        network.conv_out.conv2d.bias.copy_(torch.tensor([3.0, -3.0, 0.0]))  # red past 1, green below 0
    save_model(tmp_path / "m.safetensors", network, style="s", training={})
    assert main(["export", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "m.onnx")]) == 0
    images = photo_tensor(40, 52, seed=2)
    with torch.no_grad():
        raw = load_model(tmp_path / "m.safetensors").network(images)
    assert raw[:, 0].max() > 1 and raw[:, 1].min() < 0
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"image": images.numpy()})
    assert np.abs(output - raw.clamp(0, 1).numpy()).max() < 1e-4


def test_stylize_image_accepts_the_exported_file(cli, exported: tuple[Path, Path], tmp_path: Path) -> None:
    model, out = exported
    Image.fromarray(photo(33, 45, seed=2)).save(tmp_path / "in.png")
    result = cli("image", tmp_path / "in.png", "--model", out, "--out", tmp_path / "x.png", "--strength", "0.8")
    assert result.code == 0 and result.err == "", result.err
    assert (
        cli("image", tmp_path / "in.png", "--model", model, "--out", tmp_path / "m.png", "--strength", "0.8").code == 0
    )
    from_export, from_model = (np.asarray(Image.open(tmp_path / name), dtype=int) for name in ("x.png", "m.png"))
    assert from_export.shape == (33, 45, 3) and np.abs(from_export - from_model).max() <= 1
    default_name = cli("image", tmp_path / "in.png", "--model", out, "--out", tmp_path / "folder")
    assert default_name.code == 0 and (tmp_path / "folder" / "in-mosaic.png").is_file()


def test_inference_options_on_an_exported_file_earn_a_note(cli, exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = exported
    Image.fromarray(photo(20, 20, seed=3)).save(tmp_path / "in.png")
    result = cli("image", tmp_path / "in.png", "--model", out, "--out", tmp_path / "o.png", "--precision", "bf16")
    assert result.code == 0
    assert result.error_lines == [
        "note: precision, compile and tile settings apply to model files; exported files run as exported"
    ]


def test_export_defaults_to_the_model_name_in_the_current_folder(cli, tmp_path: Path, monkeypatch) -> None:
    model = write_model(tmp_path / "models" / "waves.safetensors")
    monkeypatch.chdir(tmp_path)
    result = cli("export", model, "--format", "torchscript")
    assert result.code == 0 and result.out.strip() == "wrote waves.pt (torchscript)"
    images = photo_tensor(24, 24, seed=4)
    reference = load_stylizer(model, "cpu")(images)
    assert (ExportedNetwork(tmp_path / "waves.pt", torch.device("cpu"))(images) - reference).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "error: --format must be one of: onnx, torchscript; not 'tflite'"),
        (["--out", "{tmp}"], "error: --out {tmp} is a folder; give a file name"),
    ],
)
def test_bad_export_requests_are_one_line(cli, model_file: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = cli("export", model_file, *[arg.format(tmp=tmp_path) for arg in args])
    assert result.code == 2 and result.error_lines == [message.format(tmp=tmp_path)]


def _broken_torchscript(path: Path) -> Path:
    """A zip that looks like an exported TorchScript file but holds no program."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/extra/stylize.json", "{}")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: (tmp / "broken.onnx").write_bytes(b"not a protobuf" * 10) and tmp / "broken.onnx",
         "is not a readable ONNX model"),
        (lambda tmp: _broken_torchscript(tmp / "broken.pt"), "is not a readable TorchScript model"),
    ],
)  # fmt: skip
def test_foreign_or_broken_exported_files_are_one_line(cli, tmp_path: Path, make, message: str) -> None:
    Image.fromarray(photo(20, 20, seed=5)).save(tmp_path / "in.png")
    broken = make(tmp_path)
    result = cli("image", tmp_path / "in.png", "--model", broken, "--out", tmp_path / "o.png")
    assert result.code == 2 and len(result.error_lines) == 1
    assert result.error_lines[0].startswith(f"error: {broken} {message}")
    assert not (tmp_path / "o.png").exists()


def test_missing_onnxruntime_says_which_extra_to_install(cli, export_to, tmp_path: Path, monkeypatch) -> None:
    _, out = export_to("onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    Image.fromarray(photo(20, 20, seed=6)).save(tmp_path / "in.png")
    result = cli("image", tmp_path / "in.png", "--model", out, "--out", tmp_path / "o.png")
    assert result.code == 2
    assert result.error_lines == [f"error: running {out.name} needs onnxruntime: pip install 'stylize[onnx]'"]


def test_controls_work_the_same_on_exported_files(exported: tuple[Path, Path], tmp_path: Path) -> None:
    model, out = exported
    Image.fromarray(photo(30, 30, seed=7)).save(tmp_path / "in.png")
    controls = StyleControls(preserve_color=True, scale=0.5)
    image = load_image(tmp_path / "in.png")
    a = ExportedStylizer(ExportedNetwork(out, torch.device("cpu")), controls).stylize(image).rgb
    b = load_stylizer(model, "cpu", controls=controls).stylize(image).rgb
    assert (a - b).abs().max() < 1e-4


def test_missing_onnx_exporter_says_which_extra_to_install(cli, model_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    result = cli("export", model_file, "--out", tmp_path / "m.onnx")
    assert result.code == 2
    assert result.error_lines == ["error: exporting to ONNX needs the onnx extra: pip install 'stylize[onnx]'"]
    assert not (tmp_path / "m.onnx").exists() and not list(tmp_path.glob(".m.onnx*"))


@pytest.mark.slow
@pytest.mark.parametrize("norm", ALL_NORMS)
def test_every_norm_exports_to_onnx_and_matches(tmp_path: Path, norm: str) -> None:
    import onnxruntime

    model = write_model(tmp_path / f"{norm}.safetensors", norm=norm, seed=5)
    assert main(["export", str(model), "--out", str(tmp_path / f"{norm}.onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / f"{norm}.onnx"), providers=["CPUExecutionProvider"])
    images = photo_tensor(36, 52, seed=6)
    (output,) = session.run(None, {"image": images.numpy()})
    with torch.no_grad():
        reference = load_model(model).network(images).clamp(0, 1)
    assert np.abs(output - reference.numpy()).max() < 1e-4
