from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import stylize.model.checkpoints as checkpoints
import stylize.training.loop as training
from stylize import StylizeError, TrainConfig, TrainingInterrupted, load_model, save_model, train
from stylize.devices import compute_dtype, keep_freed_memory
from stylize.images import decode_thumbnail
from stylize.model.checkpoints import Checkpoint
from stylize.model.network import NetConfig, TransformerNet
from stylize.training.config import CPU_RECIPE, GPU_RECIPE, TrainingRecord, _saved_settings
from stylize.training.data import batches
from stylize.training.losses import LossTerms

from .helpers import assert_same_weights, count_steps, random_network, train_args, write_model


def test_train_through_the_cli_writes_model_metrics_and_checkpoints(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    out = tmp_path / "swirls.safetensors"
    result = cli(*train_args(style_image, photos, out, vgg_weights, "--checkpoint-every", "2", "--norm", "batch"))
    assert result.code == 0, result.err
    assert f"wrote {out}" in result.out

    model = load_model(out)
    assert model.info.config.norm == "batch" and model.info.style == "swirls"
    training = model.info.training
    assert training["steps_done"] == 4 and training["image_size"] == 32 and training["loss_network"] == "vgg16"
    assert training["style_weight"] == TrainConfig.style_weight and training["style_layers"] == ["relu1_2", "relu2_2"]
    assert training["command"].startswith("stylize train ") and "--norm batch" in training["command"]
    assert training["init"] is None and training["lr_schedule"] == "cosine" and training["precision"] == "auto"
    assert training["loss_weights_sha256"] == hashlib.sha256(vgg_weights.read_bytes()).hexdigest()
    assert training["training_seconds"] >= 0 and training["device"] == "cpu"

    lines = [json.loads(line) for line in (tmp_path / "swirls.metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all(line["total"] == pytest.approx(sum(line[term] for term in ("content", "style", "tv", "shift")))
               for line in lines)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "swirls.ckpt").iterdir()) == ["step-00000002.pt", "step-00000004.pt"]

    with torch.no_grad():
        assert model.network(torch.rand(1, 3, 21, 35)).shape == (1, 3, 21, 35)


def test_training_actually_lowers_the_loss(tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path) -> None:
    config = TrainConfig(
        style_image=style_image, data=photos, out=tmp_path / "m.safetensors", steps=30, batch_size=2,
        image_size=32, style_size=32, loss_network_weights=vgg_weights, style_layers=("relu1_2", "relu2_2"),
        content_layer="relu2_2", device="cpu", workers=0, checkpoint_every=0, lr=3e-3, lr_schedule="constant",
        warmup_steps=0,
    )  # fmt: skip
    totals: list[float] = []
    train(config, on_progress=lambda report: totals.append(report.total))
    assert len(totals) == 30
    assert sum(totals[-5:]) < 0.5 * sum(totals[:5])


def test_corrupt_training_images_are_skipped_and_counted(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(photos, data)
    (data / "notes.jpg").write_text("not a photo")
    good = (data / "photo1.png").read_bytes()
    (data / "nested" / "cut.png").write_bytes(good[: len(good) // 3])
    result = cli(*train_args(style_image, data, tmp_path / "m.safetensors", vgg_weights, "--steps", "8"))
    assert result.code == 0, result.err
    assert "skipped 2 unreadable training images" in result.err
    assert load_model(tmp_path / "m.safetensors").info.training["unreadable_files"] == 2


@pytest.fixture(scope="module")
def other_vgg_weights(tmp_path_factory: pytest.TempPathFactory, vgg_weights: Path) -> Path:
    """The small VGG's file with other random weights: a second loss network."""
    torch.manual_seed(1)
    state = {key: torch.randn_like(value) * value.std() for key, value in torch.load(vgg_weights).items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg16-other.pth"
    torch.save(state, path)
    return path


def test_several_loss_networks_train_against_the_mean_of_their_losses(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, other_vgg_weights: Path
) -> None:
    def first_step(name: str, *networks: Path) -> dict[str, float]:
        extra = [arg for weights in networks[1:] for arg in ("--loss-network", "vgg16", "--loss-weights", str(weights))]
        result = cli(*train_args(style_image, photos, tmp_path / name, networks[0], "--steps", "1", *extra))
        assert result.code == 0, result.err
        return json.loads((tmp_path / name).with_suffix(".metrics.jsonl").read_text().splitlines()[0])

    one, other = first_step("a.safetensors", vgg_weights), first_step("b.safetensors", other_vgg_weights)
    both = first_step("ab.safetensors", vgg_weights, other_vgg_weights)
    for term in ("content", "style", "tv"):
        assert both[term] == pytest.approx((one[term] + other[term]) / 2, rel=1e-4)
    assert one["style"] != pytest.approx(other["style"], rel=0.01)  # else the mean proves nothing
    training = load_model(tmp_path / "ab.safetensors").info.training
    assert training["more_loss_networks"] == ["vgg16"]
    assert training["more_loss_network_weights"] == [str(other_vgg_weights.resolve())]
    assert training["more_loss_weights_sha256"] == [hashlib.sha256(other_vgg_weights.read_bytes()).hexdigest()]
    assert TrainingRecord.of(training).settings.loss_networks == (
        ("vgg16", vgg_weights.resolve()), ("vgg16", other_vgg_weights.resolve())
    )  # fmt: skip


@pytest.mark.parametrize("weights_files", [1, 3])
def test_loss_network_weights_once_per_network_or_never(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, weights_files: int
) -> None:
    more = ["--loss-network", "vgg16"] + ["--loss-weights", str(vgg_weights)] * (weights_files - 1)
    result = cli(*train_args(style_image, photos, tmp_path / "m.safetensors", vgg_weights, *more))
    assert result.code == 2 and result.error_lines == [
        "error: --loss-network-weights must be given once per loss network, or never"
    ]
    assert not (tmp_path / "m.safetensors").exists()


def test_no_training_images_is_one_clear_error(cli, tmp_path: Path, style_image: Path, vgg_weights: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    result = cli(*train_args(style_image, tmp_path / "empty", tmp_path / "m.safetensors", vgg_weights))
    assert result.code == 2 and result.error_lines == [
        f"error: no images (jpg, png, webp, bmp, tif) in {tmp_path / 'empty'} or its sub-folders"
    ]
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("workers", ["1", "0"])
def test_a_folder_where_no_photo_can_be_read_is_one_line_and_leaves_nothing(
    cli, tmp_path: Path, style_image: Path, vgg_weights: Path, workers: str
) -> None:
    data = tmp_path / "lfs"
    data.mkdir()
    for name in ("a.jpg", "b.png"):  # what a clone without Git LFS holds
        (data / name).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 123\n")
    out = tmp_path / "out" / "m.safetensors"
    result = cli(*train_args(style_image, data, out, vgg_weights, "--workers", workers))
    assert result.code == 2 and result.error_lines == [
        f"error: none of the 2 images in {data} can be read (the first: cannot read {data / 'a.jpg'}: not an image)"
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lfs"]


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        raise StylizeError(f"photo {index} went missing")


def test_the_shift_term_is_measured_weighted_logged_and_trained_down(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    logs = {}
    for weight in ("0", "2000"):
        out = tmp_path / f"w{weight}.safetensors"
        args = (
            "--shift-weight",
            weight,
            "--steps",
            "30",
            "--lr",
            "3e-3",
            "--lr-schedule",
            "constant",
            "--warmup-steps",
            "0",
        )
        result = cli(*train_args(style_image, photos, out, vgg_weights, *args))
        assert result.code == 0, result.err
        assert load_model(out).info.training["shift_weight"] == float(weight)
        logs[weight] = [json.loads(line) for line in out.with_suffix(".metrics.jsonl").read_text().splitlines()]
    assert all(line["shift"] == 0.0 for line in logs["0"])
    shifted = logs["2000"]
    assert all(
        line["total"] == pytest.approx(line["content"] + line["style"] + line["tv"] + line["shift"]) for line in shifted
    )
    assert sum(line["shift"] for line in shifted[-5:]) < 0.5 * sum(line["shift"] for line in shifted[:5])


def test_the_steps_shifts_are_fixed_by_seed_and_step_and_never_a_multiple_of_the_stride() -> None:
    shifts = [training._shift(seed=42, step=step) for step in range(200)]
    assert shifts == [training._shift(seed=42, step=step) for step in range(200)]
    assert set(shifts) == {(rows, cols) for rows in range(4) for cols in range(4)} - {(0, 0)}
    assert shifts != [training._shift(seed=43, step=step) for step in range(200)]


def test_an_error_in_a_loader_process_comes_out_as_its_own_line() -> None:
    loader = torch.utils.data.DataLoader(_Unreadable(), batch_size=1, num_workers=1)
    with pytest.raises(StylizeError) as raised:
        next(batches(loader))
    assert str(raised.value) == "photo 0 went missing"


@pytest.mark.parametrize("norm, shift_weight", [("instance", "0"), ("batch", "0"), ("weight", "0"), ("batch", "50")])
def test_resumed_run_ends_with_the_same_weights_bit_for_bit(
    cli,
    tmp_path: Path,
    style_image: Path,
    photos: Path,
    vgg_weights: Path,
    norm: str,
    shift_weight: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = ("--norm", norm, "--shift-weight", shift_weight)
    straight = tmp_path / "straight.safetensors"
    assert cli(*train_args(style_image, photos, straight, vgg_weights, *settings)).code == 0

    resumed = tmp_path / "resumed.safetensors"
    first = cli(
        *train_args(style_image, photos, resumed, vgg_weights, *settings, "--steps", "2", "--checkpoint-every", "2")
    )
    assert first.code == 0, first.err
    # Resume in worker processes this time: the data order must not depend on them.
    steps_run = count_steps(monkeypatch)
    second = cli(*train_args(style_image, photos, resumed, vgg_weights, *settings,
                             "--resume", tmp_path / "resumed.ckpt", "--workers", "2"))  # fmt: skip
    assert second.code == 0, second.err
    assert len(steps_run) == 2  # only steps 3 and 4: it started from the checkpoint
    assert_same_weights(straight, resumed)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed.metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_resume_continues_from_the_checkpoint_weights_not_from_scratch(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    args = (style_image, photos, tmp_path / "m.safetensors", vgg_weights)
    assert cli(*train_args(*args, "--steps", "2", "--checkpoint-every", "2")).code == 0
    checkpoint = tmp_path / "m.ckpt" / "step-00000002.pt"
    shutil.copytree(tmp_path / "m.ckpt", tmp_path / "perturbed.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    state["model"]["conv1.conv2d.weight"] += 0.05  # an instance-norm network notices a shift in the first conv
    torch.save(state, tmp_path / "perturbed.ckpt" / checkpoint.name)

    assert cli(*train_args(*args, "--resume", tmp_path / "m.ckpt")).code == 0
    shutil.copy(tmp_path / "m.safetensors", tmp_path / "plain.safetensors")
    assert cli(*train_args(*args, "--resume", tmp_path / "perturbed.ckpt")).code == 0
    plain, perturbed = load_file(tmp_path / "plain.safetensors"), load_file(tmp_path / "m.safetensors")
    gap = (plain["conv1.conv2d.weight"].float() - perturbed["conv1.conv2d.weight"].float()).abs()
    assert gap.mean() > 0.04  # the perturbation carried through the two remaining steps


def test_only_the_last_three_checkpoints_are_kept(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    out = tmp_path / "m.safetensors"
    assert cli(*train_args(style_image, photos, out, vgg_weights, "--steps", "10", "--checkpoint-every", "2")).code == 0
    assert sorted(p.name for p in (tmp_path / "m.ckpt").iterdir()) == [f"step-{s:08d}.pt" for s in (6, 8, 10)]


def test_resume_refuses_different_settings(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    out = tmp_path / "m.safetensors"
    assert cli(*train_args(style_image, photos, out, vgg_weights, "--steps", "2", "--checkpoint-every", "2")).code == 0
    result = cli(*train_args(style_image, photos, out, vgg_weights, "--resume", tmp_path / "m.ckpt", "--lr", "0.5"))
    assert result.code == 2
    assert result.error_lines == [result.error_lines[0]] and "lr=0.001, not 0.5" in result.err


def test_resume_refuses_an_init_model_that_changed_since_the_start(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    parent = write_model(tmp_path / "parent.safetensors", seed=1)
    out = tmp_path / "m.safetensors"
    start = ("--init", parent, "--steps", "2", "--checkpoint-every", "1")
    assert cli(*train_args(style_image, photos, out, vgg_weights, *start)).code == 0
    write_model(parent, seed=2)  # overwritten: another network of the same shape
    result = cli(*train_args(style_image, photos, out, vgg_weights, *start, "--resume", tmp_path / "m.ckpt"))
    assert result.code == 2 and len(result.error_lines) == 1
    assert "m.ckpt" in result.err and "started from another parent.safetensors (the file changed since)" in result.err


def _four_steps(out: Path, style_image: Path, photos: Path, vgg_weights: Path, **changes: Any) -> TrainConfig:
    """Four steps of two 32 px crops with the small VGG; no checkpoints unless ``changes`` ask."""
    settings: dict[str, Any] = {"checkpoint_every": 0, **changes}
    return TrainConfig(
        style_image=style_image, data=photos, out=out, steps=4, batch_size=2, image_size=32, style_size=32,
        loss_network_weights=vgg_weights, style_layers=("relu1_2", "relu2_2"), content_layer="relu2_2",
        device="cpu", workers=0, **settings,
    )  # fmt: skip


def _press_ctrl_c_at_step_2(report: training.StepReport) -> None:
    if report.step == 2:
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_checkpoints_and_the_run_resumes_exactly(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(out: Path, resume: Path | None = None) -> TrainConfig:
        return _four_steps(out, style_image, photos, vgg_weights, resume=resume)

    out = tmp_path / "run.safetensors"
    handler_before = signal.getsignal(signal.SIGINT)  # default, or ignored under a background shell
    with pytest.raises(TrainingInterrupted, match="interrupted at step 2/4") as interrupted:
        train(config(out), on_progress=_press_ctrl_c_at_step_2)
    assert interrupted.value.resume_from == tmp_path / "run.ckpt" / "step-00000002.pt"
    assert [p.name for p in (tmp_path / "run.ckpt").iterdir()] == ["step-00000002.pt"]
    assert not out.exists()
    assert signal.getsignal(signal.SIGINT) is handler_before

    steps_run = count_steps(monkeypatch)
    train(config(out, resume=tmp_path / "run.ckpt"))
    assert len(steps_run) == 2  # steps 3 and 4 only
    train(config(tmp_path / "straight.safetensors"))
    assert_same_weights(out, tmp_path / "straight.safetensors")


def test_ctrl_c_at_a_checkpoint_step_writes_that_checkpoint_once(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _four_steps(tmp_path / "run.safetensors", style_image, photos, vgg_weights, checkpoint_every=2)
    written: list[int] = []
    real_write = training.write_checkpoint

    def counted_write(folder: Path, checkpoint: Checkpoint) -> Path:
        written.append(checkpoint.step)
        return real_write(folder, checkpoint)

    monkeypatch.setattr(training, "write_checkpoint", counted_write)

    with pytest.raises(TrainingInterrupted, match="interrupted at step 2/4") as interrupted:
        train(config, on_progress=_press_ctrl_c_at_step_2)
    assert written == [2]
    assert interrupted.value.resume_from == tmp_path / "run.ckpt" / "step-00000002.pt"


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    config = _four_steps(tmp_path / "run.safetensors", style_image, photos, vgg_weights)
    steps_seen: list[int] = []

    def press_ctrl_c_twice(report: training.StepReport) -> None:
        steps_seen.append(report.step)
        if report.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(config, on_progress=press_ctrl_c_twice)
    assert steps_seen == [1, 2]  # no further step, and no checkpoint of the interrupted one
    assert not (tmp_path / "run.ckpt").exists() and not config.out.exists()
    assert signal.getsignal(signal.SIGINT) is handler_before


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_nan_or_infinite_loss_stops_and_keeps_the_last_good_checkpoint(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, monkeypatch: pytest.MonkeyPatch, bad: float
) -> None:
    real = training.perceptual_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs) -> LossTerms:
        calls["n"] += 1
        terms = real(*args, **kwargs)
        return LossTerms(terms.content, terms.style * bad if calls["n"] == 3 else terms.style, terms.tv)

    monkeypatch.setattr(training, "perceptual_loss", poisoned)
    out = tmp_path / "m.safetensors"
    result = cli(*train_args(style_image, photos, out, vgg_weights, "--checkpoint-every", "2"))
    assert result.code == 1
    errors = [line for line in result.error_lines if line.startswith("error:")]
    assert len(errors) == 1 and f"{bad} at step 3" in errors[0]
    assert "Traceback" not in result.err
    good = tmp_path / "m.ckpt" / "step-00000002.pt"
    assert str(good) in result.err and [p.name for p in good.parent.iterdir()] == [good.name]
    assert load_model(good).info.config.norm == "instance"
    assert not out.exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", 0, "steps must be at least 1"),
        ("batch_size", -1, "batch_size must be at least 1"),
        ("image_size", 4, "image_size must be at least 16"),
        ("style_weight", -1.0, "style_weight must not be negative"),
        ("shift_weight", -0.5, "shift_weight must not be negative"),
        ("lr", 0.0, "lr must be positive"),
        ("norm", "layer-ish", "norm must be one of"),
        ("loss_network", "resnet", "loss_network must be one of"),
        ("lr_schedule", "step", "lr_schedule must be one of: constant, cosine, linear; not 'step'"),
        ("precision", "fp8", "precision must be one of: auto, fp32, bf16; not 'fp8'"),
        ("style_layer_weights", (1.0,), "give a weight for every style layer, or for none"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, field: str, value: object, message: str) -> None:
    with pytest.raises(StylizeError, match=message):
        TrainConfig(style_image=tmp_path, data=tmp_path, out=tmp_path / "m.safetensors", **{field: value})


def test_the_shift_term_needs_a_crop_with_an_interior(tmp_path: Path) -> None:
    paths = {"style_image": tmp_path, "data": tmp_path, "out": tmp_path / "m.safetensors"}
    assert TrainConfig(**paths).shift_weight == 300  # the recipe's term is on by default
    TrainConfig(**paths, image_size=16, shift_weight=0.0)  # no shift term: any crop of 16 px and up
    TrainConfig(**paths, image_size=20, shift_weight=100.0)
    with pytest.raises(StylizeError, match="image_size must be at least 20 pixels with a shift weight"):
        TrainConfig(**paths, image_size=19, shift_weight=100.0)


def test_one_command_trains_every_norm_under_identical_settings(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    folder = tmp_path / "pair"
    norms = ["instance", "batch", "batch-instance"]
    args = train_args(style_image, photos, folder, vgg_weights, "--steps", "2")
    result = cli(*args, *(f"--norm={norm}" for norm in norms))
    assert result.code == 0, result.err
    models = {norm: load_model(folder / f"swirls-{norm}.safetensors") for norm in norms}
    assert [model.info.config.norm for model in models.values()] == norms
    assert all((folder / f"swirls-{norm}.metrics.jsonl").is_file() for norm in norms)
    run_only = {"norm", "out", "training_seconds", "resume"}
    records = [{k: v for k, v in model.info.training.items() if k not in run_only} for model in models.values()]
    assert records[0] == records[1] == records[2]
    thumbnail = decode_thumbnail(models["batch"].info.style_thumbnail)
    assert thumbnail is not None and thumbnail.shape == (1, 3, 48, 48)

    # Continuing the folder extends every run exactly as one longer run would.
    longer = cli(
        *train_args(style_image, photos, tmp_path / "direct", vgg_weights), "--norm", "instance", "--norm", "batch"
    )
    assert longer.code == 0, longer.err
    resumed = cli(*args, "--norm", "instance", "--norm", "batch", "--steps", "4", "--resume", str(folder))
    assert resumed.code == 0, resumed.err
    for norm in ("instance", "batch"):
        assert_same_weights(folder / f"swirls-{norm}.safetensors", tmp_path / "direct" / f"swirls-{norm}.safetensors")


def test_same_seed_gives_every_norm_the_same_initial_convolutions() -> None:
    states = []
    for norm in ("instance", "batch", "ibn", "none", "batch-instance"):
        torch.manual_seed(3)
        states.append({k: v for k, v in TransformerNet(NetConfig(norm=norm)).state_dict().items() if "conv" in k})
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        assert all(torch.equal(state[key], states[0][key]) for key in state)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--norm", "instance", "--norm", "batch"], "--out must be a folder to train 2 norms (one model each)"),
        (["--norm", "batch", "--norm", "batch"], "--norm batch is given twice"),
        (["--norm", "instance", "--norm", "blob"], "--norm must be one of: instance, batch"),
        (["--norm", "group", "--groups", "5"], "--groups must divide 32"),
    ],
)
def test_bad_norm_lists_are_refused_before_training(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, extra: list[str], message: str
) -> None:
    result = cli(*train_args(style_image, photos, tmp_path / "m.safetensors", vgg_weights), *extra)
    assert result.code == 2 and len(result.error_lines) == 1 and message in result.err
    assert list(tmp_path.iterdir()) == []


def test_resuming_several_norms_takes_the_out_folder(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    args = train_args(style_image, photos, tmp_path / "pair", vgg_weights)
    result = cli(*args, "--norm", "instance", "--norm", "batch", "--resume", str(tmp_path / "elsewhere"))
    assert result.code == 2 and "--resume must be the out folder" in result.err


def _init_run(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, init: Path | None, **changes: object
) -> TrainConfig:
    config = TrainConfig(
        style_image=style_image, data=photos, out=tmp_path / "tuned.safetensors", steps=4, batch_size=2,
        image_size=32, style_size=32, loss_network_weights=vgg_weights, style_layers=("relu1_2", "relu2_2"),
        content_layer="relu2_2", device="cpu", workers=0, checkpoint_every=2, init=str(init) if init else None,
    )  # fmt: skip
    return dataclasses.replace(config, **changes)


def test_init_starts_from_the_trained_weights(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    start = write_model(tmp_path / "start.safetensors", seed=5)
    losses: list[float] = []
    config = _init_run(tmp_path, style_image, photos, vgg_weights, start, steps=1, lr=1e-9, warmup_steps=0)
    train(config, on_progress=lambda report: losses.append(report.total))
    tuned, original = load_file(config.out), load_file(start)
    assert tuned.keys() == original.keys()
    # One step at a vanishing learning rate: the weights are still the starting model's.
    assert all(torch.allclose(tuned[key], original[key], atol=1e-6) for key in tuned)
    info = load_model(config.out).info.training
    assert info["init"] == str(start) and info["init_sha256"] == hashlib.sha256(start.read_bytes()).hexdigest()
    # ...and not what the same seed gives from scratch.
    scratch = dataclasses.replace(config, init=None, out=tmp_path / "scratch.safetensors")
    train(scratch)
    assert not torch.allclose(load_file(scratch.out)["conv1.conv2d.weight"], tuned["conv1.conv2d.weight"])


@pytest.mark.parametrize(
    ("start_norm", "changes", "message"),
    [
        ("batch", {}, r"is batch-norm; this run's is instance-norm \(pass --norm batch\)"),
        (
            "group",
            {"norm": "group", "groups": 4},
            r"is group-norm \(8 groups\); this run's is group-norm \(4 groups\)$",
        ),
    ],
)
def test_init_refuses_a_different_network(
    cli,
    tmp_path: Path,
    style_image: Path,
    photos: Path,
    vgg_weights: Path,
    start_norm: str,
    changes: dict,
    message: str,
) -> None:
    start = write_model(tmp_path / "start.safetensors", norm=start_norm)
    config = _init_run(tmp_path, style_image, photos, vgg_weights, start, **changes)
    with pytest.raises(StylizeError, match=message):
        train(config)
    assert not config.out.exists() and not checkpoints.checkpoint_dir(config.out).exists()
    args = train_args(style_image, photos, config.out, vgg_weights, "--init", str(start),
                      *(f"--{key}={value}" for key, value in changes.items()))  # fmt: skip
    result = cli(*args)
    assert (
        result.code == 2
        and len(result.error_lines) == 1
        and result.error_lines[0].startswith("error: the network of the model to start from")
    )


def test_init_keeps_the_parents_resampling_unless_told(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    start = tmp_path / "start.safetensors"
    save_model(start, random_network(resampling="nearest"), style="s", training={})
    config = _init_run(tmp_path, style_image, photos, vgg_weights, start, steps=1)
    train(config)
    assert load_model(config.out).info.config.resampling == "nearest"
    assert load_model(config.out).info.training["resampling"] == "nearest"
    scratch = dataclasses.replace(config, init=None, out=tmp_path / "scratch.safetensors")
    assert scratch.for_device(torch.device("cpu")).resampling == "antialiased"
    # The same weights fit either resampling: a fine-tune may switch.
    switched = dataclasses.replace(config, resampling="antialiased", out=tmp_path / "switched.safetensors")
    train(switched)
    assert load_model(switched.out).info.config.resampling == "antialiased"


def test_init_refuses_an_unknown_model(cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path) -> None:
    result = cli(*train_args(style_image, photos, tmp_path / "m.safetensors", vgg_weights, "--init", "no-such-style"))
    assert result.code == 2 and "no model file or bundled model named 'no-such-style'" in result.err


def test_resumed_init_run_matches_the_straight_one(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    start = write_model(tmp_path / "start.safetensors", seed=5)
    straight = _init_run(tmp_path, style_image, photos, vgg_weights, start, out=tmp_path / "straight.safetensors")
    train(straight)
    first = _init_run(tmp_path, style_image, photos, vgg_weights, start, steps=2)
    train(first)
    checkpoint = checkpoints.checkpoint_dir(first.out)
    # The resumed run continues from the checkpoint, not from the starting model.
    train(dataclasses.replace(first, steps=4, resume=checkpoint))
    assert_same_weights(straight.out, first.out)
    assert load_model(first.out).info.training["init_sha256"] == hashlib.sha256(start.read_bytes()).hexdigest()


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_dtype_of_the_training_math(
    tmp_path: Path,
    style_image: Path,
    photos: Path,
    vgg_weights: Path,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    dtype: torch.dtype,
) -> None:
    seen: list[torch.dtype] = []
    real = training.perceptual_loss

    def spy(output, output_features, *args, **kwargs):
        seen.append(output_features["relu2_2"].dtype)
        return real(output, output_features, *args, **kwargs)

    monkeypatch.setattr(training, "perceptual_loss", spy)
    config = _init_run(tmp_path, style_image, photos, vgg_weights, None, steps=2, precision=precision)
    train(config)
    assert seen == [dtype, dtype]
    assert load_model(config.out).info.training["precision"] == precision


def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert compute_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert compute_dtype("auto", cpu) == torch.float32
    assert compute_dtype("bf16", cpu) == torch.bfloat16 and compute_dtype("fp32", cpu) == torch.float32


_FAULTS_PER_STEP = """
import resource, sys, torch
from stylize.devices import autocast, compute_dtype, keep_freed_memory
from stylize.model.network import TransformerNet
cpu = torch.device("cpu")
applied = sys.argv[1] == "keep" and keep_freed_memory(cpu)
network, photos, faults = TransformerNet(), torch.rand(4, 3, 128, 128), []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with autocast(cpu, compute_dtype("auto", cpu)):  # as training runs here: bf16 emulated would take minutes
        network(photos).square().mean().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(faults[3:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc setting")
def test_freed_memory_is_reused_instead_of_page_faulted_in_again() -> None:
    def run(mode: str) -> tuple[str, int]:
        result = subprocess.run([sys.executable, "-c", _FAULTS_PER_STEP, mode], capture_output=True, text=True)
        applied, faults = result.stdout.split()
        return applied, int(faults)

    default, kept = run("default"), run("keep")
    # Steps 4-6 of a training-like loop: by default glibc hands the feature maps
    # back to the kernel and faults them in again (~20,000 pages; kept: 0-1,300).
    assert kept[0] == "True" and kept[1] * 5 < default[1], (default, kept)


def test_freed_memory_is_left_alone_for_gpu_work() -> None:
    assert keep_freed_memory(torch.device("cuda")) is False


def test_unset_settings_come_from_the_device_recipe(tmp_path: Path) -> None:
    config = TrainConfig(style_image=tmp_path, data=tmp_path, out=tmp_path / "m.safetensors", image_size=64)
    on_cpu = config.for_device(torch.device("cpu"))
    assert (on_cpu.steps, on_cpu.image_size, on_cpu.style_size, on_cpu.workers) == (
        CPU_RECIPE.steps,
        64,
        CPU_RECIPE.style_size,
        CPU_RECIPE.workers,
    )
    on_gpu = config.for_device(torch.device("cuda"))
    assert (on_gpu.steps, on_gpu.image_size, on_gpu.style_size) == (GPU_RECIPE.steps, 64, GPU_RECIPE.style_size)
    assert CPU_RECIPE != GPU_RECIPE


def test_style_layer_weights_reach_the_loss_and_the_model_file(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    real = training.perceptual_loss

    def spy(*args, **kwargs):
        seen.append(args[-1].style_layers)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "perceptual_loss", spy)
    out = tmp_path / "m.safetensors"
    args = train_args(style_image, photos, out, vgg_weights, "--steps", "1")
    result = cli(*args, "--style-layers", "relu1_2:4, relu2_2")
    assert result.code == 0, result.err
    assert seen == [(("relu1_2", 4.0), ("relu2_2", 1.0))]
    training_record = load_model(out).info.training
    assert training_record["style_layers"] == ["relu1_2", "relu2_2"] and training_record["style_layer_weights"] == [
        4.0,
        1.0,
    ]
    bad = cli(*args, "--style-layers", "relu1_2:lots")
    assert bad.code == 2 and bad.error_lines == [
        "error: --style-layers 'relu1_2:lots': a weight is not a finite number (write LAYER:WEIGHT)"
    ]


def test_default_style_layers_weigh_the_palette_layer_a_quarter_and_given_layers_alike() -> None:
    default = TrainConfig(style_image=Path("s.jpg"), data=Path("d"), out=Path("m.safetensors"), loss_network="vgg16_bn")
    assert default.term_weights.style_layers == (
        ("relu1_2", 0.25),
        ("relu2_2", 1.0),
        ("relu3_3", 1.0),
        ("relu4_3", 1.0),
    )
    given = dataclasses.replace(default, style_layers=("relu1_2", "relu3_3"))
    assert given.term_weights.style_layers == (("relu1_2", 1.0), ("relu3_3", 1.0))
    assert given.to_dict()["style_layer_weights"] == [1.0, 1.0]


def test_a_stored_training_record_reads_back_in_todays_names_and_defaults(tmp_path: Path) -> None:
    config = TrainConfig(
        style_image=tmp_path / "s.jpg", data=tmp_path, out=tmp_path / "m.safetensors", style_size=300,
        loss_network="vgg16_bn", loss_network_weights=tmp_path / "w.pth", style_layers=("relu2_2",), init="x",
    )  # fmt: skip
    stored = {**config.to_dict(), "steps_done": 12, "images_seen": 48, "training_seconds": 3.5}
    record = TrainingRecord.of(json.loads(json.dumps(stored)))
    assert record is not None and (record.steps_done, record.images_seen, record.seconds) == (12, 48, 3.5)
    assert record.settings.to_dict() == config.to_dict() and record.settings.loss_network_weights == tmp_path / "w.pth"
    # A model from before the renames and the newer settings: what its training did then.
    old = {key: value for key, value in stored.items() if key not in ("lr_schedule", "warmup_steps", "resampling")}
    old["loss_weights"] = old.pop("loss_network_weights")
    settings = TrainingRecord.of(old).settings
    assert settings.loss_network_weights == tmp_path / "w.pth" and settings.lr_schedule == "constant"
    assert (settings.warmup_steps, settings.resampling) == (0, "nearest")
    before_shift = {key: value for key, value in stored.items() if key != "shift_weight"}
    assert _saved_settings(before_shift)["shift_weight"] == 0.0  # trained without the term, whatever the default
    # Imported models and bare records have none.
    assert TrainingRecord.of({}) is None and TrainingRecord.of({"image_size": 32, "steps_done": 0}) is None
    with pytest.raises(StylizeError, match="the recorded training settings lack data, out"):
        TrainConfig.from_dict({"style_image": "s.jpg"})


def test_a_checkpoint_from_before_antialiased_resampling_resumes_only_as_nearest(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    out = tmp_path / "m.safetensors"
    args = train_args(style_image, photos, out, vgg_weights, "--steps", "3", "--checkpoint-every", "2")
    assert cli(*args, "--resampling", "nearest").code == 0
    path = tmp_path / "m.ckpt" / "step-00000002.pt"
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["config"]["resampling"], checkpoint["net_config"]["resampling"]
    torch.save(checkpoint, path)
    refused = cli(*args, "--resume", path)
    assert refused.code == 2 and "resampling='nearest', not 'antialiased'" in refused.err
    assert cli(*args, "--resume", path, "--resampling", "nearest").code == 0
    assert load_model(out).info.config.resampling == "nearest"


def test_a_checkpoint_from_before_schedules_and_bounded_output_is_not_resumed_silently(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    out = tmp_path / "m.safetensors"
    assert cli(*train_args(style_image, photos, out, vgg_weights, "--steps", "2", "--checkpoint-every", "2")).code == 0
    path = tmp_path / "m.ckpt" / "step-00000002.pt"
    checkpoint = torch.load(path, weights_only=True)
    for key in ("lr_schedule", "warmup_steps"):
        del checkpoint["config"][key]
    torch.save(checkpoint, path)
    refused = cli(*train_args(style_image, photos, out, vgg_weights, "--resume", path))
    assert refused.code == 2 and "lr_schedule='constant', not 'cosine'" in refused.err
    del checkpoint["net_config"]["bounded_output"]
    torch.save(checkpoint, path)
    refused = cli(*train_args(style_image, photos, out, vgg_weights, "--resume", path,
                              "--lr-schedule", "constant", "--warmup-steps", "0"))  # fmt: skip
    assert refused.code == 2 and refused.error_lines == [
        f"error: {path} holds a network of an older stylize (unbounded output); start a new run"
    ]
