"""A training run's settings: the device recipes, ``TrainConfig``, what a resume
may change, and the plan for training one model per norm."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stylize.devices import DEFAULT_DEVICE, DEFAULT_PRECISION, check_precision
from stylize.errors import InvalidSetting, StylizeError
from stylize.model.checkpoints import Checkpoint, checkpoint_dir, checkpoint_files
from stylize.model.files import MODEL_SUFFIX, ModelInfo, load_model, read_info, resolve_model
from stylize.model.network import MIN_SIZE, NetConfig, check_resampling
from stylize.model.norms import (
    CONDITIONAL_NORMS,
    CONDITIONAL_TWINS,
    DEFAULT_GROUPS,
    check_groups,
    check_norm,
    check_styles,
)
from stylize.training.losses import SHIFT_MIN_SIZE, LossWeights
from stylize.training.schedule import check_lr_schedule
from stylize.training.vgg import DEFAULT_CONTENT_LAYER, check_loss_network, style_layer_weights


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
    """A run's settings; ``None`` means the recipe's value for the device it runs on.

    ``image_size`` is the side of the square training crops and ``style_size``
    the style image's long side, both in pixels. Raises InvalidSetting for a
    value out of range, ``groups`` that does not divide 32, an unknown norm,
    resampling, loss network, schedule or precision, loss network weights files
    not one per loss network (or none), ``style_layer_weights``
    that do not match ``style_layers``, or several style images for a norm that
    is not conditional.
    """

    style_image: Path
    data: Path
    out: Path
    norm: str = "instance"
    # More styles for one conditional network (``norms.CONDITIONAL_NORMS``), after ``style_image``.
    more_style_images: tuple[Path, ...] = ()
    groups: int = DEFAULT_GROUPS
    resampling: str | None = None  # None: the init model's, else NetConfig's default
    steps: int | None = None
    batch_size: int = 4
    image_size: int | None = None
    style_size: int | None = None
    content_weight: float = LossWeights.content
    # The recipe's (README, "The training recipe"): on the CPU defaults' 2000 steps,
    # style 2 with the shift term painted more and latticed less than style 1 without.
    style_weight: float = 2.0
    tv_weight: float = LossWeights.tv
    shift_weight: float = 300.0
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    precision: str = DEFAULT_PRECISION
    loss_network: str = "vgg16"
    # A torchvision-format state dict of the loss network; None: ImageNet weights, downloaded.
    loss_network_weights: Path | None = None
    # More loss networks, after ``loss_network``: the loss is the mean of every network's
    # (relative) terms, so a stylization must please each VGG, not the quirks of one.
    more_loss_networks: tuple[str, ...] = ()
    # Their weights files, one each, or none (ImageNet weights; none for the first either).
    more_loss_network_weights: tuple[Path, ...] = ()
    content_layer: str = DEFAULT_CONTENT_LAYER
    style_layers: tuple[str, ...] = ()  # empty: the loss network's default layers and weights
    # One per style layer, or empty: every layer given weighs 1.
    style_layer_weights: tuple[float, ...] = ()
    # A trained model (bundled name or file) to start from instead of random weights.
    init: str | None = None
    # Add this run's style to a multi-style init model (or retrain the one of its name):
    # train only that style's γ and β, all else frozen.
    only_norm_params: bool = False
    seed: int = 42
    device: str = DEFAULT_DEVICE
    workers: int | None = None
    checkpoint_every: int = 250
    resume: Path | None = None
    # With several processes: batch norm statistics over all their batches.
    sync_bn: bool = False
    # The command line that started the run, kept in the model file.
    command: str = ""

    def __post_init__(self) -> None:
        _check_ranges(self)
        check_norm(self.norm)
        check_styles(self.norm, len(self.style_images))
        check_groups(self.groups)
        if self.resampling is not None:
            check_resampling(self.resampling)
        for name in (self.loss_network, *self.more_loss_networks):
            check_loss_network(name)
        weights_files = (self.loss_network_weights is not None) + len(self.more_loss_network_weights)
        more = len(self.more_loss_networks)
        if weights_files not in (0, 1 + more) or len(self.more_loss_network_weights) > more:
            raise InvalidSetting("loss_network_weights", "must be given once per loss network, or never")
        check_lr_schedule(self.lr_schedule)
        check_precision(self.precision)
        if self.style_layer_weights and len(self.style_layer_weights) != len(self.style_layers):
            raise InvalidSetting("style_layer_weights", "must give a weight for every style layer, or for none")
        if any(weight < 0 for weight in self.style_layer_weights):
            raise InvalidSetting("style_layer_weights", "must not be negative")
        repeated = _repeated([path.stem for path in self.style_images])
        if repeated:
            raise StylizeError(
                f"the style images need different names (a style is chosen by name): two are {repeated[0]!r}"
            )
        if self.only_norm_params and (self.init is None or self.more_style_images):
            raise InvalidSetting(
                "only_norm_params", "adds (or retrains) one style image of a multi-style --init model: give both"
            )

    def for_device(self, device: torch.device, parent: ModelInfo | None = None) -> TrainConfig:
        """Every ``None`` replaced by the device's recipe, and the resampling by
        the init model's (a fine-tune keeps its parent's network); with
        ``only_norm_params``, the norm too. ``parent``: the init model's info if
        the caller has read it already (else it is read here).

        Raises StylizeError if the init model cannot be found or read, or with
        ``only_norm_params`` holds no conditional norm or has another resampling.
        """
        recipe = recipe_for(device)
        unset = {key: getattr(recipe, key) for key in dataclasses.asdict(recipe) if getattr(self, key) is None}
        if parent is None and self.init:
            parent = load_model(resolve_model(self.init)).info
        if self.resampling is None:
            unset["resampling"] = parent.config.resampling if parent else NetConfig.resampling
        if self.only_norm_params and parent is not None:
            if self.resampling not in (None, parent.config.resampling):
                raise InvalidSetting(
                    "resampling", f"must be the --init model's ({parent.config.resampling}) with --only-norm-params"
                )
            if parent.config.norm not in CONDITIONAL_NORMS and self.style_image.stem == parent.style:
                raise StylizeError(
                    f"{parent.name} is a one-style model of {parent.style!r}: to train it on, leave out "
                    "--only-norm-params; to add a style, rename the image"
                )
            unset["norm"] = _conditional_norm(parent)
        return dataclasses.replace(self, **unset)

    @property
    def style_images(self) -> tuple[Path, ...]:
        """Every style the run learns, in the network's order."""
        return (self.style_image, *self.more_style_images)

    @property
    def style_name(self) -> str:
        """The run's style: the style image's name, or the first's and how many more."""
        more = len(self.more_style_images)
        return self.style_image.stem + (f"+{more}" if more else "")

    @property
    def net_config(self) -> NetConfig:
        resampling = self.resampling or NetConfig.resampling
        styles = len(self.style_images) if self.norm in CONDITIONAL_NORMS else 1
        return NetConfig(norm=self.norm, groups=self.groups, resampling=resampling, styles=styles)

    @property
    def loss_networks(self) -> tuple[tuple[str, Path | None], ...]:
        """Every loss network's (name, weights file or None for ImageNet's), ``loss_network`` first."""
        names = (self.loss_network, *self.more_loss_networks)
        weights = (self.loss_network_weights, *self.more_loss_network_weights)
        return tuple(zip(names, weights + (None,) * (len(names) - len(weights)), strict=True))

    @property
    def style_layer_weighting(self) -> dict[str, float]:
        """Every style layer the loss uses -> its weight."""
        return style_layer_weights(self.loss_network, self.style_layers, self.style_layer_weights)

    @property
    def term_weights(self) -> LossWeights:
        return LossWeights(
            content=self.content_weight,
            style=self.style_weight,
            tv=self.tv_weight,
            shift=self.shift_weight,
            style_layers=tuple(self.style_layer_weighting.items()),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (absolute paths), as stored in checkpoints and models."""
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if isinstance(value, Path):
                values[key] = str(value.resolve())
        for key in ("more_style_images", "more_loss_network_weights"):
            values[key] = [str(path.resolve()) for path in getattr(self, key)]
        values["more_loss_networks"] = list(self.more_loss_networks)
        values["style_layers"] = list(self.style_layer_weighting)
        values["style_layer_weights"] = list(self.style_layer_weighting.values())
        return values

    @property
    def recipe(self) -> Recipe:
        """The device-dependent settings, as ``for_device`` resolved them."""
        steps, image_size, style_size, workers = self.steps, self.image_size, self.style_size, self.workers
        if steps is None or image_size is None or style_size is None or workers is None:
            raise StylizeError("internal: the run's settings were not resolved for a device (for_device)")
        return Recipe(steps, image_size, style_size, workers)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Settings as ``to_dict`` stored them, in today's names; a setting added
        since takes the value that reproduces what training did before it existed.

        Raises StylizeError if a required setting is missing or one is invalid.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        known = {key: value for key, value in _saved_settings(values).items() if key in names}
        missing = [name for name in _REQUIRED if known.get(name) is None]
        if missing:
            raise StylizeError(f"the recorded training settings lack {', '.join(missing)}")
        for name in _PATHS:
            if known.get(name) is not None:
                known[name] = Path(known[name])
        for name in ("style_layers", "style_layer_weights"):
            known[name] = tuple(known.get(name) or ())
        for name in ("more_style_images", "more_loss_network_weights"):
            known[name] = tuple(map(Path, known.get(name) or ()))
        known["more_loss_networks"] = tuple(known.get("more_loss_networks") or ())
        return cls(**known)

    def check_resumable(
        self, checkpoint: Checkpoint, source: Path, processes: int = 1, network: NetConfig | None = None
    ) -> None:
        """Refuse a checkpoint of a different run: only ``RUN_SETTINGS`` may
        change; ``network`` is the run's (default: ``net_config``)."""
        if checkpoint.global_batch != self.batch_size * processes:
            raise StylizeError(
                f"{source} was trained with {checkpoint.global_batch} photos per step, not "
                f"{self.batch_size} x {processes} process(es); resume with batch_size x processes = "
                f"{checkpoint.global_batch}"
            )
        saved = TrainConfig.from_dict(checkpoint.config).to_dict()
        for key, value in self.to_dict().items():
            if key not in RUN_SETTINGS and saved[key] != value:
                raise StylizeError(
                    f"{source} was trained with {key}={saved[key]!r}, not {value!r}; "
                    "resume with the run's original settings"
                )
        if checkpoint.net_config != (network or self.net_config):
            raise StylizeError(f"{source} holds a network of an older stylize (unbounded output); start a new run")


def _check_ranges(config: TrainConfig) -> None:
    for name in ("steps", "batch_size"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise InvalidSetting(name, "must be at least 1")
    for name in ("image_size", "style_size"):
        value = getattr(config, name)
        if value is not None and value < MIN_SIZE:
            raise InvalidSetting(name, f"must be at least {MIN_SIZE} pixels")
    weights = ("content_weight", "style_weight", "tv_weight", "shift_weight")
    for name in (*weights, "workers", "checkpoint_every", "warmup_steps"):
        value = getattr(config, name)
        if value is not None and value < 0:
            raise InvalidSetting(name, "must not be negative")
    if not config.lr > 0:
        raise InvalidSetting("lr", "must be positive")
    if config.shift_weight > 0 and config.image_size is not None and config.image_size < SHIFT_MIN_SIZE:
        raise InvalidSetting("image_size", f"must be at least {SHIFT_MIN_SIZE} pixels with a shift weight")


# Settings that may change when a run is resumed; all others define the run.
# The batch may be split differently over processes, as long as each step
# takes as many photos as before (see ``Checkpoint.global_batch``).
RUN_SETTINGS = frozenset(
    {"steps", "out", "device", "workers", "checkpoint_every", "resume", "batch_size", "precision", "command"}
)
# What training did before these settings existed (no learning-rate schedule),
# and settings since renamed.
_BEFORE_SETTINGS_EXISTED = {"lr_schedule": "constant", "warmup_steps": 0, "resampling": "nearest", "shift_weight": 0.0}
_RENAMED = {"loss_weights": "loss_network_weights"}


_REQUIRED = ("style_image", "data", "out")
_PATHS = ("style_image", "data", "out", "loss_network_weights", "resume")


def _saved_settings(recorded: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's or model's recorded settings in today's names and defaults."""
    renamed = {_RENAMED.get(key, key): value for key, value in recorded.items()}
    return {**_BEFORE_SETTINGS_EXISTED, **renamed}


@dataclass(frozen=True)
class TrainingRecord:
    """What a model file says of the run that made it (``ModelInfo.training``)."""

    settings: TrainConfig
    steps_done: int | None = None
    images_seen: int | None = None
    seconds: float | None = None  # training time, all processes at once

    @classmethod
    def of(cls, recorded: dict[str, Any]) -> TrainingRecord | None:
        """The record of a stylize model; None for a model without one (imported
        from pytorch/examples, or whose settings are incomplete)."""
        try:
            settings = TrainConfig.from_dict(recorded)
        except (StylizeError, TypeError, ValueError):
            return None
        return cls(settings, recorded.get("steps_done"), recorded.get("images_seen"), recorded.get("training_seconds"))


def _conditional_norm(parent: ModelInfo) -> str:
    """The conditional norm a new style joins ``parent`` in: its own, or for a
    one-style model of a plain norm that has one, that norm's conditional twin.

    Raises StylizeError for a parent of any other norm."""
    if parent.config.norm in CONDITIONAL_NORMS:
        return parent.config.norm
    if parent.config.norm in CONDITIONAL_TWINS:
        return CONDITIONAL_TWINS[parent.config.norm]
    plain_norms = " or ".join(f"{plain}-norm" for plain in CONDITIONAL_TWINS)
    raise StylizeError(
        f"--only-norm-params adds a style to a multi-style or a {plain_norms} model; {parent.name} "
        f"is {parent.config.norm}-norm. Train one with --norm {' or --norm '.join(CONDITIONAL_NORMS)}"
    )


def _repeated(values: Sequence[str]) -> list[str]:
    """The values given more than once, sorted."""
    return sorted(value for value, count in Counter(values).items() if count > 1)


def _model_name(config: TrainConfig, norm: str) -> str:
    """STYLE-NORM; with --only-norm-params, the parent's name if the run retrains
    one of its styles in place, else PARENT+STYLE (the parent with one more style)."""
    if not (config.only_norm_params and config.init):
        return f"{config.style_name}-{norm}"
    parent = read_info(resolve_model(config.init))
    in_place = parent.config.norm in CONDITIONAL_NORMS and config.style_name in parent.styles
    return parent.path.stem if in_place else f"{parent.path.stem}+{config.style_name}"


def plan_norm_runs(config: TrainConfig, norms: Sequence[str]) -> list[TrainConfig]:
    """One run per norm, identical in everything else, for a fair comparison.

    Same seed means the same photos in the same order with the same crops and
    the same initial convolution weights (norm layers draw no random numbers).
    With several norms, or ``out`` an existing folder, models go to
    ``out/STYLE-NORM.safetensors``, and ``resume=out`` continues each run from
    its own checkpoints (a run without any starts from scratch).
    """
    if not norms:
        raise InvalidSetting("norm", "must be given at least once")
    repeated = _repeated(norms)
    if repeated:
        raise InvalidSetting("norm", f"{repeated[0]} is given twice")
    for norm in norms:
        check_norm(norm)
    folder = config.out
    if len(norms) == 1 and not folder.is_dir():
        return [dataclasses.replace(config, norm=norms[0])]
    if folder.suffix == MODEL_SUFFIX or folder.is_file():
        raise InvalidSetting("out", f"must be a folder to train {len(norms)} norms (one model each), not {folder}")
    if config.resume is not None and config.resume.resolve() != folder.resolve():
        raise InvalidSetting(
            "resume", f"must be the out folder ({folder}) to resume several norms, not {config.resume}"
        )
    runs = []
    for norm in norms:
        out = folder / f"{_model_name(config, norm)}{MODEL_SUFFIX}"
        resume = checkpoint_dir(out) if config.resume is not None and checkpoint_files(checkpoint_dir(out)) else None
        runs.append(dataclasses.replace(config, norm=norm, out=out, resume=resume))
    return runs
