"""Training on several processes: torchrun, gloo on the CPU, 2 processes.

N processes of batch B must take the same steps as one process of batch N*B.
"Same" has a float-sized meaning under Adam. The two runs sum the gradients
in another order (and oneDNN's kernels, thread counts and torch releases
change that order again), so gradients agree only to rounding, and Adam
divides each gradient element by its own size: an element whose gradient is
near that rounding (conv biases just before instance norm, which cancels them
exactly; sums that nearly cancel) can move by a visible part of a step. How
many weights agree to 1e-6 is therefore a property of the CPU (98% on AMD Zen
4, 93% on an Intel Xeon, 67% here on Zen 3 with one thread against two), not
of the code. What two correct runs share on any of them: 99% of the weights
within a tenth of a step (lr) of each other, the median gap under a hundredth
of a step, the losses, and the outputs to 1e-3. A missing gradient average
leaves about 80% of the weights more than a tenth of a step apart (median gap
half a step): measured here with a communication hook that skips the average.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from stylize import StylizeError, TrainConfig, load_model
from stylize.model.checkpoints import checkpoint_dir, find_checkpoint
from stylize.model.network import NetConfig, TransformerNet
from stylize.training.distributed import World, check_sync_batch_norm, parallel, rank_label, synchronize_batch_norm

from .helpers import photo_tensor, train_args

pytestmark = pytest.mark.slow  # launches processes

STEPS, LR = 2, 1e-3
# fp32 at a constant rate: in bf16, sums over another split of the batch round differently.
EXACT = ("--lr", str(LR), "--precision", "fp32", "--lr-schedule", "constant", "--warmup-steps", "0")


def torchrun(*args: str, cwd: Path, program: tuple[str, ...] = ("-m", "stylize")) -> subprocess.CompletedProcess[str]:
    """Two processes of ``program`` (stylize's CLI, or a script wrapping it) with ``args``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *program, *args]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def losses(metrics: Path) -> list[tuple[float, ...]]:
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [(line["step"], line["content"], line["style"], line["tv"]) for line in lines]


def final_weights(model: Path) -> dict[str, torch.Tensor]:
    """The float32 weights of the run's last checkpoint (model files hold float16)."""
    return torch.load(find_checkpoint(checkpoint_dir(model)), weights_only=True)["model"]


def assert_same_training(a: Path, b: Path) -> None:
    first, second = final_weights(a), final_weights(b)
    assert first.keys() == second.keys()
    torch.manual_seed(TrainConfig.seed)  # the weights both runs started from
    initial = TransformerNet(NetConfig()).state_dict()
    steps = torch.cat([(first[key] - second[key]).abs().flatten() for key in first]) / LR
    moved = torch.cat([(second[key] - initial[key]).abs().flatten() for key in first if key in initial])
    assert (steps <= 0.1).float().mean() > 0.99, "nearly every weight must agree to a tenth of a step"
    assert steps.median() < 0.01, "and the typical one to rounding"
    assert (moved > 1e-4).float().mean() > 0.9, "while training moved nearly every weight"
    photo = photo_tensor(40, 48, seed=0)
    networks = [TransformerNet(NetConfig()).eval() for _ in (a, b)]
    for network, weights in zip(networks, (first, second), strict=True):
        network.load_state_dict(weights)  # float32: the model files' float16 rounding may split close weights
    with torch.no_grad():
        outputs = [network(photo) for network in networks]
    # Rounding in other sums, which Adam turns into whole steps, moves a few outputs by up to a level
    # of 255 on some CPUs; a split that trained differently moves every output far more.
    difference = (outputs[0] - outputs[1]).abs()
    assert difference.mean() < 1e-3 and difference.max() < 0.01
    for one, other in zip(
        losses(a.with_name(a.stem + ".metrics.jsonl")), losses(b.with_name(b.stem + ".metrics.jsonl")), strict=True
    ):
        assert one[0] == other[0] and one[1:] == pytest.approx(other[1:], rel=1e-5)


@pytest.fixture
def exact_args(tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path):
    """Arguments of a short fp32 run writing ``tmp_path / out`` with ``batch`` photos a process."""

    def args(out: str, batch: int) -> list[str]:
        return [*train_args(style_image, photos, tmp_path / out, vgg_weights, *EXACT),
                "--steps", str(STEPS), "--batch-size", str(batch)]  # fmt: skip

    return args


def test_two_processes_of_batch_2_train_like_one_of_batch_4(cli, tmp_path: Path, exact_args) -> None:
    two = torchrun(*exact_args("two.safetensors", 2), cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert cli(*exact_args("one.safetensors", 4)).code == 0
    assert_same_training(tmp_path / "one.safetensors", tmp_path / "two.safetensors")

    # Only rank 0 wrote: one model, one metrics file with one line per step, one report.
    reports = [line for line in two.stdout.splitlines() if line.startswith("wrote")]
    assert len(reports) == 1 and reports[0].startswith(f"wrote {tmp_path / 'two.safetensors'} ({STEPS} steps")
    assert len((tmp_path / "two.metrics.jsonl").read_text().splitlines()) == STEPS
    assert sorted(path.name for path in (tmp_path / "two.ckpt").iterdir()) == [f"step-{STEPS:08d}.pt"]
    training = load_model(tmp_path / "two.safetensors").info.training
    assert training["processes"] == 2 and training["images_seen"] == 4 * STEPS


def test_a_one_process_checkpoint_resumes_on_two_processes(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    def args(out: str, steps: int, batch: int, *extra: str) -> list[str]:
        return [*train_args(style_image, photos, tmp_path / out, vgg_weights, *EXACT),
                "--steps", str(steps), "--batch-size", str(batch), *extra]  # fmt: skip

    assert cli(*args("straight.safetensors", STEPS + 1, 4)).code == 0
    assert cli(*args("resumed.safetensors", 1, 4)).code == 0
    first_line = (tmp_path / "resumed.metrics.jsonl").read_text().splitlines()[0]
    resumed = torchrun(*args("resumed.safetensors", STEPS + 1, 2, "--resume", str(tmp_path / "resumed.ckpt")),
                       cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert_same_training(tmp_path / "straight.safetensors", tmp_path / "resumed.safetensors")
    assert [step for step, *_ in losses(tmp_path / "resumed.metrics.jsonl")] == list(range(1, STEPS + 2))
    # Step 1 was not run again: its line, timings included, is the one-process run's.
    assert (tmp_path / "resumed.metrics.jsonl").read_text().splitlines()[0] == first_line

    # A step must take as many photos as before, however they are split.
    refused = cli(*args("resumed.safetensors", STEPS + 2, 2, "--resume", str(tmp_path / "resumed.ckpt")))
    assert refused.code == 2 and "was trained with 4 photos per step, not 2 x 1 process(es)" in refused.err


OWN_GRADIENTS = """
import sys, torch
import stylize.training.loop as loop
from stylize.training import distributed

def parallel(network, world, device, sync_bn):  # DDP with each process stepping on its own gradient
    wrapped = distributed.parallel(network, world, device, sync_bn)
    def own_gradient(state, bucket):
        done = torch.futures.Future()
        done.set_result(bucket.buffer())
        return done
    wrapped.register_comm_hook(None, own_gradient)
    return wrapped

loop.parallel = parallel
from stylize.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_equivalence_fails_for_processes_that_skip_the_gradient_average(cli, tmp_path: Path, exact_args) -> None:
    script = tmp_path / "own_gradients.py"
    script.write_text(OWN_GRADIENTS)

    assert torchrun(*exact_args("own.safetensors", 2), cwd=tmp_path, program=(str(script),)).returncode == 0
    assert cli(*exact_args("one.safetensors", 4)).code == 0
    with pytest.raises(AssertionError, match="a tenth of a step"):
        assert_same_training(tmp_path / "one.safetensors", tmp_path / "own.safetensors")


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_sync_bn_swaps_batch_norm_in_place_keeping_parameters_and_keys() -> None:
    network = TransformerNet(NetConfig(norm="ibn"))
    parameters, keys = list(network.parameters()), list(network.state_dict())
    synchronize_batch_norm(network)
    kinds = {type(module).__name__ for module in network.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    assert all(a is b for a, b in zip(network.parameters(), parameters, strict=True))
    assert list(network.state_dict()) == keys


def test_several_processes_train_through_distributed_data_parallel(one_process_group) -> None:
    network = TransformerNet(NetConfig(norm="instance"))
    wrapped = parallel(network, World(rank=0, size=2), torch.device("cpu"), sync_batch_norm=False)
    assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) and wrapped.module is network
    assert parallel(network, World(), torch.device("cpu"), sync_batch_norm=True) is network


@pytest.mark.parametrize(
    ("norm", "message"),
    [
        ("instance", "sync_bn synchronizes batch-norm statistics; the instance norm has no batch-norm layers"),
        ("batch", "sync_bn needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on the CPU"),
        ("ibn", "sync_bn needs CUDA GPUs"),
        ("conditional-batch", r"sync_bn cannot synchronize the conditional-batch norm \(its per-style scale"),
    ],
)
def test_sync_bn_is_refused_where_it_cannot_work(norm: str, message: str) -> None:
    with pytest.raises(StylizeError, match=message):
        check_sync_batch_norm(TransformerNet(NetConfig(norm=norm)), torch.device("cpu"), norm)


def test_the_world_comes_from_torchruns_variables(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    world = World.from_environment()
    assert world == World(rank=3, local_rank=1, size=4) and not world.is_main and world.is_distributed
    assert rank_label() == "[rank 3] "
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(StylizeError, match="must be whole numbers"):
        World.from_environment()
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name)
    assert World.from_environment() == World() and rank_label() == ""


# Rank 1 alone gets an infinite loss at its second step; everything else is stylize's CLI.
NAN_ON_RANK_1 = """
import dataclasses, os, sys
import stylize.training.loop as loop
real, calls = loop.perceptual_loss, []

def poisoned(*args, **kwargs):
    terms = real(*args, **kwargs)
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        return dataclasses.replace(terms, style=terms.style * float("inf"))
    return terms

loop.perceptual_loss = poisoned
from stylize.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_non_finite_loss_on_one_process_stops_every_process(
    tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path
) -> None:
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    out = tmp_path / "m.safetensors"
    args = [*train_args(style_image, photos, out, vgg_weights), "--steps", "4", "--batch-size", "2",
            "--checkpoint-every", "1"]  # fmt: skip
    done = torchrun(*args, cwd=tmp_path, program=(str(script),))
    assert done.returncode != 0
    # The losses are averaged over processes before they are checked: both see it, both stop.
    stopped = [line for line in done.stderr.splitlines() if "the loss became" in line and "at step 2" in line]
    assert len(stopped) == 2 and any(line.startswith("error: [rank 1] ") for line in stopped), done.stderr
    assert not out.exists()
    assert [path.name for path in checkpoint_dir(out).iterdir()] == ["step-00000001.pt"]
