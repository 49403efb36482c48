"""The training loop: the network against the VGG perceptual loss of a style image
(of one of several, a step each, for a conditional network).

A run is fully determined by its ``TrainConfig``: data order and crops are a
function of (seed, position) (see ``data.py``), so a checkpoint needs only the
weights, the optimizer state and the step to continue exactly. The loop's jobs
each have a function: ``_set_up``, ``_step``, ``_Reporter.flush`` (report),
``_save_checkpoint``, ``_stop``, ``_finish``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import torch
import torch.nn.functional as F

from stylize.devices import autocast, compute_dtype, keep_freed_memory, memory_format, resolve_device
from stylize.errors import StylizeError, TrainingDiverged, TrainingInterrupted
from stylize.fileio import check_writable, file_sha256
from stylize.images import encode_thumbnail, load_image, resize_long_side
from stylize.model.checkpoints import (
    Checkpoint,
    checkpoint_dir,
    find_checkpoint,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from stylize.model.files import ModelInfo, StyleModel, load_model, resolve_model, save_model
from stylize.model.network import NetConfig, TransformerNet
from stylize.model.norms import CONDITIONAL_NORMS, CONDITIONAL_TWINS
from stylize.model.styles import (
    as_conditional,
    set_style_mix,
    style_names,
    style_thumbnails,
    train_only_style,
    with_new_style,
)
from stylize.training.config import TrainConfig
from stylize.training.data import batches, crop_loader, training_files
from stylize.training.distributed import (
    World,
    check_sync_batch_norm,
    mean_over_processes,
    parallel,
    process_device,
    process_group,
    union_over_processes,
    wait_for_all,
)
from stylize.training.losses import mean_terms, perceptual_loss, shift_equivariance, shift_image, style_targets
from stylize.training.metrics import MetricsLog, metrics_log_path
from stylize.training.schedule import learning_rate
from stylize.training.vgg import LossNetwork, announce_download
from stylize.version import VERSION

# Reading losses back from a GPU waits for it; do that once per this many steps.
GPU_SYNC_EVERY = 20


@dataclass(frozen=True)
class StepReport:
    """What ``train``'s ``on_progress`` hears after a step: ``step`` of ``steps``,
    the weighted loss terms (means over the processes), photos per second of
    all processes together, and the training files found unreadable so far."""

    step: int
    steps: int
    content: float
    style: float
    tv: float
    shift: float  # 0 when its weight is 0
    total: float
    images_per_second: float
    unreadable_files: int


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` did: the model file and metrics log it wrote, the steps and
    training seconds in all (a resumed run's earlier ones included), and the
    training files that could not be read (skipped)."""

    model: Path
    metrics: Path
    steps: int
    seconds: float
    unreadable_files: tuple[str, ...]
    # False in the other processes of a distributed run: only the main one writes.
    wrote_files: bool = True


@dataclass
class _Run:
    """A run once set up: what it computes with, and the state that changes as it goes."""

    config: TrainConfig  # every recipe default filled in
    world: World
    device: torch.device
    dtype: torch.dtype
    network: TransformerNet
    trained: torch.nn.Module  # the network, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    loss_networks: list[LossNetwork]
    targets: list[list[dict[str, torch.Tensor]]]  # per loss network, per style in the network's order
    style_thumbnails: list[str]
    files: Sequence[Path]
    # Styles the network holds before this run's (an --only-norm-params run adds
    # to its init model's, or retrains one): names and thumbnails, kept in the file.
    held_styles: tuple[tuple[str, str], ...] = ()
    # Each of this run's styles' row in the network: after the held ones, or
    # the held one of the same name, retrained in place.
    slots: tuple[int, ...] = ()
    step: int = 0
    seconds_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    unreadable: set[str] = field(default_factory=set)
    init_sha256: str | None = None

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.world.size

    @property
    def checkpoints(self) -> Path:
        return checkpoint_dir(self.config.out)

    def restore(self, checkpoint: Checkpoint) -> None:
        self.network.load_state_dict(checkpoint.weights)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.step = checkpoint.step
        self.seconds_before = checkpoint.seconds
        self.unreadable = set(checkpoint.unreadable_files)
        self.init_sha256 = checkpoint.init_sha256


def train(
    config: TrainConfig,
    on_progress: Callable[[StepReport], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.steps`` steps (continuing ``config.resume`` if given) and
    write the model to ``config.out``; ``on_progress`` hears about every step,
    ``on_notice`` about a long wait (the loss network's download).

    Under torchrun every process calls this; they train as one (see distributed).

    Raises InvalidSetting for an unknown device or a setting this machine cannot
    run (no CUDA GPU, ``sync_bn`` without batch norm or CUDA, ImageNet weights
    that cannot be downloaded); StylizeError for a style image, training data,
    loss network weights file, init model or resume checkpoint that is missing,
    unreadable or does not fit the run, or an ``out`` that is a folder or cannot
    be written; TrainingDiverged when the loss stops being finite; and
    TrainingInterrupted on Ctrl-C, once a checkpoint is saved.
    """
    world = World.from_environment()
    with process_group(world):
        if not world.is_main:
            on_progress = on_notice = None
        run = _set_up(config, world, on_notice)
        reporter = _Reporter(run, on_progress)
        try:
            _train(run, reporter)
        finally:
            reporter.close()
        return _finish(run)


def _train(run: _Run, reporter: _Reporter) -> None:
    config, world, recipe = run.config, run.world, run.config.recipe
    loader = crop_loader(
        run.files,
        image_size=recipe.image_size,
        batch_size=config.batch_size,
        seed=config.seed,
        start_step=run.step,
        steps=recipe.steps,
        workers=recipe.workers,
        pin_memory=run.device.type == "cuda",
        rank=world.rank,
        processes=world.size,
    )
    with _StopRequest() as stop:
        for images, unreadable in batches(loader):
            run.unreadable.update(unreadable)
            reporter.add(_step(run, images))
            last = run.step == recipe.steps
            checkpoint_due = bool(config.checkpoint_every) and (run.step % config.checkpoint_every == 0 or last)
            # The rule: every process meets the others (an all-reduce of the losses)
            # at the same steps, the reports, checkpoints and the last one; a stop
            # request (Ctrl-C) is voted on there. A lone process stops at once.
            meeting = reporter.due or checkpoint_due or last or stop.alone(world)
            voted_stop = reporter.flush(stop.requested) if meeting else False
            saved = _save_checkpoint(run) if checkpoint_due else None
            if voted_stop or stop.alone(world):  # Ctrl-C may come during the report
                _stop(run, saved)


def _set_up(config: TrainConfig, world: World, on_notice: Callable[[str], None] | None) -> _Run:
    """Check everything that can fail before the first step, then build the run."""
    device = process_device(resolve_device(config.device), world)
    parent = load_model(resolve_model(config.init)) if config.init is not None else None
    config = config.for_device(device, parent.info if parent else None)
    keep_freed_memory(device)
    files = training_files(config.data)
    styles = [load_image(path).rgb for path in config.style_images]
    if config.out.is_dir():
        raise StylizeError(f"the model path {config.out} is a folder; give a file name such as style.safetensors")
    if world.is_main:
        check_writable(config.out)
    held_styles = _held_styles(parent.info) if parent and config.only_norm_params else ()
    slots = _slots(held_styles, config)
    adds_style = config.only_norm_params and slots[0] == len(held_styles)  # else it retrains a held one
    net_config = config.net_config
    if held_styles:
        net_config = dataclasses.replace(net_config, styles=len(held_styles) + adds_style)
    checkpoint = None
    if config.resume is not None:
        source = find_checkpoint(config.resume)
        checkpoint = read_checkpoint(source)
        _check_same_parent(checkpoint, parent, source)
        config.check_resumable(checkpoint, source, world.size, net_config)

    torch.manual_seed(config.seed)
    network = TransformerNet(net_config).to(device).to(memory_format=memory_format(device)).train()
    if config.sync_bn and world.is_distributed:
        check_sync_batch_norm(network, device, config.norm)
    dtype = compute_dtype(config.precision, device)
    sized_styles = [resize_long_side(style, config.recipe.style_size) for style in styles]
    loss_networks = [_loss_network(config, *named, device, dtype, on_notice) for named in config.loss_networks]
    targets = [_style_targets(config, network, sized_styles, device, dtype) for network in loss_networks]
    run = _Run(
        config=config,
        world=world,
        device=device,
        dtype=dtype,
        network=network,
        trained=network,
        optimizer=_adam(network, config.lr, device),
        loss_networks=loss_networks,
        targets=targets,
        style_thumbnails=[encode_thumbnail(style) for style in styles],
        files=files,
        held_styles=held_styles,
        slots=slots,
    )
    if config.only_norm_params:
        train_only_style(network, slots[0])
    if checkpoint is not None:
        run.restore(checkpoint)
    elif parent is not None:
        _start_from(network, parent, add_style=adds_style)
        note = _start_note(parent.info, config, slots)
        if note and on_notice and world.is_main:
            on_notice(note)
        run.init_sha256 = file_sha256(parent.info.path)
    run.trained = parallel(network, world, device, config.sync_bn)  # same parameters: the optimizer still fits
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return run


def _check_same_parent(checkpoint: Checkpoint, parent: StyleModel | None, source: Path) -> None:
    """A resumed run from --init must find the very file it started from: an
    overwritten parent (``--out`` its own ``--init``) would change the run."""
    if parent is not None and checkpoint.init_sha256 and file_sha256(parent.info.path) != checkpoint.init_sha256:
        raise StylizeError(
            f"{source} started from another {parent.info.path.name} (the file changed since): "
            "resume with the one it started from, or start a new run"
        )


def _adam(network: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam in one fused kernel where torch has one: on a CPU, 4x faster than
    its per-parameter loop. A resumed run keeps the kind its checkpoint had."""
    return torch.optim.Adam(network.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))


def _loss_network(
    config: TrainConfig,
    name: str,
    weights_file: Path | None,
    device: torch.device,
    dtype: torch.dtype,
    on_notice: Callable[[str], None] | None,
) -> LossNetwork:
    """A frozen VGG of the run's layers, in the training dtype."""
    announce_download(name, weights_file, on_notice)
    network = LossNetwork(name, [config.content_layer, *config.style_layer_weighting], weights_file)
    network = network.to(device).to(memory_format=memory_format(device))
    if dtype != torch.float32:  # frozen, so cast once instead of at every call
        network.features.to(dtype)
    return network


def _style_targets(
    config: TrainConfig,
    network: LossNetwork,
    styles: Sequence[torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> list[dict[str, torch.Tensor]]:
    """Each style's Gram matrices under ``network``, computed once."""
    layers = tuple(config.style_layer_weighting)
    with torch.no_grad(), autocast(device, dtype):
        return [style_targets(network(style.to(device)), layers) for style in styles]


def _step(run: _Run, images: torch.Tensor) -> torch.Tensor:
    """One optimizer step; the loss terms, still on the device."""
    config = run.config
    images = images.to(run.device, non_blocking=True, memory_format=memory_format(run.device))
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(run.step, config.recipe.steps, config.lr, config.lr_schedule, config.warmup_steps)
    weights = config.term_weights
    shift = _shift(config.seed, run.step) if weights.shift > 0 else None
    style = _style_index(config.seed, run.step, len(config.style_images))
    if run.network.config.styles > 1:  # this run's style's row, among those the network holds
        mix = F.one_hot(torch.tensor(run.slots[style]), run.network.config.styles)
        set_style_mix(run.network, mix.float())
    with autocast(run.device, run.dtype):
        # The moved photos ride in the same forward pass (one pass, as DDP needs).
        both = run.trained(images if shift is None else torch.cat([images, shift_image(images, shift)]))
        output = both[: len(images)]
        terms = mean_terms([
            perceptual_loss(
                output, network(output), _content_target(network, images, config.content_layer),
                targets[style], config.content_layer, weights,
            )
            for network, targets in zip(run.loss_networks, run.targets, strict=True)
        ])  # fmt: skip
        if shift is not None:
            equivariance = shift_equivariance(output, both[len(images) :], shift)
            terms = dataclasses.replace(terms, shift=weights.shift * equivariance)
    run.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    run.optimizer.step()
    run.step += 1
    return terms.stacked()


@torch.no_grad()
def _content_target(network: LossNetwork, images: torch.Tensor, layer: str) -> dict[str, torch.Tensor]:
    return network(images, layers=(layer,))


def _style_index(seed: int, step: int, styles: int) -> int:
    """The style a step trains: every style once per ``styles`` steps, in an
    order drawn from the seed and that round, the same on every resume and process."""
    round_, position = divmod(step, styles)
    return random.Random(f"styles:{seed}:{round_}").sample(range(styles), styles)[position]


def _shift(seed: int, step: int) -> tuple[int, int]:
    """The step's shift for the equivariance term: 1-3 px down and/or right (a
    multiple of 4 commutes already), the same on every resume and process."""
    rows, cols = divmod(random.Random(f"shift:{seed}:{step}").randrange(1, 16), 4)
    return rows, cols


class _Reporter:
    """Queues each step's losses on the device and reads them back in one sync
    per ``flush``: every step on a CPU, every ``GPU_SYNC_EVERY`` on a GPU."""

    def __init__(self, run: _Run, on_progress: Callable[[StepReport], None] | None):
        self.run = run
        self.on_progress = on_progress
        self.every = 1 if run.device.type == "cpu" else GPU_SYNC_EVERY
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.last = (run.step, time.perf_counter())
        self.log = MetricsLog(metrics_log_path(run.config.out), run.step) if run.world.is_main else None

    def add(self, terms: torch.Tensor) -> None:
        self.pending.append((self.run.step, terms))

    @property
    def due(self) -> bool:
        return len(self.pending) >= self.every

    def flush(self, stop_requested: bool) -> bool:
        """Log and report the queued steps (averaged over processes), refusing
        non-finite losses. Each process's stop request rides along in the same
        sync; the result is whether any process asked to stop."""
        run = self.run
        pending = torch.stack([terms for _, terms in self.pending])
        stop_row = torch.full((1, pending.shape[1]), float(stop_requested), device=run.device)
        rows = torch.cat([pending, stop_row])
        *values, stop_votes = mean_over_processes(rows, run.world).tolist()
        now = time.perf_counter()
        speed = (run.step - self.last[0]) * run.global_batch / max(now - self.last[1], 1e-9)
        for (step, _), terms in zip(self.pending, values, strict=True):
            self._report(step, terms, speed)
        self.pending.clear()
        self.last = (run.step, now)
        return stop_votes[0] > 0

    def _report(self, step: int, terms: list[float], speed: float) -> None:
        content, style, tv, shift, total = terms
        if not all(map(math.isfinite, (content, style, tv, shift))):
            raise TrainingDiverged(
                f"the loss became {total} at step {step}; stopped without saving it. "
                f"Last good checkpoint: {latest_checkpoint(self.run.checkpoints)}. "
                "Try a lower learning rate or style weight"
            )
        record: dict[str, Any] = {
            "step": step,
            "content": content,
            "style": style,
            "tv": tv,
            "shift": shift,
            "total": total,
        }
        if self.log is not None:
            self.log.write({**record, "images_per_s": round(speed, 2), "seconds": round(self.run.seconds, 3)})
        if self.on_progress is not None:
            unreadable = len(self.run.unreadable)
            steps = self.run.config.recipe.steps
            self.on_progress(StepReport(**record, steps=steps, images_per_second=speed, unreadable_files=unreadable))

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _save_checkpoint(run: _Run) -> Path:
    """Every process calls this at the same step; the main one writes."""
    run.unreadable = union_over_processes(run.unreadable, run.world)
    if not run.world.is_main:
        return run.checkpoints
    checkpoint = Checkpoint(
        weights=run.network.state_dict(),
        optimizer=run.optimizer.state_dict(),
        step=run.step,
        global_batch=run.global_batch,
        config=run.config.to_dict(),
        net_config=run.network.config,
        style=run.config.style_name,
        seconds=run.seconds,
        unreadable_files=tuple(sorted(run.unreadable)),
        init_sha256=run.init_sha256,
    )
    return write_checkpoint(run.checkpoints, checkpoint)


def _stop(run: _Run, saved: Path | None) -> NoReturn:
    """Stop with a checkpoint of this step: ``saved`` if its regular one is written already."""
    saved = saved or _save_checkpoint(run)
    raise TrainingInterrupted(f"interrupted at step {run.step}/{run.config.steps}; checkpoint saved: {saved}", saved)


def _finish(run: _Run) -> TrainResult:
    """Write the model (the main process), and wait until it exists for all."""
    run.unreadable = union_over_processes(run.unreadable, run.world)
    if run.world.is_main:
        _save_trained_model(run)
    wait_for_all(run.world)
    return TrainResult(
        model=run.config.out,
        metrics=metrics_log_path(run.config.out),
        steps=run.step,
        seconds=run.seconds,
        unreadable_files=tuple(sorted(run.unreadable)),
        wrote_files=run.world.is_main,
    )


def _save_trained_model(run: _Run) -> None:
    config, device = run.config, run.device
    training = {
        **config.to_dict(),
        "init_sha256": run.init_sha256,
        "steps_done": run.step,
        "processes": run.world.size,
        "images_seen": run.step * run.global_batch,
        "training_seconds": round(run.seconds, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "unreadable_files": len(run.unreadable),
        "loss_weights_sha256": file_sha256(config.loss_network_weights) if config.loss_network_weights else None,
        "more_loss_weights_sha256": [file_sha256(path) for path in config.more_loss_network_weights],
        "torch": torch.__version__,
        "stylize": VERSION,
    }
    run.network.eval()
    styles = list(run.held_styles)
    names = [path.stem for path in config.style_images]
    for slot, style in zip(run.slots, zip(names, run.style_thumbnails, strict=True), strict=True):
        styles[slot : slot + 1] = [style]  # replaced in place, or appended
    conditional = config.norm in CONDITIONAL_NORMS
    save_model(
        config.out, run.network, config.style_name, training, run.style_thumbnails[0],
        styles=[name for name, _ in styles] if conditional else (),
        style_thumbnails=[thumbnail for _, thumbnail in styles] if conditional else (),
    )  # fmt: skip


def _held_styles(parent: ModelInfo) -> tuple[tuple[str, str], ...]:
    """The styles an ``only_norm_params`` run adds one to (or retrains one of): names and thumbnails."""
    return tuple(zip(style_names(parent), style_thumbnails(parent), strict=True))


def _slots(held_styles: tuple[tuple[str, str], ...], config: TrainConfig) -> tuple[int, ...]:
    """Each style image's row in the network: after the held styles, or the
    held one of the same name (an --only-norm-params run retrains it)."""
    held = [name for name, _ in held_styles]
    if len(config.style_images) == 1 and config.style_image.stem in held:
        return (held.index(config.style_image.stem),)
    return tuple(range(len(held), len(held) + len(config.style_images)))


def _start_note(parent: ModelInfo, config: TrainConfig, slots: tuple[int, ...]) -> str | None:
    """What to tell about a run started from ``parent``: which held style an
    --only-norm-params run retrains in place, or, for a joint run whose names
    differ from the model's (another order), that each style starts from the
    γ and β of the model's style in its place, whatever the names."""
    held = style_names(parent)
    if config.only_norm_params:
        if slots[0] == len(held):  # a new style
            return None
        return f"{parent.path.name} holds {held[slots[0]]!r}: retraining its γ and β in place, the others bit for bit"
    wanted = tuple(path.stem for path in config.style_images)
    if len(held) < 2 or held == wanted:
        return None
    pairs = ", ".join(f"{new} from {old}" for new, old in zip(wanted, held, strict=True) if new != old)
    return (
        f"{parent.path.name} holds the styles {', '.join(held)}; each style starts from the one in its place: {pairs}"
    )


def _start_from(network: TransformerNet, parent: StyleModel, add_style: bool = False) -> None:
    """Copy a trained model's weights into ``network`` (with ``add_style``, the
    model's styles and a new one last). A plain-norm model starts its
    conditional twin: as the first style with ``add_style``, else as every
    style (each then trains its own γ and β)."""
    path, trained = parent.info.path, parent.network
    plain = CONDITIONAL_TWINS.get(trained.config.norm) == network.config.norm
    held = network.config.styles if plain else trained.config.styles + add_style
    norm = network.config.norm if plain else trained.config.norm
    # Resampling changes no weight's name or shape: a fine-tune may switch it.
    expected = dataclasses.replace(trained.config, norm=norm, resampling=network.config.resampling, styles=held)
    if expected != network.config:
        hint = f" (pass --norm {trained.config.norm})" if trained.config.norm != network.config.norm else ""
        raise StylizeError(
            f"the network of the model to start from, {path}, is {_describe(trained.config)}; "
            f"this run's is {_describe(network.config)}{hint}"
        )
    state = as_conditional(network, trained.state_dict(), held - add_style) if plain else trained.state_dict()
    network.load_state_dict(with_new_style(state) if add_style else state)


def _describe(config: NetConfig) -> str:
    groups = f" ({config.groups} groups)" if config.norm == "group" else ""
    styles = f" ({config.styles} styles)" if config.norm in CONDITIONAL_NORMS else ""
    legacy = "" if config.bounded_output and config.input_scale == 1 else " unbounded-output"
    return f"{config.norm}-norm{groups}{styles}{legacy}"


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

    def alone(self, world: World) -> bool:
        """Requested in a run of one process, which needs no vote to stop."""
        return self.requested and not world.is_distributed


def train_norms(
    runs: Sequence[TrainConfig],
    on_progress: Callable[[TrainConfig, StepReport], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> list[TrainResult]:
    """Train the runs of ``config.plan_norm_runs`` one after another."""
    results = []
    for config in runs:
        report = None if on_progress is None else functools.partial(on_progress, config)
        try:
            results.append(train(config, on_progress=report, on_notice=on_notice))
        except TrainingInterrupted as interrupted:
            if len(runs) == 1:
                raise
            done = f"{len(results)} of {len(runs)} runs done"
            raise TrainingInterrupted(
                f"interrupted while training {config.norm} ({done})", resume_from=config.out.parent
            ) from interrupted
    return results
