"""Cheaper forms of two of the network's convolutions, exact up to float rounding.

- 2x upsampling + 3x3 convolution (the decoder's ``up1``, ``up2``) as four
  convolutions on the small map, interleaved ("sub-pixel"), so the 4x larger
  upsampled map is never built: 2x2 ones for nearest upsampling (2.25x fewer
  FLOPs; reflection padding of the upsampled map equals replicate padding of
  the small map upsampled), 3x3 ones for bilinear (the upsampled map padded by
  replicating its border).
- A 3x3 stride-2 convolution of a blurred map as one 5x5 stride-2 convolution.
- The 9x9 convolution to 3 channels (``conv_out``) as a 3x3 convolution over
  4x4 space-to-depth blocks (32 -> 512 channels in, 3 -> 48 out): 1.8x the
  FLOPs, but a shape oneDNN runs about 3x faster than a GEMM with 3 columns.

The kernels are einsums of the original weights, so the network trains in these
forms (gradients flow back to the stored 3x3 and 9x9 weights, and model files
keep the usual layout) and the inference form precomputes them once.
"""

from __future__ import annotations

import torch


def _nearest_selector() -> torch.Tensor:
    """``[phase, tap, source_tap]``: which 3x3 taps of the nearest-upsampled image
    each 2x2 tap of output phase 0 (even rows) or 1 (odd rows) sums.

    Upsampled row ``2i + phase + d - 1`` is source row ``i + (phase + d - 1) // 2``,
    and the 2x2 kernel of that phase reads source rows ``i + phase - 1`` and ``i + phase``.
    """
    selector = torch.zeros(2, 2, 3, dtype=torch.float64)
    for phase in range(2):
        for d in range(3):
            selector[phase, (phase + d - 1) // 2 - phase + 1, d] = 1
    return selector


def _bilinear_selector() -> torch.Tensor:
    """``[phase, tap, source_tap]`` for bilinear upsampling (half-pixel centres):
    upsampled row ``2k`` is ``x[k-1]/4 + 3x[k]/4``, row ``2k+1`` is ``3x[k]/4 + x[k+1]/4``;
    each phase's 3x3 kernel reads source rows ``i - 1 .. i + 1``."""
    selector = torch.zeros(2, 3, 3, dtype=torch.float64)
    for phase in range(2):
        for d in range(3):
            row = phase + d - 1  # upsampled row, relative to 2i
            near, far = row // 2, row // 2 + (1 if row % 2 else -1)
            selector[phase, near + 1, d] += 0.75
            selector[phase, far + 1, d] += 0.25
    return selector


_SUBPIXEL = {"nearest": _nearest_selector(), "bilinear": _bilinear_selector()}


def subpixel_kernels(weight: torch.Tensor, upsampling: str = "nearest") -> torch.Tensor:
    """(out, in, 3, 3) -> (4 * out, in, k, k), k = 2 (nearest) or 3 (bilinear):
    phase (row, col) major, then output channel."""
    selector = _SUBPIXEL[upsampling].to(weight)
    kernels = torch.einsum("atd,bse,ocde->abocts", selector, selector, weight)
    taps = selector.shape[1]
    return kernels.reshape(4 * weight.shape[0], weight.shape[1], taps, taps)


def subpixel_conv(padded: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The upsampled convolution of a small map replicate-padded by one pixel on
    every side (rows: the border or neighbouring rows); output 2x its inner size."""
    out_channels = kernels.shape[0] // 4
    phases = torch.nn.functional.conv2d(padded, kernels, None if bias is None else bias.repeat(4))
    height, width = padded.shape[-2] - 2, padded.shape[-1] - 2
    phases = phases.unflatten(1, (2, 2, out_channels))
    # Output pixel (2i + row, 2j + col) is phase (row, col) at (i + row, j + col)
    # for 2x2 kernels (whose window starts at the phase's row), at (i, j) for 3x3.
    shift = 3 - kernels.shape[-1]

    def phase(row: int, col: int) -> torch.Tensor:
        top, left = row * shift, col * shift
        return phases[:, row, col, :, top : top + height, left : left + width]

    rows = [torch.stack([phase(row, col) for col in range(2)], dim=-1) for row in range(2)]
    return torch.stack(rows, dim=-3).reshape(padded.shape[0], out_channels, 2 * height, 2 * width)


# Zhang (2019), "Making Convolutional Networks Shift-Invariant Again": a binomial
# low-pass before subsampling, so a stride-2 layer does not alias fine detail
# into a pattern locked to its grid.
_BLUR = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64) / 4


def blurred_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, k, k) -> (out, in, k + 2, k + 2): the kernel that convolves the
    [1, 2, 1]² / 16 blur of a map with ``weight`` in one pass."""
    blur = (_BLUR[:, None] * _BLUR[None, :]).to(weight)
    flat = weight.reshape(-1, 1, *weight.shape[-2:])
    # A full 2-D convolution of each k x k kernel with the (symmetric) 3x3 blur.
    composed = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (2, 2, 2, 2)), blur[None, None])
    return composed.reshape(*weight.shape[:2], *composed.shape[-2:])


def _space_to_depth_selector(kernel: int, factor: int, taps: int) -> torch.Tensor:
    """``[phase, sub_row, tap, source_tap]``: output row ``factor*Y + phase`` reads
    source tap ``d`` from block row ``Y + tap``, sub-row ``factor*tap + sub_row - phase == d``."""
    selector = torch.zeros(factor, factor, taps, kernel, dtype=torch.float64)
    for phase in range(factor):
        for sub_row in range(factor):
            for tap in range(taps):
                d = factor * tap + sub_row - phase
                if 0 <= d < kernel:
                    selector[phase, sub_row, tap, d] = 1
    return selector


def block_taps(kernel: int, factor: int) -> int:
    """Kernel side, in blocks, of the space-to-depth form of a ``kernel`` convolution."""
    return -(-(kernel + factor - 1) // factor)


def space_to_depth_kernels(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """(out, in, k, k) -> (factor² * out, factor² * in, taps, taps).

    Output channels phase-major and input channels block-position-major: the
    orders the channels_last shuffles in ``space_to_depth_conv`` produce and
    consume for free.
    """
    out_channels, in_channels, kernel = weight.shape[0], weight.shape[1], weight.shape[-1]
    taps = block_taps(kernel, factor)
    selector = _space_to_depth_selector(kernel, factor, taps).to(weight)
    kernels = torch.einsum("ayqd,bxpe,ocde->aboyxcqp", selector, selector, weight)
    return kernels.reshape(factor * factor * out_channels, factor * factor * in_channels, taps, taps)


def space_to_depth_conv(
    padded: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None, factor: int, pad: int
) -> torch.Tensor:
    """The ``2 * pad + 1`` convolution of an already padded map, through blocks."""
    batch, channels, height, width = padded.shape
    out_height, out_width = height - 2 * pad, width - 2 * pad
    taps = kernels.shape[-1]
    out_channels = kernels.shape[0] // (factor * factor)
    # Blocks enough for every output row and column, the extra ones zero.
    block_rows = -(-out_height // factor) + taps - 1
    block_cols = -(-out_width // factor) + taps - 1
    padded = torch.nn.functional.pad(padded, (0, factor * block_cols - width, 0, factor * block_rows - height))
    blocks = (
        padded.permute(0, 2, 3, 1)
        .reshape(batch, block_rows, factor, block_cols, factor, channels)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(batch, block_rows, block_cols, factor * factor * channels)
        .permute(0, 3, 1, 2)
    )
    y = torch.nn.functional.conv2d(blocks, kernels, None if bias is None else bias.repeat(factor * factor))
    rows, cols = y.shape[-2:]
    y = (
        y.permute(0, 2, 3, 1)
        .reshape(batch, rows, cols, factor, factor, out_channels)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(batch, rows * factor, cols * factor, out_channels)
        .permute(0, 3, 1, 2)
    )
    return y[..., :out_height, :out_width]
