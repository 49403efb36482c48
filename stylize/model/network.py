"""The Johnson et al. (2016) image transformation network.

Three convolutions down (9x9, then two stride-2 3x3), five residual blocks at 128
channels, two upsample + 3x3 convolutions up (no transposed convolutions, so no
checkerboard), and a 9x9 convolution out, with reflection padding (replication
at the bilinear upsampling, which extends its map as a clamped edge would).
Every normalization layer comes from ``norms.create_norm``. The upsampling and
output convolutions run in cheaper but equal forms (``convforms``).

``NetConfig.resampling`` picks how the network changes resolution:

- ``nearest``: Johnson et al.'s strided convolutions and nearest upsampling.
  Detail generated at 1/4 resolution reaches the output as a pattern locked to
  a 4-pixel grid: the fine diagonal weave on flat areas.
- ``antialiased``: a [1, 2, 1]² blur before each stride-2 convolution (Zhang,
  2019, "Making Convolutional Networks Shift-Invariant Again") and bilinear
  upsampling, so neither direction keeps the grid's frequency.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stylize.errors import check_choice
from stylize.model.convforms import (
    blurred_kernel,
    space_to_depth_conv,
    space_to_depth_kernels,
    subpixel_conv,
    subpixel_kernels,
)
from stylize.model.norms import (
    DEFAULT_GROUPS,
    ConvNormalizer,
    NormOptions,
    check_groups,
    check_norm,
    check_styles,
    create_norm,
)

# Space-to-depth factor of conv_out: 4x4 blocks turn 32 channels into 512.
SPACE_TO_DEPTH = 4
# Reflection padding needs every feature map to be larger than its padding;
# smaller images are padded up to this size and cropped back.
MIN_SIZE = 16
# resampling name -> the upsampling it pairs with blurred (or plain) stride-2 convolutions.
RESAMPLINGS: dict[str, str] = {"nearest": "nearest", "antialiased": "bilinear"}


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild a network; stored inside every model file.

    Raises InvalidSetting for a ``norm`` or ``resampling`` not known,
    ``groups`` that does not divide 32 (checked whatever the norm), or
    ``styles`` other than 1 for a norm that is not conditional.
    """

    norm: str = "instance"
    groups: int = DEFAULT_GROUPS  # for the "group" norm
    # Pixel scale the weights expect: 1 for stylize's own [0, 1] models,
    # 255 for models imported from pytorch/examples' fast_neural_style.
    input_scale: float = 1.0
    # A scaled tanh bounds the output to [-0.1, 1.1], as Johnson et al.'s
    # 150*tanh did in Caffe's 0..255: an unbounded output lets the style loss
    # push bright areas far out of range, which the clamp at save turns into
    # flat blobs. False: the raw last convolution (pytorch/examples models,
    # and stylize models made before this setting existed).
    bounded_output: bool = True
    # How resolution changes (module docstring); "nearest" for models made
    # before this setting existed and for pytorch/examples models.
    resampling: str = "antialiased"
    # How many styles a conditional norm holds (``norms.CONDITIONAL_NORMS``); 1 for the others.
    styles: int = 1

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_groups(self.groups)
        check_resampling(self.resampling)
        check_styles(self.norm, self.styles)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NetConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        # A stored config that predates a setting was made without it.
        legacy: dict[str, Any] = {"bounded_output": False, "resampling": "nearest"}
        return cls(**{**legacy, **{key: value for key, value in values.items() if key in known}})


def conv_at(network: nn.Module, path: str) -> nn.Conv2d:
    """The ``nn.Conv2d`` of the layer at ``path`` (every layer keeps it as ``conv2d``)."""
    conv = network.get_submodule(f"{path}.conv2d")
    assert isinstance(conv, nn.Conv2d)
    return conv


def check_resampling(name: str) -> str:
    return check_choice("resampling", name, RESAMPLINGS)


def _norm(config: NetConfig, channels: int, site: str) -> nn.Module:
    return create_norm(config.norm, channels, site, NormOptions(config.groups, config.styles))


def pad(x: torch.Tensor, sides: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """``F.pad`` in ``x``'s own dtype. CPU autocast pads in float32: a cast of
    the whole feature map there and back at every layer, forward and backward."""
    with torch.autocast(x.device.type, enabled=False):
        return F.pad(x, sides, mode=mode)


class ReflectConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.padding = kernel_size // 2
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def kernel(self) -> torch.Tensor:
        """The kernel this layer convolves its ``padding``-padded input with."""
        return self.conv2d.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(pad(x, (self.padding,) * 4, "reflect"))


class BlurredConv(ReflectConv):
    """A strided convolution of the [1, 2, 1]²-blurred input (Zhang, 2019), as one
    convolution with a kernel two taps wider (``convforms.blurred_kernel``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__(in_channels, out_channels, kernel_size, stride)
        self.padding += 1

    def kernel(self) -> torch.Tensor:
        return blurred_kernel(self.conv2d.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = pad(x, (self.padding,) * 4, "reflect")
        return F.conv2d(padded, self.kernel(), self.conv2d.bias, self.conv2d.stride)


class UpsampleConv(nn.Module):
    """2x upsampling (nearest or bilinear), then a 3x3 convolution (Odena et al.,
    2016), computed in the sub-pixel form of ``convforms``."""

    def __init__(self, in_channels: int, out_channels: int, upsampling: str = "nearest"):
        super().__init__()
        self.upsampling = check_choice("upsampling", upsampling, RESAMPLINGS.values())
        self.conv2d = nn.Conv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = pad(x, (1, 1, 1, 1), "replicate")
        return subpixel_conv(padded, subpixel_kernels(self.conv2d.weight, self.upsampling), self.conv2d.bias)


class BlockConv(ReflectConv):
    """A large convolution to few channels (the 9x9 one out to RGB), computed in
    the space-to-depth form of ``convforms``, which oneDNN runs faster."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels = space_to_depth_kernels(self.conv2d.weight, SPACE_TO_DEPTH)
        padded = pad(x, (self.padding,) * 4, "reflect")
        return space_to_depth_conv(padded, kernels, self.conv2d.bias, SPACE_TO_DEPTH, self.padding)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, config: NetConfig, site: str):
        super().__init__()
        self.conv1 = ReflectConv(channels, channels, 3)
        self.norm1 = _norm(config, channels, f"{site}.norm1")
        self.conv2 = ReflectConv(channels, channels, 3)
        self.norm2 = _norm(config, channels, f"{site}.norm2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return x + self.norm2(self.conv2(y))


def pad_to_min_size(x: torch.Tensor) -> torch.Tensor:
    """Replicate-pad the bottom and right up to ``MIN_SIZE``; crop the output back."""
    height, width = x.shape[-2:]
    if height >= MIN_SIZE and width >= MIN_SIZE:
        return x
    return pad(x, (0, max(0, MIN_SIZE - width), 0, max(0, MIN_SIZE - height)), "replicate")


RESIDUAL_BLOCKS = 5
# The bounded output's range: [0, 1] with a margin, so black and white need no
# infinite pre-activation and the tanh never saturates on ordinary pixels.
OUTPUT_MIDPOINT, OUTPUT_HALF_RANGE = 0.5, 0.6

# The module path of every norm layer, shallow to deep, with the convolution it
# normalizes; mixed norm schemes key on these sites, BN folding on the pairs.
NORMALIZED_CONVS: dict[str, str] = {
    "norm1": "conv1",
    "norm2": "conv2",
    "norm3": "conv3",
    **{f"res.{i}.norm{j}": f"res.{i}.conv{j}" for i in range(RESIDUAL_BLOCKS) for j in (1, 2)},
    "norm4": "up1",
    "norm5": "up2",
}
NORM_SITES: tuple[str, ...] = tuple(NORMALIZED_CONVS)


class TransformerNet(nn.Module):
    """Maps an NCHW image in [0, 1] to a stylized image of the same size.

    The output is not clamped (bounded to [-0.1, 1.1] with ``bounded_output``),
    so the loss sees the raw values; clamp at I/O.
    """

    def __init__(self, config: NetConfig = NetConfig()):
        super().__init__()
        self.config = config
        self.conv1 = ReflectConv(3, 32, 9)
        self.norm1 = _norm(config, 32, "norm1")
        down = BlurredConv if config.resampling == "antialiased" else ReflectConv
        upsampling = RESAMPLINGS[config.resampling]
        self.conv2 = down(32, 64, 3, stride=2)
        self.norm2 = _norm(config, 64, "norm2")
        self.conv3 = down(64, 128, 3, stride=2)
        self.norm3 = _norm(config, 128, "norm3")
        self.res = nn.Sequential(*(ResidualBlock(128, config, f"res.{i}") for i in range(RESIDUAL_BLOCKS)))
        self.up1 = UpsampleConv(128, 64, upsampling)
        self.norm4 = _norm(config, 64, "norm4")
        self.up2 = UpsampleConv(64, 32, upsampling)
        self.norm5 = _norm(config, 32, "norm5")
        self.conv_out = BlockConv(32, 3, 9)
        for site, conv_path in NORMALIZED_CONVS.items():
            norm = self.get_submodule(site)
            if isinstance(norm, ConvNormalizer):
                norm.normalize_conv(conv_at(self, conv_path))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_min_size(x)
        scale = self.config.input_scale
        y = x * scale if scale != 1 else x
        y = F.relu(self.norm1(self.conv1(y)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        y = self.res(y)
        y = F.relu(self.norm4(self.up1(y)))
        y = F.relu(self.norm5(self.up2(y)))
        y = self.conv_out(y)
        if self.config.bounded_output:
            # In float32: under bf16 autocast tanh(y) rounds to 1 once |y| > ~3, its
            # gradient to exactly 0, and a pixel that saturates never learns again.
            y = OUTPUT_MIDPOINT + OUTPUT_HALF_RANGE * torch.tanh(y.float())
        if scale != 1:
            y = y / scale
        # Two stride-2 convolutions then two 2x upsamplings give a size rounded
        # up to a multiple of 4; output pixel (i, j) lines up with input (i, j).
        return y[..., :height, :width]
