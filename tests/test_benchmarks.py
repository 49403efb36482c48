"""The benchmarks run end to end (tiny sizes) and write the JSON they promise."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import (
    common,
    flicker,
    flicker_curves,
    memory,
    optimise,
    precision,
    process,
    speed,
    stabilize,
    train,
    video_frames,
)
from stylize.model.network import ReflectConv
from stylize.report.chart import COLOURS, MARGIN, PANEL_WIDTH

from .helpers import photo, photo_tensor, random_network, write_model


def _run(module, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    module.main()


def test_speed_benchmark_writes_medians_ratios_and_differences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "speed.json"
    _run(speed, monkeypatch, "--device", "cpu", "--size", "40x32", "--repeats", "2", "--only", "4,7", "--out", str(out))
    record = json.loads(out.read_text())
    assert record["machine"]["device"] == "cpu" and record["settings"]["size"] == [40, 32]
    reference, fp32, bf16 = record["results"]
    assert reference["config"].startswith("reference") and reference["speedup"] == 1.0
    assert len(fp32["runs_s"]) == 2 and fp32["speedup"] == pytest.approx(reference["median_s"] / fp32["median_s"])
    assert fp32["settings"]["precision"] == "fp32" and fp32["dtype"] == "torch.float32"
    assert fp32["max_diff_levels"] <= 1 and bf16["dtype"] == "torch.bfloat16"
    # Counted, not guessed; the fast form's FLOPs may be more (space-to-depth) or fewer (nearest sub-pixel).
    assert 0.2 < fp32["gflop"] / reference["gflop"] < 5
    assert 0.2 < fp32["peak_rss_gib"] < 64  # GiB of a process that has torch loaded, not bytes or MiB


@pytest.mark.slow
def test_memory_benchmark_measures_each_path_in_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "memory.json"
    monkeypatch.chdir(Path(__file__).parents[1])  # children run `python -m benchmarks.memory`
    _run(memory, monkeypatch, "--device", "cpu", "--size", "768x512", "--out", str(out))
    results = json.loads(out.read_text())["results"]
    assert [row["config"] for row in results] == list(memory.CONFIGS)
    growth = {row["config"]: (row["peak_rss_gib"] - row["rss_before_gib"]) * 2**30 for row in results}
    reference, untiled, banded = (growth[name] for name in list(memory.CONFIGS)[:3])
    one_map = 32 * 768 * 512 * 4  # a 32-channel float32 map at full size: the plain network holds several
    assert reference > 2 * one_map, "each child measured its own run"
    assert banded < untiled, "bands need less scratch memory than whole maps"


def test_train_benchmark_times_every_path_against_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], vgg_weights: Path
) -> None:
    out = tmp_path / "train.json"

    def child_here(module: str, arguments: list[str]) -> object:  # the child's own code, without a process start
        with monkeypatch.context() as patch:
            _run(train, patch, *arguments)
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    monkeypatch.setattr(train, "run_child", child_here)
    # Every row at both sizes; the small test VGG ends at relu2_2.
    _run(train, monkeypatch, "--loss-network-weights", str(vgg_weights), "--style-layers", "relu1_2,relu2_2",
         "--sizes", "32,64", "--steps", "1", "--warmup", "1", "--rounds", "1", "--out", str(out))  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    variants = train.paths_for(torch.device("cpu"))
    paths = len(variants)
    assert [row["config"] for row in rows] == [variant.name for variant in variants] * 2
    assert [row["size"] for row in rows] == [32] * paths + [64] * paths
    assert [row["steps"] for row in rows] == [16] * paths + [4] * paths  # the same pixels at each size
    for size_rows in (rows[:paths], rows[paths:]):  # each size against its own reference
        reference = size_rows[0]["images_per_s"]
        assert all(row["speedup"] == pytest.approx(row["images_per_s"] / reference) for row in size_rows)
    assert all(row["images_per_s"] > 0 for row in rows)


def test_optimise_benchmark_times_both_paths_to_the_same_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vgg_weights: Path, style_image: Path
) -> None:
    out = tmp_path / "optimise.json"
    _run(optimise, monkeypatch, "--loss-network-weights", str(vgg_weights), "--style", str(style_image),
         "--style-layers", "relu1_2,relu2_2", "--content-layer", "relu2_2", "--sizes", "64", "--steps", "3",
         "--reference-steps", "4", "--out", str(out))  # fmt: skip
    (row,) = json.loads(out.read_text())["results"]
    assert row["size"] == [48, 64] and set(row["seconds"]) == {"reference", "stylize", "stylize_to_reference_loss"}
    assert row["seconds"]["reference"] > 0 and row["final_loss"]["reference"] > 0
    reached = row["seconds"]["stylize_to_reference_loss"]  # NaN if never
    assert math.isnan(reached) or reached <= row["seconds"]["stylize"]
    assert row["speedup_to_reference_loss"] == pytest.approx(row["seconds"]["reference"] / reached, nan_ok=True)


def test_without_native_bf16_the_train_benchmark_runs_every_row_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "native_bf16", lambda device: False)
    rows = train.paths_for(torch.device("cpu"))
    assert not any(row.bf16 or row.vgg_bf16 for row in rows)
    bf16_only = ("+ bf16 autocast", "+ VGG weights in bf16 once")
    assert [row.name for row in rows] == [row.name for row in train.PATHS if row.name not in bf16_only]
    assert len(rows) == len(train.PATHS) - 2 and rows[0] == train.REFERENCE and rows[-1] == train.PATHS[-1]
    monkeypatch.setattr(train, "native_bf16", lambda device: True)
    assert train.paths_for(torch.device("cpu")) == train.PATHS


def test_train_benchmark_times_stylize_train_once_per_norm_in_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vgg_weights: Path
) -> None:
    out = tmp_path / "train-norms.json"
    _run(train, monkeypatch, "--loss-network-weights", str(vgg_weights), "--style-layers", "relu1_2,relu2_2",
         "--sizes", "32", "--steps", "1", "--warmup", "1", "--rounds", "2", "--norms", "weight,batch",
         "--out", str(out))  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    assert [row["config"] for row in rows] == ["stylize train --norm weight", "stylize train --norm batch"]
    assert all(len(row["rounds"]) == 2 and row["images_per_s"] == statistics.median(row["rounds"]) for row in rows)
    assert all(row["steps"] == 16 and row["images_per_s"] > 0 for row in rows)


@pytest.mark.slow
def test_process_benchmark_times_both_tools_on_the_same_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "process.json"
    monkeypatch.chdir(Path(__file__).parents[1])  # children run `python -m benchmarks...`
    _run(process, monkeypatch, "--size", "64x48", "--runs", "1", "--out", str(out))
    record = json.loads(out.read_text())
    assert set(record["whole_s"]) == {
        f"{tool}, {suffix}" for tool in ("stylize image", "neural_style.py eval") for suffix in (".jpg", ".png")
    }
    assert all(len(runs) == 1 and runs[0] > 0 for runs in record["whole_s"].values())
    assert all(set(split) == set(process.PHASES) for split in record["phases_s"].values())
    assert process.PHASES == ("imports", "load", "decode", "to tensor", "network", "to pixels", "encode")
    differences = record["png_outputs_differ_from_peer_by"]
    # At fp32 stylize rounds where the peer truncates to 8 bits: the same weights give the same picture.
    assert differences["fp32"]["max_levels"] <= 1.01
    # The timed default runs bf16 on this CPU: near the peer's picture, not equal to it.
    assert differences["default"]["mean_levels"] < 1.5
    assert record["startup_s"].keys() == process.startup_commands().keys()


def test_precision_benchmark_covers_every_bundled_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STYLIZE_MODELS", raising=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        Image.fromarray(photo(40, 56, seed=seed)).save(photos / f"p{seed}.png")
    out = tmp_path / "precision.json"
    _run(precision, monkeypatch, "--photos", str(photos), "--count", "2", "--size", "48", "--out", str(out))
    record = json.loads(out.read_text())
    assert record["photos"] == ["p0.png", "p1.png"] and record["size"] == 48
    assert set(record["models"]) == {path.stem for path in (Path(__file__).parents[1] / "models").glob("*.safetensors")}
    for model in record["models"].values():
        assert len(model["photos"]) == 2
        assert 0 < model["summary"]["mean"] <= model["summary"]["max"] <= 255  # bf16 really ran, in levels


def test_flicker_benchmark_measures_every_model_on_every_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style_image: Path, vgg_weights: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        Image.fromarray(photo(64, 80, seed=seed)).save(photos / f"p{seed}.png")
    models = [str(write_model(tmp_path / f"{norm}.safetensors", norm=norm)) for norm in ("instance", "batch")]
    out = tmp_path / "flicker.json"
    small = {"network": "vgg16", "layer_weights": {"relu1_2": 1.0, "relu2_2": 1.0}}
    meter = flicker.StyleMeter
    monkeypatch.setattr(flicker, "StyleMeter", lambda painting, weights: meter(painting, weights, **small))
    _run(flicker, monkeypatch, "--photos", str(photos), "--count", "2", "--size", "32", "48", "--frames", "4",
         "--models", *models, "--stabilize", "--style-image", str(style_image), "--loss-network-weights",
         str(vgg_weights), "--out", str(out))  # fmt: skip
    record = json.loads(out.read_text())
    assert record["photos"] == ["p0.png", "p1.png"] and record["size"] == [32, 48]
    assert set(record["models"]) == {"instance", "batch", "instance stabilized", "batch stabilized"}
    for model in record["models"].values():
        clips = [row["clip"] for row in model["summary"]]
        assert clips == ["pan and zoom", "exposure ramp", "sensor noise", "moving object", "hand-held"]
        assert all(len(row) == 5 and len(row[0]["per_frame"]) == 3 for row in model["photos"])
        pan, ramp = model["summary"][0], model["summary"][1]
        assert 0 <= pan["warping_error"] < 255 and pan["relative_warping_error"] >= 0
        assert ramp["source_colour_drift"] > 1  # the ramp darkens by a stop: levels, not fractions
    assert record["models"]["instance"]["summary"][0]["warping_error"] > 1  # the random network really ran
    steadied = record["models"]["instance stabilized"]["summary"][0]
    assert steadied["warping_error"] != record["models"]["instance"]["summary"][0]["warping_error"]  # it really ran
    for name in ("instance", "batch"):
        plain, stabilized = record["models"][name]["summary"], record["models"][f"{name} stabilized"]["summary"]
        for before, after in zip(plain, stabilized, strict=True):
            assert before["style_loss"] > 0 and after["style_loss"] > 0
            assert after["style_loss_vs_frame_by_frame"] == pytest.approx(after["style_loss"] / before["style_loss"])
    monkeypatch.setattr(flicker, "measure", lambda *args: pytest.fail("measured without both style options"))
    with pytest.raises(SystemExit):
        _run(flicker, monkeypatch, "--photos", str(photos), "--style-image", str(style_image), "--out", str(out))


def _flicker_record(models: dict[str, float]) -> dict[str, object]:
    """benchmarks.flicker's JSON for two photos and two clips: each model's error
    per frame is its value, rising by 1 a frame, on the first photo and 1 less on the second."""
    clips = ("pan and zoom", "sensor noise")

    def photo_rows(base: float) -> list[dict[str, object]]:
        return [{"clip": clip, "per_frame": [base + frame for frame in range(5)]} for clip in clips]

    return {
        "models": {
            name: {"summary": [{"clip": clip} for clip in clips], "photos": [photo_rows(value), photo_rows(value - 1)]}
            for name, value in models.items()
        }
    }


def test_flicker_curves_draw_each_models_mean_error_per_frame_on_every_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _flicker_record({"instance": 3.0, "batch": 10.0, "layer": 50.0})
    panels = flicker_curves.flicker_panels(record, ["batch", "instance"])
    assert [panel.title.split(":")[0] for panel in panels] == ["pan and zoom", "sensor noise"]
    batch, instance = panels[1].series
    assert list(batch.xs) == [1, 2, 3, 4, 5] and batch.ys == [9.5, 10.5, 11.5, 12.5, 13.5]  # mean of the photos
    assert instance.ys[0] == 2.5

    results, out = tmp_path / "flicker.json", tmp_path / "curves.png"
    results.write_text(json.dumps(record))
    _run(flicker_curves, monkeypatch, "--results", str(results), "--model", "instance", "--model", "batch",
         "--out", str(out))  # fmt: skip
    figure = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert figure.shape[1] == 2 * MARGIN + 2 * PANEL_WIDTH
    for colour in COLOURS[:2]:
        columns = np.nonzero((np.abs(figure - np.array(colour)).sum(axis=2) < 10).any(axis=0))[0]
        assert (columns < MARGIN + PANEL_WIDTH).any() and (columns >= MARGIN + PANEL_WIDTH).any()
    assert not (np.abs(figure - np.array(COLOURS[2])).sum(axis=2) < 10).any()  # the layer model was not asked for

    with pytest.raises(SystemExit):
        _run(flicker_curves, monkeypatch, "--results", str(results), "--model", "group", "--out", str(out))


def test_stabilize_benchmark_times_the_network_and_the_stabilizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "p.png"
    Image.fromarray(photo(90, 120, seed=0)).save(source)
    model, out = write_model(tmp_path / "m.safetensors"), tmp_path / "stabilize.json"
    _run(stabilize, monkeypatch, "--photo", str(source), "--sizes", "64x48", "40x32", "--model", str(model),
         "--repeats", "2", "--out", str(out))  # fmt: skip
    record = json.loads(out.read_text())
    assert list(record["results"]) == ["64x48", "40x32"] and record["machine"]["cpu"]
    for result in record["results"].values():
        assert result["network_ms"] > 0 and result["stabilizer_ms"] > 0
        assert result["share"] == pytest.approx(result["stabilizer_ms"] / result["network_ms"])


def test_video_frames_sheet_shows_the_frames_and_their_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "p.png"
    Image.fromarray(photo(90, 120, seed=0)).save(source)
    model, out = write_model(tmp_path / "m.safetensors"), tmp_path / "frames.png"
    _run(
        video_frames,
        monkeypatch,
        "--photo",
        str(source),
        "--model",
        str(model),
        "--size",
        "32",
        "48",
        "--out",
        str(out),
    )
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (4 * 32, 3 * 48, 3)
    frames, changes = sheet[:32].astype(float), sheet[32:64].astype(float)
    assert frames.mean() > 20 and 0 < changes.mean() < frames.mean()  # pictures above, their (darker) changes below


def test_video_frames_with_several_models_shows_each_models_frames_and_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "p.png"
    Image.fromarray(photo(90, 120, seed=0)).save(source)
    first = write_model(tmp_path / "a.safetensors", seed=1)
    second = write_model(tmp_path / "b.safetensors", seed=2)
    out = tmp_path / "norms.png"
    args = ["--photo", str(source), "--model", str(first), "--model", str(second), "--size", "32", "48"]
    _run(video_frames, monkeypatch, *args, "--out", str(out))
    sheet = np.asarray(Image.open(out)).astype(float)
    assert sheet.shape == (2 * 2 * 32, 3 * 48, 3)  # two rows (frames, changes) a model
    a_frames, b_frames = sheet[:32], sheet[64:96]
    assert np.abs(a_frames - b_frames).mean() > 1  # each model's own frames, in the order given
    for changes, frames in ((sheet[32:64], a_frames), (sheet[96:], b_frames)):
        assert 0 < changes.mean() < frames.mean()


def test_the_reference_is_the_same_function_in_pytorch_examples_form() -> None:
    network = random_network()
    plain = common.examples_form(network)
    image = photo_tensor(36, 44, seed=2)
    with torch.no_grad():
        assert (plain(image) - network(image)).abs().max() < 1e-4
    assert type(plain.conv_out) is ReflectConv and type(network.conv_out) is not ReflectConv
    assert type(plain.up1) is not type(network.up1) and plain.up1.conv2d.weight is not network.up1.conv2d.weight
