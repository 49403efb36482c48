"""The benchmarks run end to end (tiny sizes) and write the JSON they promise."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import memory, speed, train


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
    assert fp32["settings"]["precision"] == "auto" and fp32["dtype"] == "torch.float32"
    assert fp32["max_diff_levels"] <= 1 and bf16["dtype"] == "torch.bfloat16"
    assert 0 < fp32["gflop"] < reference["gflop"]  # the fast form does fewer FLOPs
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vgg_weights: Path
) -> None:
    out = tmp_path / "train.json"
    monkeypatch.setattr(train, "STYLE_LAYERS", ("relu1_2", "relu2_2"))  # the small test VGG ends at relu2_2
    _run(train, monkeypatch, "--loss-network-weights", str(vgg_weights), "--sizes", "32", "--steps", "1",
         "--warmup", "1", "--out", str(out))  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    assert [row["config"] for row in rows] == [variant.name for variant in train.PATHS]
    assert rows[0]["speedup"] == 1.0 and all(row["images_per_s"] > 0 for row in rows)
    assert all(row["speedup"] == pytest.approx(row["images_per_s"] / rows[0]["images_per_s"]) for row in rows)
    assert {row["steps"] for row in rows} == {16}
