"""Training a style: the network against the VGG perceptual loss of one style image.

A run is fully determined by its ``TrainConfig``: data order and crops are a
function of (seed, position) (see ``data.py``), so a checkpoint needs only the
weights, the optimizer state and the step to continue exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import torch

from .data import crop_loader, training_files
from .devices import autocast, check_precision, memory_format, resolve_device, training_dtype
from .distributed import (
    World,
    check_sync_batch_norm,
    mean_over_processes,
    parallel,
    process_device,
    process_group,
    union_over_processes,
    wait_for_all,
)
from .errors import StylizeError, TrainingDiverged, TrainingInterrupted
from .fileio import atomic_path, check_writable, load_torch_file
from .images import encode_thumbnail, load_image, resize_long_side
from .losses import LossWeights, perceptual_loss, style_targets
from .modelfile import MODEL_SUFFIX, load_model, model_name, resolve_model, save_model
from .network import MIN_SIZE, NetConfig, TransformerNet
from .norms import DEFAULT_GROUPS, check_groups, check_norm
from .schedule import check_lr_schedule, learning_rate
from .version import VERSION
from .vgg import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, LossNetwork, check_loss_network, imagenet_weights_cached

CHECKPOINTS_KEPT = 3
# Reading losses back from a GPU waits for it; do that once per this many steps.
GPU_SYNC_EVERY = 20


@dataclass(frozen=True)
class Recipe:
    """The defaults of the settings that depend on the device."""

    steps: int
    image_size: int
    style_size: int
    workers: int


# A CPU has a few cores and no time to spare: small crops, few steps, and one
# loader process, which keeps decoding off the cores doing the math without
# taking a core of its own (measured in benchmarks/train.py).
CPU_RECIPE = Recipe(steps=2_000, image_size=128, style_size=256, workers=1)
# Johnson et al.'s scale: 256 px crops, 40k images.
GPU_RECIPE = Recipe(steps=10_000, image_size=256, style_size=512, workers=4)


def recipe_for(device: torch.device) -> Recipe:
    return CPU_RECIPE if device.type == "cpu" else GPU_RECIPE


@dataclass(frozen=True)
class TrainConfig:
    """A run's settings; ``None`` means the recipe's value for the device it runs on."""

    style_image: Path
    data: Path
    out: Path
    norm: str = "instance"
    groups: int = DEFAULT_GROUPS
    steps: int | None = None
    batch_size: int = 4
    image_size: int | None = None
    style_size: int | None = None
    content_weight: float = LossWeights.content
    style_weight: float = LossWeights.style
    tv_weight: float = LossWeights.tv
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    precision: str = "auto"
    loss_network: str = "vgg16"
    loss_weights: Path | None = None
    content_layer: str = DEFAULT_CONTENT_LAYER
    style_layers: tuple[str, ...] = ()  # empty: the loss network's default layers and weights
    # One per style layer, or empty: every layer given weighs 1.
    style_layer_weights: tuple[float, ...] = ()
    # A trained model (bundled name or file) to start from instead of random weights.
    init: str | None = None
    seed: int = 42
    device: str = "auto"
    workers: int | None = None
    checkpoint_every: int = 250
    resume: Path | None = None
    # With several processes: batch norm statistics over all their batches.
    sync_bn: bool = False
    # The command line that started the run, kept in the model file.
    command: str = ""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise StylizeError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("image_size", "style_size"):
            value = getattr(self, name)
            if value is not None and value < MIN_SIZE:
                raise StylizeError(f"--{name.replace('_', '-')} must be at least {MIN_SIZE} pixels")
        for name in ("content_weight", "style_weight", "tv_weight", "workers", "checkpoint_every", "warmup_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise StylizeError(f"--{name.replace('_', '-')} must not be negative")
        if not self.lr > 0:
            raise StylizeError("--lr must be positive")
        check_norm(self.norm)
        check_groups(self.groups)
        check_loss_network(self.loss_network)
        check_lr_schedule(self.lr_schedule)
        check_precision(self.precision)
        if self.style_layer_weights and len(self.style_layer_weights) != len(self.style_layers):
            raise StylizeError("give a weight for every style layer, or for none")
        if any(weight < 0 for weight in self.style_layer_weights):
            raise StylizeError("style layer weights must not be negative")

    def for_device(self, device: torch.device) -> TrainConfig:
        """Every ``None`` replaced by the device's recipe."""
        recipe = recipe_for(device)
        unset = {key: getattr(recipe, key) for key in dataclasses.asdict(recipe) if getattr(self, key) is None}
        return dataclasses.replace(self, **unset)

    @property
    def net_config(self) -> NetConfig:
        return NetConfig(norm=self.norm, groups=self.groups)

    @property
    def layers_for_style(self) -> tuple[str, ...]:
        return self.style_layers or tuple(DEFAULT_STYLE_LAYERS[self.loss_network])

    @property
    def weights_for_style_layers(self) -> tuple[float, ...]:
        if self.style_layer_weights:
            return self.style_layer_weights
        if self.style_layers:
            return (1.0,) * len(self.style_layers)
        return tuple(DEFAULT_STYLE_LAYERS[self.loss_network].values())

    @property
    def loss_weights_terms(self) -> LossWeights:
        layers = tuple(zip(self.layers_for_style, self.weights_for_style_layers, strict=True))
        return LossWeights(content=self.content_weight, style=self.style_weight, tv=self.tv_weight, style_layers=layers)

    def record(self) -> dict[str, Any]:
        """Plain JSON-able values (absolute paths), as stored in checkpoints and models."""
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if isinstance(value, Path):
                values[key] = str(value.resolve())
        values["style_layers"] = list(self.layers_for_style)
        values["style_layer_weights"] = list(self.weights_for_style_layers)
        return values


# Settings that may change when a run is resumed; all others define the run.
# The batch may be split differently over processes, as long as each step
# takes as many photos as before (see ``global_batch``).
RUN_SETTINGS = frozenset(
    {"steps", "out", "device", "workers", "checkpoint_every", "resume", "batch_size", "precision", "command"}
)


def checkpoint_dir(out: Path) -> Path:
    return out.with_name(f"{model_name(out)}.ckpt")


def metrics_path(out: Path) -> Path:
    return out.with_name(f"{model_name(out)}.metrics.jsonl")


@dataclass(frozen=True)
class StepReport:
    step: int
    steps: int
    content: float
    style: float
    tv: float
    total: float
    images_per_second: float
    unreadable_files: int


@dataclass(frozen=True)
class TrainResult:
    model: Path
    metrics: Path
    steps: int
    seconds: float
    unreadable_files: tuple[str, ...]
    # False in the other processes of a distributed run: only the main one writes.
    wrote_files: bool = True


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file, or the newest one in a checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        found = _checkpoint_files(path)
        if not found:
            raise StylizeError(f"no checkpoints (step-*.pt) in {path}")
        return found[-1]
    if not path.is_file():
        raise StylizeError(f"checkpoint not found: {path}")
    return path


def _checkpoint_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("step-*.pt"))


def read_checkpoint(path: Path, config: TrainConfig, processes: int = 1) -> dict[str, Any]:
    checkpoint = load_torch_file(path, "a training checkpoint")
    if not isinstance(checkpoint, dict) or not {"model", "optimizer", "step", "config"} <= checkpoint.keys():
        raise StylizeError(f"{path} is not a training checkpoint")
    saved, wanted = checkpoint["config"], config.record()
    saved_batch = int(checkpoint.get("global_batch", saved.get("batch_size", config.batch_size)))
    if saved_batch != config.batch_size * processes:
        raise StylizeError(
            f"{path} was trained with {saved_batch} photos per step, not {config.batch_size} x {processes} "
            f"process(es); resume with --batch-size x processes = {saved_batch}"
        )
    # A setting the checkpoint predates had its default value then, or what
    # stylize did before the setting existed.
    saved = {**_BEFORE_SETTINGS_EXISTED, **saved}
    for key, value in wanted.items():
        if key not in RUN_SETTINGS and saved.get(key, value) != value:
            raise StylizeError(
                f"{path} was trained with {key.replace('_', '-')}={saved.get(key)!r}, not {value!r}; "
                "resume with the run's original settings"
            )
    if NetConfig.from_dict(checkpoint.get("net_config", {})) != config.net_config:
        raise StylizeError(f"{path} holds a network of an older stylize (unbounded output); start a new run")
    return checkpoint


# What training did before these settings existed: no learning-rate schedule.
_BEFORE_SETTINGS_EXISTED = {"lr_schedule": "constant", "warmup_steps": 0}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MetricsLog:
    """Per-step losses as JSON lines; a resumed run drops lines after its checkpoint."""

    def __init__(self, path: Path, keep_until_step: int):
        self.path = path
        kept = []
        if keep_until_step > 0 and path.is_file():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= keep_until_step]
        with atomic_path(path) as temporary:
            temporary.write_text("".join(f"{line}\n" for line in kept))
        self._handle: TextIO = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class _StopRequest:
    """The first Ctrl-C asks to stop after the current step (and checkpoint);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _Run:
    """State that changes as training goes: the step, time spent, files skipped."""

    def __init__(self, config: TrainConfig, network: TransformerNet, optimizer: torch.optim.Optimizer, world: World):
        self.config = config
        self.network = network
        self.optimizer = optimizer
        self.world = world
        self.step = 0
        self.seconds_before = 0.0
        self.started = time.perf_counter()
        self.unreadable: set[str] = set()
        self.init_sha256: str | None = None  # of the model a fine-tuning run started from

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.network.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step = int(checkpoint["step"])
        self.seconds_before = float(checkpoint.get("seconds", 0.0))
        self.unreadable = set(checkpoint.get("unreadable_files", []))
        self.init_sha256 = checkpoint.get("init_sha256")

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.world.size

    def save_checkpoint(self) -> Path:
        """Every process calls this at the same step; the main one writes."""
        self.unreadable = union_over_processes(self.unreadable, self.world)
        folder = checkpoint_dir(self.config.out)
        path = folder / f"step-{self.step:08d}.pt"
        if not self.world.is_main:
            return path
        state = {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "global_batch": self.global_batch,
            "config": self.config.record(),
            "net_config": self.network.config.to_dict(),
            "style": self.config.style_image.stem,
            "seconds": self.seconds,
            "unreadable_files": sorted(self.unreadable),
            "init_sha256": self.init_sha256,
        }
        try:
            with atomic_path(path) as temporary:
                torch.save(state, temporary)
        except StylizeError as error:  # e.g. the disk is full: the older checkpoints are intact
            raise StylizeError(f"{error}; the last good checkpoint is {self.latest_checkpoint()}") from None
        # Older checkpoints beyond the last few, and temporary files a killed run left behind.
        for old in [*_checkpoint_files(folder)[:-CHECKPOINTS_KEPT], *folder.glob(".step-*")]:
            old.unlink(missing_ok=True)
        return path

    def latest_checkpoint(self) -> str:
        found = _checkpoint_files(checkpoint_dir(self.config.out))
        return str(found[-1]) if found else "none"


def _load_style(config: TrainConfig, device: torch.device) -> tuple[torch.Tensor, str]:
    """The style image at ``style_size`` on ``device``, and its thumbnail for the model file."""
    style = load_image(config.style_image).rgb
    return resize_long_side(style, config.style_size).to(device), encode_thumbnail(style)


def train(
    config: TrainConfig,
    on_progress: Callable[[StepReport], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.steps`` steps (continuing ``config.resume`` if given) and
    write the model to ``config.out``; ``on_progress`` hears about every step,
    ``on_notice`` about a long wait (the loss network's download).

    Under torchrun every process calls this; they train as one (see distributed).
    """
    world = World.from_environment()
    with process_group(world):
        if world.is_main:
            return _train(config, world, on_progress, on_notice)
        return _train(config, world, None, None)


def _train(
    config: TrainConfig,
    world: World,
    on_progress: Callable[[StepReport], None] | None,
    on_notice: Callable[[str], None] | None,
) -> TrainResult:
    device = process_device(resolve_device(config.device), world)
    config = config.for_device(device)
    dtype = training_dtype(config.precision, device)
    files = training_files(config.data)
    style, thumbnail = _load_style(config, device)
    if config.out.is_dir():
        raise StylizeError(f"--out {config.out} is a folder; give a model file name such as style.safetensors")
    if world.is_main:
        check_writable(config.out)
    checkpoint = read_checkpoint(find_checkpoint(config.resume), config, world.size) if config.resume else None

    torch.manual_seed(config.seed)
    fmt = memory_format(device)
    network = TransformerNet(config.net_config).to(device, memory_format=fmt).train()
    if config.sync_bn and world.is_distributed:
        check_sync_batch_norm(network, device, config.norm)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    run = _Run(config, network, optimizer, world)
    if checkpoint is not None:
        run.restore(checkpoint)
    elif config.init is not None:
        run.init_sha256 = _start_from(network, config)
    trained = parallel(network, world, device, config.sync_bn)  # same parameters, so the optimizer still fits
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    style_layers = config.layers_for_style
    if on_notice is not None and config.loss_weights is None and not imagenet_weights_cached(config.loss_network):
        on_notice(f"downloading torchvision's ImageNet {config.loss_network} weights (about 530 MB, once)")
    loss_network = LossNetwork(config.loss_network, [config.content_layer, *style_layers], config.loss_weights).to(
        device, memory_format=fmt
    )
    if dtype != torch.float32:  # frozen, so cast once instead of at every call
        loss_network.features.to(dtype)
    with torch.no_grad(), autocast(device, dtype):
        targets = style_targets(loss_network(style), style_layers)
    weights = config.loss_weights_terms

    loader = crop_loader(
        files,
        image_size=config.image_size,
        batch_size=config.batch_size,
        seed=config.seed,
        start_step=run.step,
        steps=config.steps,
        workers=config.workers,
        pin_memory=device.type == "cuda",
        rank=world.rank,
        processes=world.size,
    )
    metrics = MetricsLog(metrics_path(config.out), keep_until_step=run.step) if world.is_main else None
    sync_every = 1 if device.type == "cpu" else GPU_SYNC_EVERY
    pending: list[tuple[int, torch.Tensor]] = []
    last_report = (run.step, time.perf_counter())

    def report_pending(stop_requested: bool) -> bool:
        """Read queued losses back (one sync; averaged over processes), refuse
        non-finite ones, log and report. True if any process was asked to stop."""
        nonlocal last_report
        stop_row = torch.full((1, 4), float(stop_requested), device=device)
        rows = mean_over_processes(torch.cat([torch.stack([terms for _, terms in pending]), stop_row]), world)
        *values, stop_flags = rows.tolist()
        now = time.perf_counter()
        speed = (pending[-1][0] - last_report[0]) * run.global_batch / max(now - last_report[1], 1e-9)
        for (step, _), (content, style_value, tv, total) in zip(pending, values, strict=True):
            if not all(map(math.isfinite, (content, style_value, tv))):
                raise TrainingDiverged(
                    f"the loss became {total} at step {step}; stopped without saving it. "
                    f"Last good checkpoint: {run.latest_checkpoint()}. Try a lower --lr or --style-weight"
                )
            record = {"step": step, "content": content, "style": style_value, "tv": tv, "total": total}
            if metrics is not None:
                metrics.write({**record, "images_per_s": round(speed, 2), "seconds": round(run.seconds, 3)})
            if on_progress is not None:
                on_progress(
                    StepReport(
                        **record, steps=config.steps, images_per_second=speed, unreadable_files=len(run.unreadable)
                    )
                )
        pending.clear()
        last_report = (run.step, now)
        return stop_flags[0] > 0

    try:
        with _StopRequest() as stop:
            for images, unreadable in loader:
                run.unreadable.update(unreadable)
                images = images.to(device, non_blocking=True, memory_format=fmt)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(
                        run.step, config.steps, config.lr, config.lr_schedule, config.warmup_steps
                    )
                with autocast(device, dtype):
                    output = trained(images)
                    with torch.no_grad():
                        input_features = loss_network(images, layers=(config.content_layer,))
                    terms = perceptual_loss(
                        output, loss_network(output), input_features, targets, config.content_layer, weights
                    )
                optimizer.zero_grad(set_to_none=True)
                terms.total.backward()
                optimizer.step()
                run.step += 1
                pending.append((run.step, terms.stacked()))

                checkpoint_due = bool(config.checkpoint_every) and (
                    run.step % config.checkpoint_every == 0 or run.step == config.steps
                )
                # Processes must meet at the same steps, so they agree on stopping
                # at their regular reports; a lone process stops at once.
                agreed_stop = False
                lone_stop = stop.requested and not world.is_distributed
                if len(pending) >= sync_every or checkpoint_due or lone_stop or run.step == config.steps:
                    agreed_stop = report_pending(stop.requested)
                if checkpoint_due:
                    run.save_checkpoint()
                if agreed_stop or (stop.requested and not world.is_distributed):
                    saved = run.save_checkpoint()
                    raise TrainingInterrupted(
                        f"interrupted at step {run.step}/{config.steps}; checkpoint saved: {saved}. "
                        f"Continue with the same command plus --resume {saved}"
                    )
    finally:
        if metrics is not None:
            metrics.close()

    run.unreadable = union_over_processes(run.unreadable, world)
    if world.is_main:
        _save_trained_model(config, run, thumbnail, device)
    wait_for_all(world)  # the model exists when any process returns
    return TrainResult(
        model=config.out,
        metrics=metrics_path(config.out),
        steps=run.step,
        seconds=run.seconds,
        unreadable_files=tuple(sorted(run.unreadable)),
        wrote_files=world.is_main,
    )


def _start_from(network: TransformerNet, config: TrainConfig) -> str:
    """Copy a trained model's weights into ``network``; the model's sha256."""
    path = resolve_model(config.init)
    trained = load_model(path).network
    if trained.config != network.config:
        raise StylizeError(
            f"the model to start from, {path}, is a {_describe(trained.config)} network; "
            f"this run trains a {_describe(network.config)} one"
        )
    network.load_state_dict(trained.state_dict())
    return _sha256(path)


def _describe(config: NetConfig) -> str:
    groups = f" ({config.groups} groups)" if config.norm == "group" else ""
    legacy = "" if config.bounded_output and config.input_scale == 1 else " unbounded-output"
    return f"{config.norm}-norm{groups}{legacy}"


def _save_trained_model(config: TrainConfig, run: _Run, thumbnail: str, device: torch.device) -> None:
    training = {
        **config.record(),
        "init_sha256": run.init_sha256,
        "steps_done": run.step,
        "processes": run.world.size,
        "images_seen": run.step * run.global_batch,
        "training_seconds": round(run.seconds, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "unreadable_files": len(run.unreadable),
        "loss_weights_sha256": _sha256(config.loss_weights) if config.loss_weights else None,
        "torch": torch.__version__,
        "stylize": VERSION,
    }
    run.network.eval()
    save_model(config.out, run.network, style=config.style_image.stem, training=training, style_thumbnail=thumbnail)


def plan_norm_runs(config: TrainConfig, norms: Sequence[str]) -> list[TrainConfig]:
    """One run per norm, identical in everything else, for a fair comparison.

    Same seed means the same photos in the same order with the same crops and
    the same initial convolution weights (norm layers draw no random numbers).
    With several norms, or ``--out`` an existing folder, models go to
    ``OUT/STYLE-NORM.safetensors``, and ``--resume OUT`` continues each run
    from its own checkpoints (a run without any starts from scratch).
    """
    if not norms:
        raise StylizeError("give at least one --norm")
    repeated = sorted({norm for norm in norms if list(norms).count(norm) > 1})
    if repeated:
        raise StylizeError(f"--norm {repeated[0]} is given twice")
    for norm in norms:
        check_norm(norm)
    folder = config.out
    if len(norms) == 1 and not folder.is_dir():
        return [dataclasses.replace(config, norm=norms[0])]
    if folder.suffix == MODEL_SUFFIX or folder.is_file():
        raise StylizeError(f"training {len(norms)} norms writes one model each: give --out a folder, not {folder}")
    if config.resume is not None and config.resume.resolve() != folder.resolve():
        raise StylizeError(f"with several norms, --resume takes the --out folder ({folder}), not {config.resume}")
    runs = []
    for norm in norms:
        out = folder / f"{config.style_image.stem}-{norm}{MODEL_SUFFIX}"
        resume = checkpoint_dir(out) if config.resume is not None and _checkpoint_files(checkpoint_dir(out)) else None
        runs.append(dataclasses.replace(config, norm=norm, out=out, resume=resume))
    return runs


def train_norms(
    runs: Sequence[TrainConfig],
    on_progress: Callable[[TrainConfig, StepReport], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> list[TrainResult]:
    """Train the runs of ``plan_norm_runs`` one after another."""
    results = []
    for config in runs:
        report = None if on_progress is None else functools.partial(on_progress, config)
        try:
            results.append(train(config, on_progress=report, on_notice=on_notice))
        except TrainingInterrupted as interrupted:
            if len(runs) == 1:
                raise
            folder = config.out.parent
            raise TrainingInterrupted(
                f"interrupted while training {config.norm} ({len(results)} of {len(runs)} runs done); "
                f"continue with the same command plus --resume {folder}"
            ) from interrupted
    return results
