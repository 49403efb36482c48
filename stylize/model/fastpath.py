"""The inference form of a trained network: the same function with fewer FLOPs and less memory.

``optimize_for_inference`` returns a copy of a ``TransformerNet`` whose layers are
rewritten, weights and all, into forms that compute the same output faster:

- eval-mode batch norm folded into the convolution before it;
- 2x upsampling + 3x3 convolution (``up1``, ``up2``) as four convolutions on
  the small map, interleaved ("sub-pixel"): the 4x larger upsampled map is
  never built (and nearest upsampling takes 2.25x fewer FLOPs);
- the 9x9 convolution to 3 channels (``conv_out``) as a 3x3 convolution on the
  4x4 space-to-depth map (512 -> 48 channels): 1.8x the FLOPs, but a shape
  oneDNN runs about 3x faster than a GEMM with 3 output columns;
- optionally, every convolution in bands of rows (``tile``): only whole feature
  maps are kept, never their padded and unfolded copies. Norm layers still see
  the whole map, so the result equals the untiled one: no seams, no blending.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from stylize.model.convforms import space_to_depth_conv, space_to_depth_kernels, subpixel_conv, subpixel_kernels
from stylize.model.network import (
    NORMALIZED_CONVS,
    SPACE_TO_DEPTH,
    ReflectConv,
    TransformerNet,
    UpsampleConv,
    conv_at,
    pad,
)

# A band's rows are given in image rows; a layer working at 1/scale resolution
# takes tile // scale of its own rows per band.
_BAND_SCALE = {"conv1": 1, "conv2": 2, "conv3": 4, "up1": 4, "up2": 2, "conv_out": 1}
_RESIDUAL_SCALE = 4
MIN_BAND_ROWS = 4


class BandedConv(nn.Module):
    """A padded convolution that can compute its output in bands of rows.

    Subclasses implement ``band(x, top, bottom)``: the output for rows of ``x``
    that need ``top``/``bottom`` rows of border padding (0 inside the image,
    where neighbouring rows are passed in instead).
    """

    def __init__(self, pad: int, stride: int = 1, upscale: int = 1, band_scale: int = 1):
        super().__init__()
        self.pad = pad
        self.stride = stride
        self.upscale = upscale  # output rows per band row
        self.band_scale = band_scale
        self.band_rows: int | None = None

    def band(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        raise NotImplementedError

    def set_tile(self, tile: int | None) -> None:
        self.band_rows = None if tile is None else max(MIN_BAND_ROWS, tile // self.band_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[-2]
        extent = 2 * self.pad + 1
        rows = (height + 2 * self.pad - extent) // self.stride + 1
        if self.band_rows is None or rows <= self.band_rows:
            return self.band(x, self.pad, self.pad)
        out: torch.Tensor | None = None
        for first in range(0, rows, self.band_rows):
            last = min(first + self.band_rows, rows)
            start = self.stride * first - self.pad
            stop = self.stride * (last - 1) - self.pad + extent
            y = self.band(x[..., max(start, 0) : min(stop, height), :], max(0, -start), max(0, stop - height))
            if out is None:
                out = torch.empty(
                    (*y.shape[:-2], rows * self.upscale, y.shape[-1]),
                    dtype=y.dtype,
                    device=y.device,
                    memory_format=_memory_format_of(y),
                )
            out[..., first * self.upscale : last * self.upscale, :] = y
        assert out is not None
        return out


def _frozen_bias(conv: nn.Conv2d) -> nn.Parameter:
    assert conv.bias is not None  # every convolution of the network has one
    return nn.Parameter(conv.bias.detach().clone(), requires_grad=False)


def _memory_format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class FastReflectConv(BandedConv):
    """``ReflectConv`` with optional bands."""

    def __init__(self, source: ReflectConv, band_scale: int):
        conv = source.conv2d
        super().__init__(pad=source.padding, stride=conv.stride[0], band_scale=band_scale)
        self.weight = nn.Parameter(source.kernel().detach().clone(), requires_grad=False)
        self.bias = _frozen_bias(conv)

    def band(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        padded = pad(x, (self.pad, self.pad, top, bottom), "reflect")
        return F.conv2d(padded, self.weight, self.bias, self.stride)


class SubpixelConv(BandedConv):
    """``UpsampleConv`` computed on the small map (see ``convforms``)."""

    def __init__(self, source: UpsampleConv, band_scale: int):
        super().__init__(pad=1, upscale=2, band_scale=band_scale)
        conv = source.conv2d
        kernels = subpixel_kernels(conv.weight.detach().double(), source.upsampling)
        self.weight = nn.Parameter(kernels.to(conv.weight.dtype), requires_grad=False)
        self.bias = _frozen_bias(conv)

    def band(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        return subpixel_conv(pad(x, (1, 1, top, bottom), "replicate"), self.weight, self.bias)


class SpaceToDepthConv(BandedConv):
    """A large-kernel convolution with few output channels, as a small-kernel
    convolution over ``factor x factor`` blocks (see ``convforms``)."""

    def __init__(self, source: ReflectConv, band_scale: int, factor: int = SPACE_TO_DEPTH):
        conv = source.conv2d
        super().__init__(pad=conv.kernel_size[0] // 2, band_scale=band_scale)
        self.factor = factor
        kernels = space_to_depth_kernels(conv.weight.detach().double(), factor)
        self.weight = nn.Parameter(
            kernels.to(conv.weight.dtype).contiguous(memory_format=torch.channels_last), requires_grad=False
        )
        self.bias = _frozen_bias(conv)

    def set_tile(self, tile: int | None) -> None:
        super().set_tile(tile)  # bands of whole blocks
        if self.band_rows is not None:
            self.band_rows = -(-self.band_rows // self.factor) * self.factor

    def band(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        padded = pad(x, (self.pad, self.pad, top, bottom), "reflect")
        return space_to_depth_conv(padded, self.weight, self.bias, self.factor, self.pad)


def fold_batch_norms(net: TransformerNet) -> None:
    """Eval-mode batch norm is a per-channel affine map: fold it into the
    convolution before it and drop the layer (in place)."""
    for site, conv_path in NORMALIZED_CONVS.items():
        norm = net.get_submodule(site)
        # Not its subclasses: batch-instance norm mixes in each image's own statistics.
        if type(norm) is not nn.BatchNorm2d or norm.running_mean is None or norm.running_var is None:
            continue
        conv = conv_at(net, conv_path)
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
        )
        net.set_submodule(site, nn.Identity())


def _band_scale(path: str) -> int:
    return _BAND_SCALE.get(path, _RESIDUAL_SCALE)


def optimize_for_inference(net: TransformerNet, tile: int | None = None) -> TransformerNet:
    """A copy of ``net`` in eval mode with every rewrite above; ``tile`` is the
    band height in image rows (None: whole maps)."""
    fast = copy.deepcopy(net).eval().requires_grad_(False)
    fold_batch_norms(fast)
    for path, module in list(fast.named_modules()):
        if isinstance(module, UpsampleConv):
            fast.set_submodule(path, SubpixelConv(module, _band_scale(path)))
        elif path == "conv_out":
            fast.set_submodule(path, SpaceToDepthConv(module, _band_scale(path)))
        elif isinstance(module, ReflectConv):
            fast.set_submodule(path, FastReflectConv(module, _band_scale(path)))
    set_tile(fast, tile)
    return fast


def set_tile(net: nn.Module, tile: int | None) -> None:
    """Band height in image rows for every convolution of an optimized network (None: off)."""
    for module in net.modules():
        if isinstance(module, BandedConv):
            module.set_tile(tile)
