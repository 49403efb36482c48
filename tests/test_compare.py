from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stylize.report.compare as compare_module
from stylize import load_model, save_model
from stylize.errors import InvalidSetting, StylizeError
from stylize.images import encode_thumbnail, load_image, resize_long_side, to_uint8
from stylize.model.network import NetConfig, TransformerNet
from stylize.report.compare import (
    CONTRAST_FACTORS,
    NEIGHBOURS,
    CompareSettings,
    adjust_contrast,
    compare,
    lattice_strength,
    mean_abs_difference,
)
from stylize.report.sheet import SheetLayout, norm_label, render_sheet, sheet_rows
from stylize.training.losses import style_loss, style_targets
from stylize.training.vgg import LossNetwork

from .helpers import photo, photo_tensor, write_model

WHITE = 255


@pytest.fixture
def contents(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "wide.png", tmp_path / "tall.jpg"]
    Image.fromarray(photo(30, 44, seed=3)).save(paths[0])
    Image.fromarray(photo(40, 28, seed=4)).save(paths[1])
    return paths


@pytest.fixture
def pair(tmp_path: Path, style_image: Path) -> Path:
    folder = tmp_path / "pair"
    folder.mkdir()
    thumbnail = encode_thumbnail(load_image(style_image).rgb)
    for norm in ("batch", "instance"):
        # Random weights, but like a trained network's in what matters here: first-layer
        # responses far above the norm's epsilon, and outputs spread over [0, 1].
        torch.manual_seed(0)
        network = TransformerNet(NetConfig(norm=norm))
        with torch.no_grad():
            network.conv1.conv2d.weight.mul_(30)
            network.conv_out.conv2d.weight.mul_(10)
            network.conv_out.conv2d.bias.fill_(0.5)
            network.train()(torch.cat([photo_tensor(32, 32, seed) for seed in range(4)]))
        save_model(folder / f"swirls-{norm}.safetensors", network.eval(), style="swirls", training={},
                   style_thumbnail=thumbnail)  # fmt: skip
    return folder


def test_contrast_is_scaled_around_each_channel_mean_without_touching_the_input() -> None:
    images = photo_tensor(20, 24, seed=1)
    before = images.clone()
    low = adjust_contrast(images, 0.5)
    assert torch.equal(images, before)
    torch.testing.assert_close(low.mean(dim=(-2, -1)), images.mean(dim=(-2, -1)))
    torch.testing.assert_close(low.std(dim=(-2, -1)), images.std(dim=(-2, -1)) * 0.5)
    torch.testing.assert_close(adjust_contrast(images, 1.0), images)
    assert adjust_contrast(images, 3.0).min() >= 0 and adjust_contrast(images, 3.0).max() <= 1


def test_instance_norm_first_layer_removes_a_contrast_change_up_to_its_epsilon() -> None:
    torch.manual_seed(0)
    network = TransformerNet(NetConfig(norm="instance")).eval()
    norm1, k = network.norm1, 0.5
    images = photo_tensor(24, 24, seed=2)
    with torch.no_grad():
        z = network.conv1(images)
        z_low = network.conv1(adjust_contrast(images, k))
        # The convolution maps mean + k (x - mean) to k z + a per-channel constant...
        centred = z - z.mean(dim=(-2, -1), keepdim=True)
        torch.testing.assert_close(z_low - z_low.mean(dim=(-2, -1), keepdim=True), k * centred, rtol=0, atol=1e-5)
        # ...which instance norm removes but for epsilon: k / sqrt(k^2 var + eps) against 1 / sqrt(var + eps).
        var = z.var(dim=(-2, -1), unbiased=False, keepdim=True)
        gain = k * torch.sqrt(var + norm1.eps) / torch.sqrt(k**2 * var + norm1.eps)
        bias = norm1.bias.view(1, -1, 1, 1)
        predicted = (norm1(z) - bias) * gain + bias
        torch.testing.assert_close(norm1(z_low), predicted, rtol=0, atol=1e-4)
        assert (norm1(z_low) - norm1(z)).abs().max() > 1e-3  # this random layer's variance is near eps
        norm1.eps = 0.0
        torch.testing.assert_close(norm1(z_low), norm1(z), rtol=0, atol=1e-4)


def test_instance_norm_is_far_less_contrast_sensitive_than_batch_norm(pair: Path, contents: list[Path]) -> None:
    comparison = compare(contents, [pair], CompareSettings(size=40, device="cpu"))
    by_norm = {report.info.config.norm: report for report in comparison.reports}
    # IN: x0.5 contrast changes nothing after the first layer; BN's fixed statistics pass it on.
    assert by_norm["instance"].contrast_sensitivity < 0.05
    assert by_norm["batch"].contrast_sensitivity > 2.0
    # In train mode BN takes statistics from the neighbours; IN never looks at them.
    assert by_norm["instance"].batch_sensitivity < 0.01 and by_norm["instance"].train_eval_gap < 0.01
    assert by_norm["batch"].batch_sensitivity > 1.0 and by_norm["batch"].train_eval_gap > 1.0


def test_comparing_never_changes_batch_norm_running_statistics(
    pair: Path, contents: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = []

    def keep(*args, **kwargs):
        loaded.append(load_model(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(importlib.import_module("stylize.report.compare"), "load_model", keep)
    compare(contents, [pair / "swirls-batch.safetensors"], CompareSettings(size=32, device="cpu"))
    (used,) = loaded  # the model object compare ran in train mode among neighbours
    fresh = load_model(pair / "swirls-batch.safetensors").network.state_dict()
    buffers = {name: value for name, value in used.network.state_dict().items() if "running" in name}
    assert len(buffers) == 2 * 15 and all(torch.equal(value, fresh[name]) for name, value in buffers.items())
    assert not used.network.training


def test_sheet_has_the_grid_size_cells_and_labels(pair: Path, contents: list[Path]) -> None:
    comparison = compare(contents, [pair], CompareSettings(size=44, device="cpu"))
    assert [report.info.config.norm for report in comparison.reports] == ["instance", "batch"]
    sheet = np.asarray(render_sheet(comparison))
    layout = SheetLayout.of(comparison, sheet_rows(comparison))
    rows = 1 + len(CONTRAST_FACTORS) + len(NEIGHBOURS)
    assert layout.row_heights[0] >= 30 and len(layout.row_heights) == 2 * rows
    assert sheet.shape == (layout.size[1], layout.size[0], 3)
    assert layout.size[0] == 16 * 2 + 210 + 6 + 3 * 44 + 2 * 6  # labels, content and two models, 44 px wide

    for column, runs in enumerate(comparison.outputs, start=1):
        for index, run in enumerate(runs):
            top, left = layout.row_top(index * rows), layout.column_left(column)
            expected = to_uint8(run.plain)[0].permute(1, 2, 0).numpy()
            height, width = expected.shape[:2]
            assert np.array_equal(sheet[top : top + height, left : left + width], expected)
            low = to_uint8(run.contrast[0.5])[0].permute(1, 2, 0).numpy()
            top = layout.row_top(index * rows + 1)
            assert np.array_equal(sheet[top : top + height, left : left + width], low)
    # Labels are drawn: the label column and the header hold dark pixels.
    labels = sheet[layout.grid_top : layout.footer_top, 16 : 16 + 210]
    assert (labels < 128).any(axis=2).sum() > 200
    header = sheet[16 : layout.grid_top, layout.column_left(1) :]
    assert (header < 128).any(axis=2).sum() > 200
    footer = sheet[layout.footer_top :, layout.column_left(1) :]
    assert (footer < 128).any(axis=2).sum() > 100


def test_stylized_only_sheet_is_a_gallery_of_plain_results(
    cli, tmp_path: Path, pair: Path, contents: list[Path]
) -> None:
    full, gallery = tmp_path / "full.png", tmp_path / "gallery.png"
    for out, extra in ((full, ()), (gallery, ("--stylized-only",))):
        result = cli("compare", *contents, "--model", pair, "--out", out, "--size", "32", "--device", "cpu", *extra)
        assert result.code == 0, result.err
    assert json.loads(full.with_suffix(".json").read_text()) == json.loads(gallery.with_suffix(".json").read_text())
    comparison = compare(contents, [pair], CompareSettings(size=32, device="cpu", stylized_only=True))
    grid = sheet_rows(comparison)
    assert [row.label for row in grid] == ["wide.png: stylized (eval mode)", "tall.jpg: stylized (eval mode)"]
    layout = SheetLayout.of(comparison, grid)
    sheet = np.asarray(Image.open(gallery))
    assert sheet.shape[:2] == (layout.size[1], layout.size[0]) and layout.size[1] < Image.open(full).size[1]
    for index in range(len(grid)):
        for column, cell in enumerate(
            [comparison.contents[index], *(runs[index].plain for runs in comparison.outputs)]
        ):
            expected = to_uint8(cell)[0].permute(1, 2, 0).numpy()
            top, left = layout.row_top(index), layout.column_left(column)
            assert np.array_equal(sheet[top : top + expected.shape[0], left : left + expected.shape[1]], expected)


def test_compare_through_the_cli_writes_sheet_and_json(cli, tmp_path: Path, pair: Path, contents: list[Path]) -> None:
    out = tmp_path / "sheets" / "sheet.png"
    result = cli("compare", *contents, "--model", pair, "--out", out, "--size", "32", "--device", "cpu")
    assert result.code == 0, result.err
    assert f"wrote {out} and {out.with_suffix('.json')}" in result.out
    assert "swirls-instance" in result.out and "Δ contrast" in result.out
    assert "losses: no loss network" in result.err  # random models, no VGG weights recorded or cached
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert numbers["contents"] == ["wide.png", "tall.jpg"]
    assert [model["norm"] for model in numbers["models"]] == ["instance", "batch"]
    assert numbers["models"][0]["batch_sensitivity"] < 0.01 and numbers["models"][1]["batch_sensitivity"] > 1
    assert numbers["models"][0]["content_loss"] is None
    comparison = compare(contents, [pair], CompareSettings(size=32, device="cpu"))
    layout = SheetLayout.of(comparison, sheet_rows(comparison))
    assert len(layout.row_heights) == 2 * (1 + len(CONTRAST_FACTORS) + len(NEIGHBOURS))
    assert Image.open(out).size == layout.size and layout.size[0] == 16 * 2 + 210 + 6 + 3 * 32 + 2 * 6


def test_contents_of_the_same_name_keep_distinct_labels(tmp_path: Path, pair: Path) -> None:
    for index, trip in enumerate(["trip1", "trip2"]):
        (tmp_path / trip).mkdir()
        Image.fromarray(photo(30, 30, seed=index)).save(tmp_path / trip / "photo.png")
    contents = [tmp_path / "trip1" / "photo.png", tmp_path / "trip2" / "photo.png", tmp_path / "pair" / "x.png"]
    Image.fromarray(photo(30, 30, seed=5)).save(contents[2])
    comparison = compare(contents, [pair / "swirls-instance.safetensors"], CompareSettings(size=32, device="cpu"))
    assert comparison.content_names == [str(contents[0]), str(contents[1]), "x.png"]


def test_a_bundled_style_name_stands_for_all_its_norms(
    cli, tmp_path: Path, pair: Path, contents: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(pair / "swirls-ibn.safetensors", norm="ibn", style="swirls")
    write_model(pair / "other-batch.safetensors", norm="batch", style="other")
    monkeypatch.setenv("STYLIZE_MODELS", str(pair))
    comparison = compare(contents[:1], ["swirls"], CompareSettings(size=20, device="cpu"))
    assert [report.info.name for report in comparison.reports] == ["swirls-instance", "swirls-batch", "swirls-ibn"]
    result = cli("compare", contents[0], "--model", "swirls-batch", "--model", "other-batch",
                 "--out", tmp_path / "two.png", "--size", "20", "--device", "cpu")  # fmt: skip
    assert result.code == 0, result.err
    assert [m["name"] for m in json.loads((tmp_path / "two.json").read_text())["models"]] == [
        "swirls-batch",
        "other-batch",
    ]


def test_losses_are_measured_as_the_model_was_trained(
    tmp_path: Path, contents: list[Path], style_image: Path, vgg_weights: Path
) -> None:
    record = {
        "loss_network": "vgg16",
        "loss_weights": str(vgg_weights),
        "content_layer": "relu2_2",
        "style_layers": ["relu1_2", "relu2_2"],
        "style_image": str(style_image),
        "style_size": 32,
        "data": str(tmp_path),
        "out": str(tmp_path / "m.safetensors"),
    }
    model = write_model(tmp_path / "m.safetensors", training=record)
    comparison = compare(contents, [model], CompareSettings(size=32, device="cpu"))
    report = comparison.reports[0]
    assert report.losses.content is not None and report.losses.content > 0
    assert report.losses.style is not None and report.losses.style > 0
    assert report.losses.source == "vgg16 (vgg16-small.pth), style image"
    # The strength: the outputs' style loss over the photos' own, in all and per layer.
    network = LossNetwork("vgg16", ["relu1_2", "relu2_2"], vgg_weights)
    with torch.no_grad():
        targets = style_targets(network(resize_long_side(load_image(style_image).rgb, 32)), ["relu1_2", "relu2_2"])
        photos = [network(image) for image in comparison.contents]
        outputs = [network(run.plain) for run in comparison.outputs[0]]
        for layers in (None, ["relu1_2"], ["relu2_2"]):
            chosen = {layer: targets[layer] for layer in layers or targets}
            ratio = sum(float(style_loss(f, chosen)) for f in outputs) / sum(
                float(style_loss(f, chosen)) for f in photos
            )
            losses = report.losses
            measured = losses.style_vs_photo if layers is None else losses.style_vs_photo_per_layer[layers[0]]
            assert measured == pytest.approx(ratio, rel=1e-5)
    assert set(report.losses.style_vs_photo_per_layer) == {"relu1_2", "relu2_2"}

    # Without the style image file the thumbnail in the model stands in; without weights, no numbers.
    thumbnail = encode_thumbnail(load_image(style_image).rgb)
    moved = write_model(tmp_path / "moved.safetensors", training={**record, "style_image": "/gone.png"},
                        style_thumbnail=thumbnail)  # fmt: skip
    assert (
        compare(contents, [moved], CompareSettings(size=32, device="cpu"))
        .reports[0]
        .losses.source.endswith("style thumbnail")
    )
    lost = write_model(tmp_path / "lost.safetensors", training={**record, "loss_weights": "/gone.pth"})
    missing = compare(contents, [lost], CompareSettings(size=32, device="cpu")).reports[0]
    assert missing.losses.content is None and missing.losses.source == "no loss network: /gone.pth not found"
    given = CompareSettings(size=32, device="cpu", loss_network_weights=vgg_weights)
    assert compare(contents, [lost], given).reports[0].losses.content == pytest.approx(report.losses.content)


def _trained_record(tmp_path: Path, style_image: Path, vgg_weights: Path) -> dict[str, object]:
    return {
        "style_image": str(style_image), "data": str(tmp_path), "out": str(tmp_path / "m.safetensors"),
        "loss_network_weights": str(vgg_weights), "content_layer": "relu2_2", "style_layers": ["relu1_2", "relu2_2"],
        "style_size": 32, "style_weight": 4.0,
    }  # fmt: skip


def test_the_reference_column_optimises_the_first_models_loss(
    cli, tmp_path: Path, contents: list[Path], style_image: Path, vgg_weights: Path, monkeypatch
) -> None:
    thumbnail = encode_thumbnail(load_image(style_image).rgb)
    record = _trained_record(tmp_path, style_image, vgg_weights)
    model = write_model(tmp_path / "m.safetensors", training=record, style_thumbnail=thumbnail)
    reads = []
    read_style = compare_module._LossMeter._style_image
    monkeypatch.setattr(compare_module._LossMeter, "_style_image", lambda *a: reads.append(1) or read_style(*a))
    comparison = compare(contents, [model], CompareSettings(size=32, device="cpu", reference_steps=8))
    assert len(reads) == 1  # the model's loss is set up once, for its column and the reference's
    reference, report = comparison.reference, comparison.reports[0]
    assert reference is not None and reference.steps == 8
    assert [out.shape for out in reference.outputs] == [image.shape for image in comparison.contents]
    # Measured as the model is: the same loss, and far closer to the painting than the photo.
    assert reference.losses.source == report.losses.source == "vgg16 (vgg16-small.pth), style image"
    assert reference.losses.style_vs_photo is not None and reference.losses.style_vs_photo < 0.8
    assert set(reference.losses.style_vs_photo_per_layer) == {"relu1_2", "relu2_2"}
    # On the sheet: one more column, filled on the plain rows only.
    grid = sheet_rows(comparison)
    layout = SheetLayout.of(comparison, grid)
    sheet = np.asarray(render_sheet(comparison))
    left = layout.column_left(2)
    assert layout.size[0] == 16 * 2 + 210 + 6 + 3 * 32 + 2 * 6
    rows = 1 + len(CONTRAST_FACTORS) + len(NEIGHBOURS)
    for index, output in enumerate(reference.outputs):
        expected = to_uint8(output)[0].permute(1, 2, 0).numpy()
        top = layout.row_top(index * rows)
        assert np.array_equal(sheet[top : top + expected.shape[0], left : left + expected.shape[1]], expected)
        below = layout.row_top(index * rows + 1)
        assert (sheet[below : below + expected.shape[0], left : left + expected.shape[1]] == sheet[0, 0]).all()
    out = tmp_path / "sheet.png"
    result = cli("compare", *contents, "--model", model, "--out", out, "--size", "32", "--device", "cpu",
                 "--reference-steps", "2")  # fmt: skip
    assert result.code == 0, result.err
    assert "optimisation, 2 steps" in result.out
    numbers = json.loads(out.with_suffix(".json").read_text())["reference"]
    assert numbers["steps"] == 2 and 0 < numbers["style_vs_photo"] < 1


def test_a_reference_needs_the_first_models_loss(
    cli, tmp_path: Path, pair: Path, contents: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("compare", *contents, "--model", pair, "--out", tmp_path / "s.png", "--size", "32",
                 "--device", "cpu", "--reference-steps", "2")  # fmt: skip
    assert result.code == 2 and result.error_lines == [
        "error: --reference-steps needs swirls-instance's loss network and style image: "
        "no loss network: vgg16's ImageNet weights are not downloaded"
    ]
    assert not (tmp_path / "s.png").exists()

    def no_stylizing(*args: object) -> None:
        raise AssertionError("models ran before the reference's loss was checked")

    monkeypatch.setattr(compare_module, "stylize_variants", no_stylizing)
    with pytest.raises(InvalidSetting, match="needs swirls-instance's loss network"):
        compare(contents, [pair], CompareSettings(size=32, device="cpu", reference_steps=2))
    with pytest.raises(InvalidSetting, match="must not be negative"):
        CompareSettings(reference_steps=-1)
    with pytest.raises(StylizeError, match="at least one content image and one model"):
        compare([], [pair], CompareSettings(reference_steps=2))


def test_mean_abs_difference_is_on_the_0_255_scale() -> None:
    a = torch.zeros(1, 3, 4, 4)
    assert mean_abs_difference(a, a + 0.5) == pytest.approx(127.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.png", "--model", "{pair}"], "no such file: missing.png"),
        (["{content}", "--model", "nope"], "no model file or bundled model named 'nope'"),
        (["{content}", "--model", "{pair}", "--out", "{tmp}/sheet.xyz"], "cannot write images with extension '.xyz'"),
        (["{content}", "--model", "{pair}", "--size", "4"], "--size must be at least 16 pixels"),
        (["{content}", "--model", "{pair}", "--loss-network", "alexnet"], "--loss-network must be one of: vgg16"),
        (["{content}", "--model", "{tmp}"], "no model files (*.safetensors) in folder"),
        (["{content}", "--model", "{pair}", "--out", "{content}"], "refusing to overwrite the input"),
        (["{json}", "{content}", "--model", "{pair}", "--out", "{sheet}"], "refusing to overwrite the input"),
    ],
)
def test_bad_compare_input_is_one_line_and_writes_nothing(
    cli,
    tmp_path: Path,
    pair: Path,
    contents: list[Path],
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    numbers = tmp_path / "sheet.json"
    numbers.write_text("{}")  # an input that a sheet's numbers beside it would replace
    values = {"pair": pair, "content": contents[0], "tmp": empty, "json": numbers, "sheet": numbers.with_suffix(".png")}
    filled = [arg.format(**values) for arg in args]
    before = set(tmp_path.rglob("*"))
    result = cli("compare", *filled, "--device", "cpu")
    assert result.code == 2 and len(result.error_lines) == 1 and message in result.err, result.err
    assert set(tmp_path.rglob("*")) == before


def test_lattice_strength_finds_a_period_4_grid_and_not_a_smooth_photo() -> None:
    photo = photo_tensor(96, 128, seed=3)
    rows, cols = torch.meshgrid(torch.arange(96), torch.arange(128), indexing="ij")
    grid = ((rows % 4 == 0) | (cols % 4 == 0)).float() * 0.15
    gridded = (photo + grid).clamp(0, 1)
    assert lattice_strength(gridded) - lattice_strength(photo) > 10.0
    # A shift or a mirror of the same grid scores the same: it is the period that counts.
    assert lattice_strength(gridded.roll(1, dims=-1)) == pytest.approx(lattice_strength(gridded), abs=0.5)
    assert abs(lattice_strength(photo.flip(-1)) - lattice_strength(photo)) < 1.0


def test_columns_are_headed_by_their_norm_in_words() -> None:
    assert [norm_label(norm) for norm in ("instance", "batch-instance", "none")] == [
        "instance norm",
        "batch-instance norm",
        "no norm",
    ]
