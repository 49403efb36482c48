"""Normalization layers by name, so the network never names a concrete norm.

Every norm layer of the network is built by ``create_norm(name, channels, site)``.
``site`` names the layer's place in the network ("down1", "res3.a", "up2", ...;
see ``network.NORM_SITES``) so that mixed schemes (one norm shallow, another
deep) are just another registry entry.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .errors import StylizeError

NormConstructor = Callable[[int, str], nn.Module]

_REGISTRY: dict[str, NormConstructor] = {}


def register_norm(name: str) -> Callable[[NormConstructor], NormConstructor]:
    def decorate(constructor: NormConstructor) -> NormConstructor:
        _REGISTRY[name] = constructor
        return constructor

    return decorate


def norm_names() -> list[str]:
    return sorted(_REGISTRY)


def check_norm(name: str) -> str:
    if name not in _REGISTRY:
        raise StylizeError(f"unknown norm {name!r}; choose one of: {', '.join(norm_names())}")
    return name


def create_norm(name: str, channels: int, site: str) -> nn.Module:
    return _REGISTRY[check_norm(name)](channels, site)


@register_norm("instance")
def instance_norm(channels: int, site: str) -> nn.Module:
    # Never track running statistics: in eval mode the layer must still
    # normalize each image by its own mean and variance, which is the point.
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


@register_norm("batch")
def batch_norm(channels: int, site: str) -> nn.Module:
    return nn.BatchNorm2d(channels)
