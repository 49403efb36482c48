"""Stylizing by optimisation (Gatys, Ecker & Bethge, CVPR 2016): no network, any painting.

The output's pixels are optimised, starting from the photo, against the very
loss the trainer uses (``training.losses``, ``training.vgg``): the same relative
conventions, layers and weights. It is what a loss network allows at best for
one photo, and so the ceiling a trained model is measured against.

Coarse to fine: the image is optimised at a quarter and at half size first,
each result upsampled to start the next level (Gatys et al., "Controlling
Perceptual Factors in Neural Style Transfer", CVPR 2017, section 5). The coarse
levels cost a sixteenth and a quarter of a full-size step and settle the
large-scale structure, so the full size needs only a few steps to finish.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stylize.devices import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    autocast,
    check_precision,
    compute_dtype,
    resolve_device,
)
from stylize.errors import InvalidSetting, StylizeError, check_choice
from stylize.images import resize, resize_long_side, scaled_size, spatial_size
from stylize.inference.controls import PLAIN, StyleControls
from stylize.inference.stylizer import ImageStylizer
from stylize.model.network import MIN_SIZE
from stylize.training.losses import LossWeights, gram_matrix, perceptual_loss
from stylize.training.vgg import (
    DEFAULT_CONTENT_LAYER,
    LossNetwork,
    announce_download,
    check_loss_network,
    style_layer_weights,
)

OPTIMIZERS = ("lbfgs", "adam")
# Adam's step in pixel units ([0, 1]); L-BFGS finds its own with a line search.
ADAM_LR = 0.02


@dataclass(frozen=True)
class OptimizationSettings:
    """How the pixels are optimised; the loss settings mean what they mean in training.

    Raises InvalidSetting for ``steps`` below 0, ``levels`` below 1, a negative
    weight, a ``style_size`` under 16 pixels, or an unknown optimizer, loss
    network or precision.
    """

    steps: int = 30  # loss evaluations at each level: 512 px in about 80 s on a 2-core CPU in fp32
    levels: int = 3  # 1: full size only; 3: a quarter, half, then full size
    optimizer: str = "lbfgs"
    content_weight: float = LossWeights.content
    style_weight: float = LossWeights.style
    tv_weight: float = LossWeights.tv
    style_size: int | None = None  # long side of the style images, px; None: the photo's long side
    loss_network: str = "vgg16"
    loss_network_weights: Path | None = None  # None: torchvision's ImageNet weights, downloaded once
    content_layer: str = DEFAULT_CONTENT_LAYER
    style_layers: tuple[str, ...] = ()  # empty: the loss network's default layers and weights
    style_layer_weights: tuple[float, ...] = ()  # one per style layer, or empty: each weighs 1
    precision: str = DEFAULT_PRECISION
    device: str = DEFAULT_DEVICE

    def __post_init__(self) -> None:
        for name in ("steps", "levels"):
            if getattr(self, name) < (0 if name == "steps" else 1):
                raise InvalidSetting(name, f"must be at least {0 if name == 'steps' else 1}")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:
                raise InvalidSetting(name, "must not be negative")
        if self.style_size is not None and self.style_size < MIN_SIZE:
            raise InvalidSetting("style_size", f"must be at least {MIN_SIZE} pixels")
        check_loss_network(self.loss_network)
        check_precision(self.precision)

    @property
    def layer_weights(self) -> dict[str, float]:
        return style_layer_weights(self.loss_network, self.style_layers, self.style_layer_weights)

    @property
    def term_weights(self) -> LossWeights:
        return LossWeights(
            self.content_weight, self.style_weight, self.tv_weight, style_layers=tuple(self.layer_weights.items())
        )


@dataclass(frozen=True)
class StyleImage:
    """A painting (1x3xHxW in [0, 1]) and its share of a blend.

    Raises InvalidSetting for a side under 16 pixels or a negative weight.
    """

    image: torch.Tensor
    weight: float = 1.0

    def __post_init__(self) -> None:
        if min(self.image.shape[-2:]) < MIN_SIZE:
            height, width = self.image.shape[-2:]
            raise InvalidSetting("style", f"images must be at least {MIN_SIZE}x{MIN_SIZE} pixels, not {width}x{height}")
        if not self.weight >= 0:
            raise InvalidSetting("style", f"weights must not be negative, not {self.weight:g}")


@dataclass
class LevelReport:
    """Where an optimisation is: ``step`` of ``steps`` in all levels, and the loss now."""

    step: int
    steps: int
    level: int
    size: tuple[int, int]  # (height, width) of this level
    loss: float


def level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """(height, width) of every level, coarse to fine, none with a side under ``MIN_SIZE``."""
    sizes = [scaled_size(height, width, 0.5**level) for level in reversed(range(levels))]
    return [size for size in sizes if min(size) >= MIN_SIZE] or [(height, width)]


class StyleOptimizer(ImageStylizer):
    """Stylizes every image by optimising its pixels against ``styles``; an
    ``ImageStylizer``, so files, controls and output naming work as for models.

    Making one raises InvalidSetting if no style has a positive weight, and what
    resolving ``settings.device`` and building the ``LossNetwork`` raise
    (InvalidSetting, StylizeError). Stylizing raises StylizeError if the loss
    stops being finite, besides what ``ImageStylizer``'s methods say.
    """

    def __init__(
        self,
        styles: Sequence[StyleImage],
        settings: OptimizationSettings = OptimizationSettings(),
        controls: StyleControls = PLAIN,
        name: str = "",
        on_step: Callable[[LevelReport], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ):
        if not sum(style.weight for style in styles) > 0:
            raise InvalidSetting("style", "needs at least one style image of positive weight")
        self.styles, self.settings, self.controls = list(styles), settings, controls
        self._name = name or "style"
        self.on_step = on_step
        self._targets: dict[int, dict[str, torch.Tensor]] = {}  # style_targets by long side
        self.device = resolve_device(settings.device)
        self.dtype = compute_dtype(settings.precision, self.device)
        layers = (settings.content_layer, *settings.layer_weights)
        announce_download(settings.loss_network, settings.loss_network_weights, on_notice)
        network = LossNetwork(settings.loss_network, layers, settings.loss_network_weights).to(self.device)
        if self.dtype != torch.float32:  # frozen, so cast once instead of at every call
            network.features.to(self.dtype)
        self.loss_network = network

    @property
    def name(self) -> str:
        return self._name

    def run(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.optimize(image[None]) for image in images]).to(images.device)

    def optimize(self, photo: torch.Tensor) -> torch.Tensor:
        """One photo (1x3xHxW in [0, 1]) -> its stylization, the same size, in [0, 1]."""
        sizes = level_sizes(*spatial_size(photo), self.settings.levels)
        photo = photo.to(self.device, torch.float32)
        change = torch.zeros_like(photo[..., :1, :1])
        for level, size in enumerate(sizes):
            # Each level starts from the photo at its size plus the coarser level's
            # change, upsampled: the photo's own detail is never blurred away.
            level_photo = resize(photo, size).clamp(0, 1)
            start = (level_photo + resize(change, size)).clamp(0, 1)
            change = self._optimize_level(level_photo, start, level, sizes) - level_photo
        return (level_photo + change).clamp(0, 1)

    def style_targets(self, long_side: int) -> dict[str, torch.Tensor]:
        """The blend of the styles' Gram matrices, each style at ``long_side`` px.

        A weighted mean of Gram matrices is the target whose squared error equals
        the weighted sum of the styles' errors, up to a constant (jcjohnson's
        neural-style sums them): one target, the same optimum, a fraction of the work.
        Computed once per size: a folder of photos of one size shares them.
        """
        if long_side not in self._targets:
            self._targets[long_side] = self._blend_targets(long_side)
        return self._targets[long_side]

    def _blend_targets(self, long_side: int) -> dict[str, torch.Tensor]:
        layers = tuple(self.settings.layer_weights)
        total = sum(style.weight for style in self.styles)
        blend: dict[str, torch.Tensor] = {}
        with torch.no_grad(), autocast(self.device, self.dtype):
            for style in self.styles:
                features = self.loss_network(resize_long_side(style.image, long_side).to(self.device), layers)
                for layer in layers:
                    share = gram_matrix(features[layer]) * (style.weight / total)
                    blend[layer] = blend[layer] + share if layer in blend else share
        return blend

    def _optimize_level(
        self, photo: torch.Tensor, start: torch.Tensor, level: int, sizes: list[tuple[int, int]]
    ) -> torch.Tensor:
        settings = self.settings
        scale = max(photo.shape[-2:]) / max(sizes[-1])
        targets = self.style_targets(max(MIN_SIZE, round((settings.style_size or max(sizes[-1])) * scale)))
        # The content target through the same kernels as the loss's forward (with
        # gradients), which oneDNN may pick otherwise than without: at the photo
        # the content loss is then exactly 0, and Adam has no rounding to amplify.
        with autocast(self.device, self.dtype):
            traced = photo.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
            content = {layer: value.detach() for layer, value in self.loss_network(traced).items()}
        pixels = start.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
        loss = _LevelLoss(self, pixels, content, targets, level, len(sizes))
        if settings.steps and settings.optimizer == "adam":
            adam = torch.optim.Adam([pixels], lr=ADAM_LR)
            for _ in range(settings.steps):
                loss()
                adam.step()
        elif settings.steps:
            torch.optim.LBFGS(
                [pixels], lr=1, max_iter=settings.steps, max_eval=settings.steps, history_size=50,
                line_search_fn="strong_wolfe",
            ).step(loss)  # fmt: skip
        if self.on_step is not None and loss.evaluations < settings.steps:  # L-BFGS converged early
            self.on_step(loss.report(settings.steps, float("nan")))
        return pixels.detach()


class _LevelLoss:
    """The loss of one level's pixels, as the optimisers' closure: each call
    evaluates it, computes its gradient and reports the step."""

    def __init__(
        self,
        optimizer: StyleOptimizer,
        pixels: torch.Tensor,
        content: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        level: int,
        levels: int,
    ):
        self.owner, self.pixels, self.content, self.targets = optimizer, pixels, content, targets
        self.level, self.levels = level, levels
        self.evaluations = 0

    def __call__(self) -> torch.Tensor:
        owner, settings = self.owner, self.owner.settings
        self.pixels.grad = None
        with autocast(owner.device, owner.dtype):
            features = owner.loss_network(self.pixels)
            terms = perceptual_loss(
                self.pixels, features, self.content, self.targets, settings.content_layer, settings.term_weights
            )
        # Summed over pixels rather than averaged (as Gatys et al. sum it): per-pixel
        # gradients far above Adam's epsilon and L-BFGS's tolerances, the same optimum.
        (terms.total * self.pixels.numel()).backward()
        value = float(terms.total.detach())
        if not math.isfinite(value):
            raise StylizeError(f"the loss became {value}; try lower style or tv weights")
        self.evaluations += 1
        if owner.on_step is not None:
            owner.on_step(self.report(self.evaluations, value))
        return terms.total.detach() * self.pixels.numel()

    def report(self, evaluations: int, value: float) -> LevelReport:
        steps = self.owner.settings.steps
        size = spatial_size(self.pixels)
        return LevelReport(self.level * steps + evaluations, steps * self.levels, self.level, size, value)
