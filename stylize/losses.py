"""Perceptual loss terms as plain functions (Johnson et al., 2016; Gatys et al., 2016).

Conventions: content is the MSE of one VGG layer's activations; style sums, over
several layers, the MSE between Gram matrices normalized by C*H*W; total
variation is the mean absolute difference of neighbouring pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C), normalized by C*H*W so image size drops out.

    Computed in float32 even under autocast: bf16 sums over H*W lose the style.
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w).float()
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def content_loss(output_features: torch.Tensor, input_features: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output_features.float(), input_features.float())


def style_loss(
    output_features: Mapping[str, torch.Tensor], target_grams: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Sum over layers of MSE(Gram(output), target); targets broadcast over the batch."""
    total = torch.zeros((), device=next(iter(target_grams.values())).device)
    for layer, target in target_grams.items():
        gram = gram_matrix(output_features[layer])
        total = total + F.mse_loss(gram, target.expand_as(gram))
    return total


def total_variation(images: torch.Tensor) -> torch.Tensor:
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return dx + dy


@dataclass(frozen=True)
class LossWeights:
    content: float = 1.0
    style: float = 1e5
    tv: float = 1e-3


@dataclass(frozen=True)
class LossTerms:
    """Weighted terms; ``total`` is what the optimizer minimizes."""

    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.content + self.style + self.tv

    def stacked(self) -> torch.Tensor:
        """All four numbers in one tensor, so reading them costs one device sync."""
        return torch.stack([self.content, self.style, self.tv, self.total]).detach()


def style_targets(
    style_features: Mapping[str, torch.Tensor], layers: Sequence[str]
) -> dict[str, torch.Tensor]:
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
    return LossTerms(
        content=weights.content
        * content_loss(output_features[content_layer], input_features[content_layer]),
        style=weights.style * style_loss(output_features, target_grams),
        tv=weights.tv * total_variation(output.float()),
    )
