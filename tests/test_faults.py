"""Training survives what happens to long runs: SIGKILL, a kill mid-checkpoint, a full disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import stylize.model.checkpoints as checkpoints
import stylize.training.loop as training
from stylize import TrainConfig, load_model, train

from .helpers import SMALL_LOSS_ARGS, assert_same_weights, count_steps, train_args

pytestmark = pytest.mark.slow  # launches processes

ROOT = Path(__file__).resolve().parents[1]

# Runs training in a child process; SLOW_STEP slows every step so that a kill lands
# mid-run, KILL_IN_SAVE makes the Nth checkpoint write die half-way with SIGKILL.
CHILD = """
import os, signal, sys, time, torch
import stylize.training.loop as training
slow, kill_in_save = float(os.environ["SLOW_STEP"]), int(os.environ["KILL_IN_SAVE"])
real_loss, real_save, saves = training.perceptual_loss, torch.save, [0]
def slow_loss(*args, **kwargs):
    time.sleep(slow)
    return real_loss(*args, **kwargs)
def dying_save(obj, path, *args, **kwargs):
    saves[0] += 1
    if saves[0] == kill_in_save:
        real_save(obj, path)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, path, *args, **kwargs)
training.perceptual_loss = slow_loss
training.torch.save = dying_save
from stylize.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _config(style: Path, photos: Path, weights: Path, out: Path, resume: Path | None = None) -> TrainConfig:
    return TrainConfig(
        style_image=style, data=photos, out=out, steps=12, batch_size=2, image_size=32, style_size=32,
        loss_network_weights=weights, style_layers=("relu1_2", "relu2_2"), content_layer="relu2_2", device="cpu",
        workers=0, checkpoint_every=3, resume=resume,
    )  # fmt: skip


def _child(config: TrainConfig, slow: float, kill_in_save: int = 0) -> subprocess.Popen[bytes]:
    args = [
        "train", str(config.style_image), "--data", str(config.data), "--out", str(config.out),
        "--loss-weights", str(config.loss_network_weights), *SMALL_LOSS_ARGS,
        "--steps", str(config.steps), "--batch-size", "2", "--image-size", "32", "--style-size", "32",
        "--workers", "0", "--device", "cpu", "--checkpoint-every", str(config.checkpoint_every),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLOW_STEP": str(slow), "KILL_IN_SAVE": str(kill_in_save)}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stderr=subprocess.PIPE)


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_weights(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = _config(style_image, photos, vgg_weights, tmp_path / "killed.safetensors")
    child = _child(killed, slow=0.1)
    folder = checkpoints.checkpoint_dir(killed.out)
    deadline = time.monotonic() + 120
    while not (folder / "step-00000006.pt").exists():
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.15)  # somewhere between checkpoints
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert not killed.out.exists()

    last_step = int(checkpoints.find_checkpoint(folder).stem.removeprefix("step-"))
    steps_run = count_steps(monkeypatch)
    train(_config(style_image, photos, vgg_weights, killed.out, resume=folder))
    assert last_step >= 6 and len(steps_run) == killed.steps - last_step
    train(_config(style_image, photos, vgg_weights, tmp_path / "straight.safetensors"))
    assert_same_weights(killed.out, tmp_path / "straight.safetensors")


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(style_image, photos, vgg_weights, tmp_path / "m.safetensors")
    child = _child(config, slow=0.0, kill_in_save=2)  # dies writing the step-6 checkpoint
    assert child.wait(timeout=120) == -signal.SIGKILL
    folder = checkpoints.checkpoint_dir(config.out)
    leftovers = sorted(path.name for path in folder.iterdir())
    assert leftovers[0].startswith(".step-00000006.pt.") and leftovers[1:] == ["step-00000003.pt"]
    assert checkpoints.find_checkpoint(folder).name == "step-00000003.pt"
    assert load_model(folder / "step-00000003.pt").info.config.norm == "instance"

    steps_run = count_steps(monkeypatch)
    train(_config(style_image, photos, vgg_weights, config.out, resume=folder))
    assert len(steps_run) == config.steps - 3  # from the step-3 checkpoint
    assert not any(path.name.startswith(".") for path in folder.iterdir())  # the half-written file is gone
    train(_config(style_image, photos, vgg_weights, tmp_path / "straight.safetensors"))
    assert_same_weights(config.out, tmp_path / "straight.safetensors")


def test_a_full_disk_on_checkpoint_keeps_the_previous_checkpoint(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save, saves = torch.save, []

    def disk_full(obj: object, path: Path, *args: object, **kwargs: object) -> None:
        saves.append(path)
        if len(saves) == 2:
            Path(path).write_bytes(b"\0" * 100)  # part of it made it to the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(training.torch, "save", disk_full)
    out = tmp_path / "m.safetensors"
    result = cli(*train_args(style_image, photos, out, vgg_weights, "--steps", "6", "--checkpoint-every", "2"))
    folder = checkpoints.checkpoint_dir(out)
    assert result.code == 2 and "Traceback" not in result.err
    assert result.error_lines[-1] == (
        f"error: cannot write {folder / 'step-00000004.pt'}: No space left on device; "
        f"the last good checkpoint is {folder / 'step-00000002.pt'}"
    )
    assert sorted(path.name for path in folder.iterdir()) == ["step-00000002.pt"]
    assert load_model(folder / "step-00000002.pt").info.config.norm == "instance"
    assert not out.exists()
