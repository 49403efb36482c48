"""Normalization layers by name, so the network never names a concrete norm.

Every norm layer of the network is built by ``create_norm(name, channels, site, options)``.
``site`` names the layer's place in the network (``norm1``, ``res.3.norm2``, ...;
see ``network.NORM_SITES``) so that mixed schemes (one norm shallow, another
deep) are just another registry entry. ``NormOptions`` holds what only some
norms read: the group count, and how many styles a conditional norm holds.
A norm that works on weights instead of activations is a ``ConvNormalizer``:
the network hands it the convolution before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from stylize.errors import InvalidSetting, check_choice

# Every channel count of the network (32, 64, 128) is a multiple of this.
CHANNEL_QUANTUM = 32
DEFAULT_GROUPS = 8


@dataclass(frozen=True)
class NormOptions:
    """What some norms read besides the channel count: ``groups`` (group norm)
    and ``styles`` (how many styles a conditional norm holds; 1 for the others)."""

    groups: int = DEFAULT_GROUPS
    styles: int = 1


NormConstructor = Callable[[int, str, NormOptions], nn.Module]

_REGISTRY: dict[str, NormConstructor] = {}
# IBN-Net's split: instance norm where features still carry the photo's
# appearance (the encoder), batch norm from the residual blocks on.
IBN_INSTANCE_SITES = frozenset({"norm1", "norm2", "norm3"})


def register_norm(name: str) -> Callable[[NormConstructor], NormConstructor]:
    """Decorator: make ``constructor(channels, site, options) -> nn.Module`` the
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


def create_norm(name: str, channels: int, site: str, options: NormOptions = NormOptions()) -> nn.Module:
    """The norm layer registered as ``name`` for ``channels`` channels at
    ``site`` (its place in the network, see ``network.NORM_SITES``).

    Raises InvalidSetting for a ``name`` not registered, or for ``group`` with
    ``options.groups`` that does not divide 32.
    """
    return _REGISTRY[check_norm(name)](channels, site, options)


@register_norm("instance")
def instance_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
    # Never track running statistics: in eval mode the layer must still
    # normalize each image by its own mean and variance, which is the point.
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


@register_norm("batch")
def batch_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
    return nn.BatchNorm2d(channels)


@register_norm("layer")
def layer_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
    """Each image normalized over all its channels and pixels together, with a
    per-channel scale and shift: GroupNorm with one group."""
    return nn.GroupNorm(1, channels)


@register_norm("group")
def group_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
    return nn.GroupNorm(check_groups(options.groups), channels)


@register_norm("none")
def no_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
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
def weight_norm_site(channels: int, site: str, options: NormOptions) -> nn.Module:
    return WeightNorm()


@register_norm("ibn")
def ibn_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
    """IBN-Net (Pan et al., 2018): instance norm in the encoder (``IBN_INSTANCE_SITES``),
    batch norm in the residual blocks and the decoder."""
    if site in IBN_INSTANCE_SITES:
        return instance_norm(channels, site, options)
    return batch_norm(channels, site, options)


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
def batch_instance_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
    return BatchInstanceNorm2d(channels)


# A conditional norm -> the plain norm that one style (or one mix) of it is:
# the same statistics, with that style's scale and shift.
CONDITIONAL_NORMS: dict[str, str] = {"conditional-instance": "instance", "conditional-batch": "batch"}
# A plain norm -> its conditional twin, which a one-style model of it grows into.
CONDITIONAL_TWINS: dict[str, str] = {plain: conditional for conditional, plain in CONDITIONAL_NORMS.items()}


def check_styles(norm: str, styles: int) -> int:
    """Raises InvalidSetting unless ``styles`` is 1, or at least 1 for a conditional norm."""
    if styles < 1:
        raise InvalidSetting("styles", "must be at least 1")
    if styles > 1 and norm not in CONDITIONAL_NORMS:
        raise InvalidSetting("norm", f"{norm} holds one style; several need {' or '.join(CONDITIONAL_NORMS)}")
    return styles


class StyleAffine(nn.Module):
    """The per-style scale and shift of a conditional norm (Dumoulin, Shlens &
    Kudlur, "A Learned Representation for Artistic Style", ICLR 2017, eq. 5).

    ``weight`` and ``bias`` are (styles, channels). ``mix`` (styles,) picks the
    pair used: one-hot while a style trains, any convex mix to blend styles,
    which interpolates γ and β as the paper's Fig. 7 does. ``mix`` is not saved:
    a model file holds the styles, a command chooses among them.
    """

    mix: torch.Tensor

    def __init__(self, styles: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(styles, channels))
        self.bias = nn.Parameter(torch.zeros(styles, channels))
        self.register_buffer("mix", F.one_hot(torch.tensor(0), styles).float(), persistent=False)

    def forward(self, normalized: torch.Tensor) -> torch.Tensor:
        weight, bias = self.mix @ self.weight, self.mix @ self.bias
        return normalized * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm with one (γ, β) per style: every image's own statistics
    divided out, then the style's scale and shift (see ``StyleAffine``)."""

    def __init__(self, channels: int, styles: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.styles = StyleAffine(styles, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.styles(F.instance_norm(x, eps=self.eps))


class ConditionalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm with one (γ, β) per style and statistics shared by all styles:
    the multi-style trick with batch statistics instead of each image's own."""

    def __init__(self, channels: int, styles: int):
        super().__init__(channels, affine=False)
        self.styles = StyleAffine(styles, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.styles(super().forward(x))


@register_norm("conditional-instance")
def conditional_instance_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
    return ConditionalInstanceNorm2d(channels, options.styles)


@register_norm("conditional-batch")
def conditional_batch_norm(channels: int, site: str, options: NormOptions) -> nn.Module:
    return ConditionalBatchNorm2d(channels, options.styles)
