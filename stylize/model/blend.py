"""Network interpolation: two models fine-tuned from one parent, blended weight by weight.

Networks fine-tuned from the same weights stay close in weight space, so the
average of their weights paints a mix of both styles, moving smoothly from one
to the other as the mix goes 0 -> 1 (Wang et al., "Deep Network Interpolation
for Continuous Imagery Effect Transition", CVPR 2019). Two networks trained
apart have no such path between them: their average paints neither, so models
must share a parent (``stylize train --init``) to be blended.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from stylize.errors import InvalidSetting, StylizeError
from stylize.fileio import file_sha256
from stylize.model.files import ModelInfo, StyleModel, load_model
from stylize.model.styles import choose_styles


@dataclass(frozen=True)
class Blend:
    """A second model to interpolate towards, and its share of every weight (0..1)."""

    model: str | Path
    mix: float = 0.5


def lineage(info: ModelInfo) -> set[str]:
    """The sha256 of the model's own file and of the model it was fine-tuned from (if any)."""
    parent = (info.training or {}).get("init_sha256")
    return {file_sha256(info.path)} | ({parent} if isinstance(parent, str) else set())


def check_blendable(first: ModelInfo, second: ModelInfo) -> None:
    """Raises StylizeError unless the two models have the same network and
    share a parent (siblings from one ``--init`` model, or one is the other's)."""
    if first.config != second.config:
        mine, theirs = first.config.to_dict(), second.config.to_dict()
        differences = ", ".join(f"{key} {mine[key]} vs {theirs[key]}" for key in mine if mine[key] != theirs[key])
        raise StylizeError(f"{first.name} and {second.name} cannot be blended: their networks differ ({differences})")
    if first.styles != second.styles:  # multi-style networks mix row by row: the rows must be the same styles
        styles = f"{', '.join(first.styles)} vs {', '.join(second.styles)}"
        raise StylizeError(f"{first.name} and {second.name} cannot be blended: they hold other styles ({styles})")
    if not lineage(first) & lineage(second):
        raise StylizeError(
            f"{first.name} and {second.name} cannot be blended: they were not trained from the same "
            "--init model, so the average of their weights paints neither"
        )


def blend_models(first: StyleModel, second: StyleModel, mix: float) -> StyleModel:
    """The network whose every weight and norm statistic is ``(1 - mix) * first
    + mix * second``; ``mix`` in [0, 1] (0: ``first``, 1: ``second``).

    Raises InvalidSetting for a mix outside [0, 1] and StylizeError for models
    that ``check_blendable`` refuses.
    """
    if not 0 <= mix <= 1:
        raise InvalidSetting("mix", f"must be between 0 and 1, not {mix:g}")
    check_blendable(first.info, second.info)
    network = copy.deepcopy(first.network)
    theirs = second.network.state_dict()
    with torch.no_grad():
        for key, value in network.state_dict().items():
            if value.is_floating_point():
                value.lerp_(theirs[key].to(value), mix)
    name = f"{first.info.name}+{second.info.name}-{round(mix * 100)}"  # each mix its own output name
    style = f"{first.info.style} {1 - mix:.0%} + {second.info.style} {mix:.0%}"
    info = dataclasses.replace(first.info, name=name, style=style, training={}, style_thumbnail="")
    return StyleModel(info, network.eval())


def load_blended(
    model: str | Path,
    blend: Blend | None,
    device: torch.device | str = "cpu",
    style_mix: Mapping[str, float] | None = None,
) -> StyleModel:
    """``load_model(model)``, interpolated towards ``blend.model`` if given,
    and for a multi-style model the network of ``style_mix`` (style name ->
    weight; None: its first style). See ``blend_models`` and
    ``styles.choose_styles`` for the errors raised."""
    first = load_model(model, device)
    blended = first if blend is None else blend_models(first, load_model(blend.model, device), blend.mix)
    return choose_styles(blended, style_mix)
