"""Normalization layers by name, so the network never names a concrete norm.

Every norm layer of the network is built by ``create_norm(name, channels, site, groups)``.
``site`` names the layer's place in the network (``norm1``, ``res.3.norm2``, ...;
see ``network.NORM_SITES``) so that mixed schemes (one norm shallow, another
deep) are just another registry entry. ``groups`` is only read by ``group``.
A norm that works on weights instead of activations is a ``ConvNormalizer``:
the network hands it the convolution before it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from stylize.errors import InvalidSetting, check_choice

NormConstructor = Callable[[int, str, int], nn.Module]

_REGISTRY: dict[str, NormConstructor] = {}

# Every channel count of the network (32, 64, 128) is a multiple of this.
CHANNEL_QUANTUM = 32
DEFAULT_GROUPS = 8
# IBN-Net's split: instance norm where features still carry the photo's
# appearance (the encoder), batch norm from the residual blocks on.
IBN_INSTANCE_SITES = frozenset({"norm1", "norm2", "norm3"})


def register_norm(name: str) -> Callable[[NormConstructor], NormConstructor]:
    """Decorator: make ``constructor(channels, site, groups) -> nn.Module`` the
    norm called ``name`` for ``create_norm`` and ``NetConfig.norm``. A new name
    comes last in ``norm_names``; one registered again is replaced in place.
    Nothing is raised.
    """

    def decorate(constructor: NormConstructor) -> NormConstructor:
        _REGISTRY[name] = constructor
        return constructor

    return decorate


def norm_names() -> list[str]:
    """Registry order: instance and batch first, as every comparison starts there."""
    return list(_REGISTRY)


def check_norm(name: str) -> str:
    return check_choice("norm", name, norm_names())


def check_groups(groups: int) -> int:
    if groups < 1 or CHANNEL_QUANTUM % groups:
        valid = ", ".join(str(g) for g in range(1, CHANNEL_QUANTUM + 1) if CHANNEL_QUANTUM % g == 0)
        raise InvalidSetting("groups", f"must divide {CHANNEL_QUANTUM} (every layer's channel count): one of {valid}")
    return groups


def create_norm(name: str, channels: int, site: str, groups: int = DEFAULT_GROUPS) -> nn.Module:
    """The norm layer registered as ``name`` for ``channels`` channels at
    ``site`` (its place in the network, see ``network.NORM_SITES``); ``groups``
    is read by ``group`` only.

    Raises InvalidSetting for a ``name`` not registered, or for ``group`` with
    ``groups`` that does not divide 32.
    """
    return _REGISTRY[check_norm(name)](channels, site, groups)


@register_norm("instance")
def instance_norm(channels: int, site: str, groups: int) -> nn.Module:
    # Never track running statistics: in eval mode the layer must still
    # normalize each image by its own mean and variance, which is the point.
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


@register_norm("batch")
def batch_norm(channels: int, site: str, groups: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


@register_norm("layer")
def layer_norm(channels: int, site: str, groups: int) -> nn.Module:
    """Each image normalized over all its channels and pixels together, with a
    per-channel scale and shift: GroupNorm with one group."""
    return nn.GroupNorm(1, channels)


@register_norm("group")
def group_norm(channels: int, site: str, groups: int) -> nn.Module:
    return nn.GroupNorm(check_groups(groups), channels)


@register_norm("none")
def no_norm(channels: int, site: str, groups: int) -> nn.Module:
    return nn.Identity()


class ConvNormalizer(nn.Identity):
    """A norm layer that leaves activations alone and reparametrizes the
    convolution before it instead (the network calls ``normalize_conv``)."""

    def normalize_conv(self, conv: nn.Conv2d) -> None:
        raise NotImplementedError


class WeightNorm(ConvNormalizer):
    """Weight normalization (Salimans & Kingma, 2016): each output filter is
    ``g * v / ||v||``, so its length is learned apart from its direction. No
    statistics of any image or batch: no per-image contrast normalization,
    and nothing that differs between training and evaluation."""

    def normalize_conv(self, conv: nn.Conv2d) -> None:
        weight_norm(conv, "weight", dim=0)


@register_norm("weight")
def weight_norm_site(channels: int, site: str, groups: int) -> nn.Module:
    return WeightNorm()


@register_norm("ibn")
def ibn_norm(channels: int, site: str, groups: int) -> nn.Module:
    """IBN-Net (Pan et al., 2018): instance norm in the encoder (``IBN_INSTANCE_SITES``),
    batch norm in the residual blocks and the decoder."""
    if site in IBN_INSTANCE_SITES:
        return instance_norm(channels, site, groups)
    return batch_norm(channels, site, groups)


class BatchInstanceNorm2d(nn.Module):
    """Batch-Instance Normalization (Nam & Kim, 2018).

    ``gate * BN(x) + (1 - gate) * IN(x)``, then a shared per-channel affine. The
    gate is learned per channel; it is the sigmoid of a free parameter, so it
    stays inside (0, 1) without the paper's clipping after every optimizer step.
    It starts at 0.5: no preference until the style loss expresses one.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps = eps
        self.batch = nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=False)
        self.gate_logit = nn.Parameter(torch.zeros(channels))
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    @property
    def gate(self) -> torch.Tensor:
        """The share of batch norm per channel, in (0, 1)."""
        return torch.sigmoid(self.gate_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate.view(1, -1, 1, 1)
        mixed = gate * self.batch(x) + (1 - gate) * F.instance_norm(x, eps=self.eps)
        return mixed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@register_norm("batch-instance")
def batch_instance_norm(channels: int, site: str, groups: int) -> nn.Module:
    return BatchInstanceNorm2d(channels)
