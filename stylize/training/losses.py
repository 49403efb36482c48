"""Perceptual loss terms as plain functions (Johnson et al., 2016; Gatys et al., 2016).

Conventions, chosen so that a loss weight means the same on any VGG whatever
the scale of its activations (ImageNet VGG16, Caffe-scale VGG16, VGG16-BN
differ by orders of magnitude):
- content: MSE of one layer's activations, relative to the mean square of the
  photo's activations there;
- style: sum over layers of the MSE between Gram matrices (normalized by C*H*W),
  each relative to the mean square of the style's own Gram matrix, so every
  layer counts alike however loud or quiet it is;
- total variation: mean absolute difference of neighbouring pixels (in [0, 1]);
- shift: mean squared difference (in [0, 1]) between the output of a photo moved
  by a few pixels and the output moved alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


class _Gram(torch.autograd.Function):
    """``bmm(F, Fᵀ) * scale`` with its gradient as one product, ``(dG + dGᵀ) F * scale``.

    Autograd's own backward of ``bmm(F, Fᵀ)`` takes two products and copies a
    transpose of F, 1.6x the time of this one at the shallow layers' size. The
    gradient comes back in the features' dtype, which the convolution behind
    them takes anyway.
    """

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(flat)
        ctx.scale = scale
        # At least float32, even under autocast, which would round every entry to bf16.
        with torch.autocast(flat.device.type, enabled=False):
            wide = flat.to(torch.promote_types(flat.dtype, torch.float32))
            return torch.bmm(wide, wide.transpose(1, 2)) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (flat,) = ctx.saved_tensors
        symmetric = (grad + grad.transpose(1, 2)) * ctx.scale
        return torch.bmm(symmetric.to(flat.dtype), flat), None


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) in float32, normalized by C*H*W so image size drops out.

    The Gram matrix of Gatys et al. (2016), with the C*H*W normalization of
    Johnson et al. (2016); differentiable.
    """
    n, c, h, w = features.shape
    return _Gram.apply(features.reshape(n, c, h * w), 1.0 / (c * h * w))


# Keeps a relative loss finite for an all-zero reference (a black photo).
_TINY = 1e-12


def relative_mse(value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image, MSE(value, reference) / mean(reference**2): the error in units
    of the reference's own size; then the mean over the batch. Per image, so a
    loss never depends on which other photos share the batch (or the process).

    The difference is taken in the inputs' dtype (bf16 features under autocast:
    one rounding of each difference), its squares summed in float32.
    """
    error = (value - reference).float().square().flatten(1).mean(1)
    size = reference.float().square().flatten(1).mean(1)
    return (error / size.clamp_min(_TINY)).mean()


def content_loss(output_features: torch.Tensor, input_features: torch.Tensor) -> torch.Tensor:
    return relative_mse(output_features, input_features)


def style_loss_per_layer(
    output_features: Mapping[str, torch.Tensor], target_grams: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each layer's relative MSE of Gram(output) to its target, unweighted;
    targets broadcast over the batch."""
    return {layer: relative_mse(gram_matrix(output_features[layer]), target) for layer, target in target_grams.items()}


def style_loss(
    output_features: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Sum over layers of ``style_loss_per_layer``, each times its layer weight (default 1)."""
    total = torch.zeros((), device=next(iter(target_grams.values())).device)
    for layer, term in style_loss_per_layer(output_features, target_grams).items():
        total = total + (1.0 if layer_weights is None else layer_weights.get(layer, 1.0)) * term
    return total


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """The total variation regularizer of Johnson et al. (2016), after Mahendran
    & Vedaldi (2015), in its L1 form: the mean absolute difference of vertical
    neighbours plus that of horizontal ones, over (..., H, W) images in [0, 1];
    a scalar, 0 for flat images."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return dx + dy


def shift_image(images: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) images moved down by ``shift[0]`` and right by ``shift[1]``
    pixels (each 0 to 3), the uncovered rows and columns filled by reflection."""
    rows, cols = shift
    height, width = images.shape[-2:]
    return F.pad(images[..., : height - rows, : width - cols], (cols, 0, rows, 0), mode="reflect")


# Pixels of the shift term this close to a border or the reflected strip are left out.
SHIFT_MARGIN = 8
# The smallest crop the shift term can compare: a 3 px shift and both margins, plus one pixel.
SHIFT_MIN_SIZE = 2 * SHIFT_MARGIN + 4


def shift_equivariance(
    output: torch.Tensor, moved_output: torch.Tensor, shift: tuple[int, int], margin: int = SHIFT_MARGIN
) -> torch.Tensor:
    """Mean squared difference between ``moved_output``, the network's output of
    ``shift_image(photos, shift)``, and ``output`` (of the photos) moved alike;
    over the pixels ``margin`` or more away from every border and the reflected
    strip. 0 for a network that commutes with the shift; a real network's
    output also sees the reflected strip through its wide receptive field, and
    with instance norm its statistics, so a small remainder stays.

    A network that downsamples by 4 commutes with shifts by multiples of 4 only;
    others show its phase, as a period-4 lattice fixed to the frame (a weave on
    flat areas, and texture crawling over a panned scene). The term penalizes
    that, as the stability losses of Gupta et al. (ICCV 2017) do for video.
    Raises ValueError if the interior is empty.
    """
    rows, cols = shift
    height, width = output.shape[-2:]
    if min(height - rows, width - cols) <= 2 * margin:
        raise ValueError(f"a {height}x{width} output has no pixels {margin} px inside its borders")
    moved = moved_output[..., rows + margin : height - margin, cols + margin : width - margin]
    original = output[..., margin : height - rows - margin, margin : width - cols - margin]
    return (moved.float() - original.float()).square().mean()


@dataclass(frozen=True)
class LossWeights:
    """The loss terms' multipliers, and each style layer's share of the style
    term. Defaults: the plain loss, as the optimisation (``stylize image
    --style``) uses it; training sets its recipe's in ``TrainConfig``."""

    content: float = 1.0
    style: float = 1.0
    tv: float = 0.5
    shift: float = 0.0
    # (layer, weight) pairs: each style layer's share; layers not listed weigh 1.
    style_layers: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class LossTerms:
    """Weighted terms; ``total`` is what the optimizer minimizes."""

    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    shift: torch.Tensor | None = None  # None: not computed (weight 0)

    @property
    def total(self) -> torch.Tensor:
        total = self.content + self.style + self.tv
        return total if self.shift is None else total + self.shift

    def stacked(self) -> torch.Tensor:
        """content, style, tv, shift (0 if not computed) and total in one tensor,
        so reading them costs one device sync."""
        shift = torch.zeros_like(self.tv) if self.shift is None else self.shift
        return torch.stack([self.content, self.style, self.tv, shift, self.total]).detach()


def mean_terms(terms: Sequence[LossTerms]) -> LossTerms:
    """Each term's mean over several loss networks' ``LossTerms`` (one: itself).
    Relative terms (module docstring) share one scale, so a mean weighs each
    network alike. Raises ValueError for none."""
    if not terms:
        raise ValueError("mean_terms needs at least one LossTerms")
    if len(terms) == 1:
        return terms[0]
    shifts = [t.shift for t in terms if t.shift is not None]
    return LossTerms(
        content=torch.stack([t.content for t in terms]).mean(),
        style=torch.stack([t.style for t in terms]).mean(),
        tv=torch.stack([t.tv for t in terms]).mean(),
        shift=torch.stack(shifts).mean() if shifts else None,
    )


def style_targets(style_features: Mapping[str, torch.Tensor], layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Gram matrices of the style image, computed once before training."""
    return {layer: gram_matrix(style_features[layer]).detach() for layer in layers}


def perceptual_loss(
    output: torch.Tensor,
    output_features: Mapping[str, torch.Tensor],
    input_features: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    content_layer: str,
    weights: LossWeights,
) -> LossTerms:
    """The perceptual loss of Johnson et al. (2016), weighted by ``weights``:
    content (feature reconstruction at ``content_layer``), style (Gram matrices,
    Gatys et al. 2016, at every layer of ``target_grams``) and total variation,
    relative as the module docstring says.

    ``output``: the network's NCHW images in [0, 1]; ``output_features`` and
    ``input_features``: the loss network's activations (layer -> NCHW) of the
    output and of the photos; ``target_grams``: the style's Gram matrices
    (layer -> 1xCxC, see ``style_targets``). Raises no StylizeError (a KeyError
    for a layer missing from the features).
    """
    return LossTerms(
        content=weights.content * content_loss(output_features[content_layer], input_features[content_layer]),
        style=weights.style * style_loss(output_features, target_grams, dict(weights.style_layers)),
        tv=weights.tv * total_variation(output.float()),
    )
