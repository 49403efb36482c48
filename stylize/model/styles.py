"""Multi-style networks: the styles a model holds, and one of them or a mix chosen for a command.

A conditional network holds one (γ, β) per style in every norm layer
(``norms.StyleAffine``); everything else is shared by all styles (Dumoulin,
Shlens & Kudlur, ICLR 2017). A chosen style, or a convex mix of styles (their
Sec. 4.3), is an ordinary network of the plain norm (``CONDITIONAL_NORMS``)
whose γ and β are that mix, so stylizing, the fast path and export need
nothing of their own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from stylize.errors import StylizeError
from stylize.model.files import ModelInfo, StyleModel
from stylize.model.network import TransformerNet
from stylize.model.norms import CONDITIONAL_NORMS, StyleAffine

# What marks a conditional network's per-style γ and β in its weight names
# (a norm's ``styles``, a ``StyleAffine``): ``NORM.styles.weight``.
STYLE_KEY = ".styles."


def style_names(info: ModelInfo) -> tuple[str, ...]:
    """The model's styles in its network's order (``style-N`` where the file names none)."""
    if info.styles:
        return info.styles
    if info.config.styles == 1:
        return (info.style,)
    return tuple(f"style-{number}" for number in range(1, info.config.styles + 1))


def style_thumbnails(info: ModelInfo) -> tuple[str, ...]:
    """The thumbnails of ``style_names(info)``, in order ("" where the file has none)."""
    if info.config.styles == 1 and not info.style_thumbnails:
        return (info.style_thumbnail,)
    missing = info.config.styles - len(info.style_thumbnails)
    return (*info.style_thumbnails, *("",) * missing)


def style_weights(names: Sequence[str], mix: Mapping[str, float]) -> torch.Tensor:
    """The (len(names),) float32 weights of ``mix`` (style name -> weight),
    normalised to sum to 1; a style not in ``mix`` weighs 0.

    Raises StylizeError for a name not among ``names`` (listing them), a
    negative or non-finite weight, or weights that sum to 0.
    """
    unknown = [name for name in mix if name not in names]
    if unknown:
        raise StylizeError(f"no style {unknown[0]!r} in this model; its styles: {', '.join(names)}")
    if not all(0 <= weight < math.inf for weight in mix.values()):
        raise StylizeError("style weights must be finite and not negative")
    total = sum(mix.values())
    if not total > 0:
        raise StylizeError("the style weights sum to 0: give at least one style a positive weight")
    return torch.tensor([mix.get(name, 0.0) / total for name in names], dtype=torch.float32)


def set_style_mix(network: nn.Module, weights: torch.Tensor) -> None:
    """Make every conditional norm of ``network`` use the (styles,) ``weights`` of its styles."""
    for module in network.modules():
        if isinstance(module, StyleAffine):
            module.mix.copy_(weights)


def plain_network(network: TransformerNet, weights: torch.Tensor) -> TransformerNet:
    """The plain-norm network that computes what conditional ``network`` does
    with the (styles,) style ``weights``: each norm's γ and β become their mix."""
    config = dataclasses.replace(network.config, norm=CONDITIONAL_NORMS[network.config.norm], styles=1)
    state = {}
    for key, value in network.state_dict().items():
        if STYLE_KEY in key:  # StyleAffine's (styles, channels) weight and bias
            state[key.replace(STYLE_KEY, ".")] = weights.to(value) @ value
        else:
            state[key] = value
    plain = TransformerNet(config).to(next(network.parameters()).device)
    plain.load_state_dict(state)
    return plain.eval()


def choose_styles(model: StyleModel, mix: Mapping[str, float] | None = None) -> StyleModel:
    """A conditional model as the plain network of the ``mix`` of its styles
    (style name -> weight, see ``style_weights``; None: its first style); any
    other model as it is.

    Raises StylizeError for a ``mix`` given to a model that holds no styles to
    choose from, and as ``style_weights`` does.
    """
    info = model.info
    if info.config.norm not in CONDITIONAL_NORMS:
        if mix is not None:
            raise StylizeError(f"{info.name} holds one style; a style mix needs a multi-style model")
        return model
    names = style_names(info)
    weights = style_weights(names, mix or {names[0]: 1.0})
    chosen = [(name, weight) for name, weight in zip(names, weights.tolist(), strict=True) if weight > 0]
    if len(chosen) == 1:
        (style, _), index = chosen[0], names.index(chosen[0][0])
        thumbnail = style_thumbnails(info)[index]
        suffix = style
    else:
        style = " + ".join(f"{name} {weight:.0%}" for name, weight in chosen)
        thumbnail, suffix = "", "+".join(f"{name}{round(weight * 100)}" for name, weight in chosen)
    network = plain_network(model.network, weights)
    renamed = dataclasses.replace(
        info, name=f"{info.name}-{suffix}", config=network.config, style=style, style_thumbnail=thumbnail,
        styles=(), style_thumbnails=(),
    )  # fmt: skip
    return StyleModel(renamed, network)


def as_conditional(
    network: TransformerNet, plain: Mapping[str, torch.Tensor], styles: int = 1
) -> dict[str, torch.Tensor]:
    """The weights ``plain`` of a plain-norm network as conditional ``network``'s
    of ``styles`` styles: each norm's γ and β become every style's row (with
    one style, the inverse of ``plain_network``)."""
    return {
        key: plain[key.replace(STYLE_KEY, ".")].expand(styles, -1).clone() if STYLE_KEY in key else plain[key]
        for key in network.state_dict()
    }


def with_new_style(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A conditional network's weights with one more style last, whose γ and β
    start as the mean of the others' (a neutral start between the styles)."""
    return {
        key: torch.cat([value, value.mean(dim=0, keepdim=True)]) if STYLE_KEY in key else value
        for key, value in state.items()
    }


def train_only_style(network: TransformerNet, index: int = -1) -> None:
    """Freeze all of ``network`` but one style's γ and β (default the last):
    the other parameters take no gradient, the other styles' rows a zero one
    (so Adam leaves them bit for bit), and batch norms keep their running
    statistics."""
    for name, parameter in network.named_parameters():
        if STYLE_KEY in name:
            row = torch.zeros_like(parameter)
            row[index] = 1
            parameter.register_hook(lambda grad, mask=row: grad * mask)
        else:
            parameter.requires_grad_(False)
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
