"""The instance-vs-batch-norm experiment behind ``stylize compare``.

Every model stylizes every content image three ways: as it is; with its
contrast scaled around its mean, a change instance norm removes exactly in its
first layer (up to its epsilon) while batch norm's fixed statistics pass it on;
and in train mode inside batches of different neighbours, where batch norm
normalizes with the batch's statistics instead of the image's own. Differences
are mean absolute differences on the 0..255 scale.

With ``reference_steps``, each photo is also stylized by optimising its pixels
against the first model's own training loss: the ceiling that loss allows, so
how far a trained network is from it reads off one column.

A multi-style model gives a column per style (or per one of ``styles``); with
``blend_strip``, three mixes go between each two neighbouring columns (two
columns become five, three become nine: a walk through the styles).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stylize.devices import DEFAULT_DEVICE, memory_format, resolve_device
from stylize.errors import InvalidSetting, StylizeError
from stylize.images import decode_thumbnail, load_image, resize_long_side
from stylize.inference.optimization import OptimizationSettings, StyleImage, StyleOptimizer
from stylize.inference.stylizer import InferenceSettings, Stylizer
from stylize.model.blend import blend_models
from stylize.model.files import ModelInfo, StyleModel, load_model, resolve_models
from stylize.model.network import MIN_SIZE
from stylize.model.styles import choose_styles, style_names
from stylize.training.config import TrainConfig, TrainingRecord
from stylize.training.losses import LossWeights, content_loss, style_loss_per_layer, style_targets
from stylize.training.vgg import (
    DEFAULT_CONTENT_LAYER,
    LossNetwork,
    check_loss_network,
    imagenet_weights_cached,
    style_layer_weights,
)

# The mixes of a blend strip, from one column (0) to the next (1).
BLEND_STRIP = (0.0, 0.25, 0.5, 0.75, 1.0)
# Besides x1, the plain stylization. Sensitivity compares x1 with the first.
CONTRAST_FACTORS = (0.5, 1.5)
NEIGHBOURS_PER_BATCH = 3
# The differences measured are a few levels of 255: every model runs in fp32,
# so that precision never enters them (bf16 is the default for some norms only).
EXPERIMENT_SETTINGS = InferenceSettings(precision="fp32", compile=False)
# Neighbours far apart in brightness, made from the image itself so that any
# content works: the image itself is the same in both batches.
NEIGHBOURS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "dark": lambda images: images * 0.25,
    "bright": lambda images: 0.75 + images * 0.25,
}


def adjust_contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale each image's deviation from its per-channel mean; clamped to [0, 1],
    which leaves factors up to 1 exact."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    return (mean + factor * (images - mean)).clamp(0, 1)


# Frequencies (cycles per pixel, vertical and horizontal) of the lattices that
# stride-2 and 2x-upsampling layers leave behind: periods of 2 and 4 pixels.
LATTICE_FREQUENCIES = ((0, 0.25), (0.25, 0), (0.25, 0.25), (0, 0.5), (0.5, 0), (0.5, 0.5), (0.25, 0.5), (0.5, 0.25))


def lattice_strength(image: torch.Tensor) -> float:
    """How far the spectrum peaks at the lattice frequencies, in dB over the
    spectrum around each of them (median of a ring of bins 3-8 away), averaged.

    A stylization with a grid of period 2 or 4 pixels scores well above the photo
    it came from; one without scores about the same.
    """
    grey = image.float().mean(dim=-3).reshape(image.shape[-2:])
    grey = grey - grey.mean()
    height, width = grey.shape
    window = torch.outer(torch.hann_window(height, periodic=False), torch.hann_window(width, periodic=False))
    power = torch.fft.fft2(grey * window).abs().square()
    near, ring = torch.arange(-1, 2), torch.tensor([d for d in range(-8, 9) if abs(d) > 2])
    levels = []
    for fy, fx in LATTICE_FREQUENCIES:
        row, col = round(fy * height), round(fx * width)
        peak = power[(row + near) % height][:, (col + near) % width].max()
        around = power[(row + ring) % height][:, (col + ring) % width].median()
        levels.append(10 * torch.log10(peak.clamp_min(1e-20) / around.clamp_min(1e-20)))
    return float(torch.stack(levels).mean())


def mean_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """On the 0..255 scale, as a viewer sees the images."""
    return float((a.float() - b.float()).abs().mean() * 255)


@dataclass(frozen=True)
class CompareSettings:
    """What ``compare`` measures with (sizes in pixels).

    Raises InvalidSetting for a ``size`` under 16, a negative
    ``reference_steps`` or an unknown ``loss_network``.
    """

    size: int = 256  # long side of every content image, px
    device: str = DEFAULT_DEVICE
    loss_network: str | None = None  # default: each model's training loss network
    loss_network_weights: Path | None = None  # default: each model's training weights file
    stylized_only: bool = False  # the sheet shows only the plain results (a gallery); same numbers
    # L-BFGS steps of the optimisation column (0: none): the first model's loss, optimised per photo.
    reference_steps: int = 0
    styles: tuple[str, ...] = ()  # a multi-style model's styles to show; empty: all
    blend_strip: bool = False  # three mixes between each two neighbouring columns

    def __post_init__(self) -> None:
        if self.size < MIN_SIZE:
            raise InvalidSetting("size", f"must be at least {MIN_SIZE} pixels")
        if self.reference_steps < 0:
            raise InvalidSetting("reference_steps", "must not be negative")
        if self.loss_network is not None:
            check_loss_network(self.loss_network)


@dataclass(frozen=True)
class Stylizations:
    """One model's outputs for one content image (NCHW in [0, 1], on the CPU)."""

    plain: torch.Tensor
    contrast: dict[float, torch.Tensor]
    in_batch: dict[str, torch.Tensor]  # train mode, among neighbours of each kind


@dataclass(frozen=True)
class Losses:
    """What ``_LossMeter`` measured of one model's outputs (means over the photos)."""

    content: float | None = None  # unweighted, as the model's training measured it
    style: float | None = None
    # The strength of a stylization: its style loss relative to the photo's own
    # (1: as far from the painting's statistics as the photo, 0: there), in all
    # and per style layer, each a ratio of sums over the content images.
    style_vs_photo: float | None = None
    style_vs_photo_per_layer: dict[str, float] = field(default_factory=dict)
    source: str = ""  # what measured the losses, or why they are missing

    @classmethod
    def of(
        cls,
        content: float,
        outputs: dict[str, float],
        photos: dict[str, float],
        weights: dict[str, float],
        count: int,
        source: str,
    ) -> Losses:
        """From the per-layer sums, over ``count`` photos, of the outputs' and the photos' style losses."""
        output, photo = (sum(weights[layer] * value for layer, value in sums.items()) for sums in (outputs, photos))
        per_layer = {layer: outputs[layer] / max(photos[layer], _NONZERO) for layer in outputs}
        return cls(content, output / count, output / max(photo, _NONZERO), per_layer, source)

    def cells(self, lattice: float) -> list[str]:
        """The lattice and loss cells of a column on the sheet and in the table."""
        losses = (self.content, self.style, self.style_vs_photo)
        return [f"{lattice:+.1f} dB", *("n/a" if value is None else f"{value:.3g}" for value in losses)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "content_loss": self.content,
            "style_loss": self.style,
            "style_vs_photo": self.style_vs_photo,
            "style_vs_photo_per_layer": self.style_vs_photo_per_layer,
            "loss_source": self.source,
        }


# Keeps a ratio finite where the photo already has the painting's statistics.
_NONZERO = 1e-12


@dataclass(frozen=True)
class ModelReport:
    info: ModelInfo
    contrast_sensitivity: float  # output change between contrast x1 and x0.5
    batch_sensitivity: float  # output change between dark and bright neighbours, train mode
    train_eval_gap: float  # output change between train mode (either batch) and eval mode
    lattice: float  # lattice_strength of the output minus the photo's, dB
    losses: Losses

    def shown(self) -> list[str]:
        """The three changes and two losses as the sheet and the CLI's table show them."""
        changes = (self.contrast_sensitivity, self.batch_sensitivity, self.train_eval_gap)
        return [*(f"{value:.2f}" for value in changes), *self.losses.cells(self.lattice)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.info.name,
            "path": str(self.info.path),
            "norm": self.info.config.norm,
            "style": self.info.style,
            "contrast_sensitivity": round(self.contrast_sensitivity, 4),
            "batch_sensitivity": round(self.batch_sensitivity, 4),
            "train_eval_gap": round(self.train_eval_gap, 4),
            "lattice_db": round(self.lattice, 2),
            **self.losses.to_dict(),
        }


@dataclass(frozen=True)
class Reference:
    """The optimisation of the first model's own training loss for each photo
    (Gatys et al. 2016, single scale, L-BFGS): what its loss network allows at
    best, so a model's distance from it is one number and one picture."""

    steps: int
    outputs: list[torch.Tensor]  # one per content image, NCHW in [0, 1]
    lattice: float  # as ModelReport's
    losses: Losses

    def shown(self) -> list[str]:
        """The sheet's and the table's cells; the changes measure networks, so n/a."""
        return ["n/a"] * 3 + self.losses.cells(self.lattice)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "optimisation (Gatys et al. 2016), L-BFGS, single scale, from the photo",
            "steps": self.steps,
            "lattice_db": round(self.lattice, 2),
            **self.losses.to_dict(),
        }


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` found: the content images (1x3xHxW in [0, 1], long side
    ``settings.size`` px) and their labels, each model's report (changes on the
    0..255 scale) and outputs, and the optimisation reference if asked."""

    content_names: list[str]
    contents: list[torch.Tensor]
    reports: list[ModelReport]
    outputs: list[list[Stylizations]]  # [model][content]
    settings: CompareSettings
    reference: Reference | None = None

    def to_dict(self) -> dict[str, Any]:
        reference = {"reference": self.reference.to_dict()} if self.reference is not None else {}
        return {
            "contents": self.content_names,
            "size": self.settings.size,
            "contrast_factors": [1.0, *CONTRAST_FACTORS],
            "neighbours": {"per_batch": NEIGHBOURS_PER_BATCH, "kinds": list(NEIGHBOURS)},
            "units": "mean absolute difference, 0..255",
            "models": [report.to_dict() for report in self.reports],
            **reference,
        }


def neighbour_batch(image: torch.Tensor, kind: str) -> torch.Tensor:
    """The image first, then its neighbours."""
    return torch.cat([image, *[NEIGHBOURS[kind](image)] * NEIGHBOURS_PER_BATCH])


@torch.no_grad()
def _first_in_train_mode(network: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The first image's output with ``network`` in train mode."""
    output = network.train()(batch.to(device, memory_format=memory_format(device)))
    return output[:1].float().clamp(0, 1).cpu()


def stylize_variants(stylizer: Stylizer, image: torch.Tensor) -> Stylizations:
    # Train mode runs on a copy, so the model's running statistics stay as trained.
    training_copy = copy.deepcopy(stylizer.model.network)
    return Stylizations(
        plain=stylizer(image),
        contrast={factor: stylizer(adjust_contrast(image, factor)) for factor in CONTRAST_FACTORS},
        in_batch={
            kind: _first_in_train_mode(training_copy, neighbour_batch(image, kind), stylizer.device)
            for kind in NEIGHBOURS
        },
    )


@dataclass(frozen=True)
class _LossSetup:
    """The loss a model's numbers are measured with, and its reference optimises."""

    name: str
    weights: Path | None
    content_layer: str
    layer_weights: dict[str, float]
    style: torch.Tensor | None
    style_source: str
    trained: TrainConfig | None  # the model's recorded settings, if any

    @property
    def source(self) -> str:
        style = self.style_source if self.style is not None else "no style image"
        return f"{self.name} ({self.weights.name if self.weights else 'ImageNet'}), {style}"


class _LossMeter:
    """Content and style loss of a model's outputs, measured as its training did
    (same loss network, layers and style image) unless settings override."""

    def __init__(self, settings: CompareSettings, device: torch.device):
        self.settings = settings
        self.device = device
        self._networks: dict[tuple[Any, ...], LossNetwork] = {}

    def _network(self, name: str, layers: tuple[str, ...], weights: Path | None) -> LossNetwork:
        key = (name, layers, weights)
        if key not in self._networks:
            self._networks[key] = LossNetwork(name, layers, weights).to(self.device)
        return self._networks[key]

    def _style_image(self, info: ModelInfo, trained: TrainConfig | None) -> tuple[torch.Tensor | None, str]:
        path = trained.style_image if trained else None
        # A multi-style model's column is one style: that style's image, where this run had it,
        # else a painting of its name beside the run's (a style its --init model held).
        if trained and (trained.more_style_images or trained.only_norm_params):
            named = [path for path in trained.style_images if path.stem == info.style]
            beside = [path.with_stem(info.style) for path in trained.style_images]
            path = next((path for path in named or beside if path.is_file()), None)
        if trained is not None and path is not None and path.is_file():
            style = load_image(path).rgb
            sized = style if trained.style_size is None else resize_long_side(style, trained.style_size)
            return sized, "style image"
        return decode_thumbnail(info.style_thumbnail), "style thumbnail"

    def setup(self, info: ModelInfo) -> _LossSetup | str:
        """The model's loss, or why it cannot be measured."""
        record = TrainingRecord.of(info.training)
        trained = record.settings if record is not None else None
        trained_with = trained.loss_network if trained is not None else TrainConfig.loss_network
        name = self.settings.loss_network or trained_with
        same = trained if name == trained_with else None  # what the model's own training measured
        weights = self.settings.loss_network_weights or (same.loss_network_weights if same is not None else None)
        if weights is not None and not weights.is_file():
            return f"no loss network: {weights} not found"
        if weights is None and not imagenet_weights_cached(name):
            return f"no loss network: {name}'s ImageNet weights are not downloaded"
        content_layer = same.content_layer if same is not None else DEFAULT_CONTENT_LAYER
        layer_weights = same.style_layer_weighting if same is not None else style_layer_weights(name)
        return _LossSetup(name, weights, content_layer, layer_weights, *self._style_image(info, trained), trained)

    @torch.no_grad()
    def measure(
        self, setup: _LossSetup | str, contents: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]
    ) -> Losses:
        """The outputs' losses under ``setup``, what ``setup(info)`` returned (a string: why there are none)."""
        if isinstance(setup, str):
            return Losses(source=setup)
        layer_weights, content_layer = setup.layer_weights, setup.content_layer
        network = self._network(setup.name, (content_layer, *layer_weights), setup.weights)
        style = setup.style
        targets = style_targets(network(style.to(self.device)), tuple(layer_weights)) if style is not None else None
        content_total = 0.0
        styles = {"output": dict.fromkeys(layer_weights, 0.0), "photo": dict.fromkeys(layer_weights, 0.0)}
        for content, output in zip(contents, outputs, strict=True):
            features = {"photo": network(content.to(self.device)), "output": network(output.to(self.device))}
            content_total += float(content_loss(features["output"][content_layer], features["photo"][content_layer]))
            for image, sums in styles.items():
                for layer, term in (style_loss_per_layer(features[image], targets) if targets else {}).items():
                    sums[layer] += float(term)
        if targets is None:
            return Losses(content_total / len(contents), source=setup.source)
        count = len(contents)
        return Losses.of(content_total / count, styles["output"], styles["photo"], layer_weights, count, setup.source)


def _report(
    info: ModelInfo,
    content_lattices: Sequence[float],
    outputs: Sequence[Stylizations],
    losses: Losses,
) -> ModelReport:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    low = CONTRAST_FACTORS[0]
    dark, bright = NEIGHBOURS
    return ModelReport(
        info=info,
        contrast_sensitivity=mean([mean_abs_difference(run.plain, run.contrast[low]) for run in outputs]),
        batch_sensitivity=mean([mean_abs_difference(run.in_batch[dark], run.in_batch[bright]) for run in outputs]),
        train_eval_gap=mean(
            [mean_abs_difference(batch, run.plain) for run in outputs for batch in run.in_batch.values()]
        ),
        lattice=mean(
            [lattice_strength(run.plain) - photo for photo, run in zip(content_lattices, outputs, strict=True)]
        ),
        losses=losses,
    )


def content_labels(contents: Sequence[Path]) -> list[str]:
    """Each content image's file name, or its path as given where names repeat."""
    names = [Path(path).name for path in contents]
    return [name if names.count(name) == 1 else str(path) for name, path in zip(names, contents, strict=True)]


def _reference_setup(info: ModelInfo, setup: _LossSetup | str) -> _LossSetup:
    """The loss the reference optimises: ``info``'s own, checked before any model runs."""
    if isinstance(setup, str) or setup.style is None:
        why = setup if isinstance(setup, str) else "no style image or thumbnail"
        raise InvalidSetting("reference_steps", f"needs {info.name}'s loss network and style image: {why}")
    return setup


def _reference(
    setup: _LossSetup, images: Sequence[torch.Tensor], meter: _LossMeter, lattices: Sequence[float]
) -> Reference:
    """Optimise each photo against the first model's own training loss (see ``Reference``)."""
    assert setup.style is not None  # _reference_setup checked
    steps = meter.settings.reference_steps
    weights = setup.trained.term_weights if setup.trained is not None else LossWeights()
    optimizer = StyleOptimizer(
        [StyleImage(setup.style)],
        OptimizationSettings(
            steps=steps, levels=1, content_weight=weights.content, style_weight=weights.style,
            tv_weight=weights.tv, style_size=max(setup.style.shape[-2:]), loss_network=setup.name,
            loss_network_weights=setup.weights, content_layer=setup.content_layer,
            style_layers=tuple(setup.layer_weights), style_layer_weights=tuple(setup.layer_weights.values()),
            precision="fp32", device=str(meter.device),
        ),
    )  # fmt: skip
    outputs = [optimizer.optimize(image).cpu() for image in images]
    lattice = sum(lattice_strength(out) - photo for out, photo in zip(outputs, lattices, strict=True))
    return Reference(steps, outputs, lattice / len(images), meter.measure(setup, images, outputs))


def model_columns(paths: Sequence[Path], settings: CompareSettings, device: torch.device) -> list[StyleModel]:
    """The models of the sheet's columns: each file's model, a multi-style one
    as one model per style (those of ``settings.styles``, if given, in that
    order); with ``settings.blend_strip``, the ``BLEND_STRIP`` mixes between
    each two neighbouring ones.

    Raises StylizeError for a style no multi-style model holds, or a blend
    strip of fewer than two columns or of models that cannot be blended.
    """
    columns: list[StyleModel] = []
    for path in paths:
        model = load_model(path, device)
        names = style_names(model.info) if model.info.config.styles > 1 else ()
        shown = [name for name in settings.styles if name in names] if settings.styles else names
        columns.extend([choose_styles(model, {name: 1.0}) for name in shown] if names else [choose_styles(model)])
    shown_styles = {column.info.style for column in columns}
    missing = [name for name in settings.styles if name not in shown_styles]
    if missing:
        styles = ", ".join(sorted(shown_styles))
        raise StylizeError(f"no model here holds the style {missing[0]!r} (styles shown: {styles})")
    if not settings.blend_strip:
        return columns
    if len(columns) < 2:
        raise StylizeError("a blend strip needs two columns: two models, or a multi-style model's two styles")
    strip = columns[:1]
    for first, second in itertools.pairwise(columns):
        strip.extend([*(blend_models(first, second, mix) for mix in BLEND_STRIP[1:-1]), second])
    return strip


def compare(
    contents: Sequence[Path],
    models: Sequence[str | Path],
    settings: CompareSettings = CompareSettings(),
    on_stage: Callable[[int, int, str], None] | None = None,
) -> Comparison:
    """Run the experiment for every model on every content image, then the
    reference if asked; ``on_stage(index, count, name)`` hears when each starts.

    ``contents``: image files; ``models``: model files, folders of them, bundled
    names, or bundled style names (every norm of that style).

    Raises StylizeError for unreadable images or models, or columns that
    ``model_columns`` refuses, and InvalidSetting
    (``reference_steps``) when the first model's loss cannot be rebuilt, or
    (``device``) for an unknown device or one this machine lacks.
    """
    if not contents or not models:
        raise StylizeError("compare needs at least one content image and one model")
    device = resolve_device(settings.device)
    images = [resize_long_side(load_image(path).rgb, settings.size) for path in contents]
    columns = model_columns(resolve_models(models), settings, device)
    meter = _LossMeter(settings, device)
    content_lattices = [lattice_strength(image) for image in images]
    stages = len(columns) + (1 if settings.reference_steps else 0)
    reports, outputs = [], []
    reference_setup = None
    for index, model in enumerate(columns):
        stylizer = Stylizer(model, device, EXPERIMENT_SETTINGS)
        info = stylizer.model.info
        loss_setup = meter.setup(info)
        if index == 0 and settings.reference_steps:
            reference_setup = _reference_setup(info, loss_setup)
        if on_stage is not None:
            on_stage(index, stages, info.name)
        runs = [stylize_variants(stylizer, image) for image in images]
        losses = meter.measure(loss_setup, images, [run.plain for run in runs])
        reports.append(_report(info, content_lattices, runs, losses))
        outputs.append(runs)
    reference = None
    if reference_setup is not None:
        if on_stage is not None:
            on_stage(len(columns), stages, f"optimisation, {settings.reference_steps} steps")
        reference = _reference(reference_setup, images, meter, content_lattices)
    return Comparison(
        content_names=content_labels(contents),
        contents=images,
        reports=reports,
        outputs=outputs,
        settings=settings,
        reference=reference,
    )
