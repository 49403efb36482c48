"""Device choice and the fast settings each device gets."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from contextlib import AbstractContextManager

import torch

from stylize.errors import InvalidSetting, StylizeError, check_choice, invalid_choice

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"  # CUDA when present


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda:N`` picks a GPU by index."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise invalid_choice("device", name, ("auto", "cpu", "cuda", "cuda:N"))
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InvalidSetting("device", "is cuda but no CUDA GPU is available; use cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise StylizeError(f"no GPU {name}: this machine has {torch.cuda.device_count()}")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_PRECISION = "auto"  # bf16 where it is native and keeps the output, see compute_dtype


def check_precision(precision: str) -> str:
    return check_choice("precision", precision, PRECISIONS)


def compute_dtype(precision: str, device: torch.device, bf16_keeps_output: bool = True) -> torch.dtype:
    """``auto``: bf16 where ``device`` computes it natively and, for stylizing,
    the network's output stays visually the same in bf16 (``bf16_keeps_output``);
    else fp32. Training: 1.6x the fp32 images/s on this kind of CPU, with the Gram
    matrices and loss sums kept float32 (see losses.py) so the style is not lost."""
    if check_precision(precision) == "bf16" or (precision == "auto" and bf16_keeps_output and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: CUDA GPUs that support it,
    and CPUs with AVX512-BF16 or AMX (elsewhere bf16 is emulated and slow)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(
        getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager[object]:
    """Autocast to ``dtype``; a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last lets cuDNN use its fastest NHWC convolution kernels."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it takes on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20
_NEVER_TRIM = 2**31 - 1


def keep_freed_memory(device: torch.device) -> bool:
    """For work on a CPU ``device``: make glibc's malloc keep freed blocks of up
    to 32 MB for reuse.

    By default it hands large freed blocks back to the kernel, and a CPU training
    step frees and allocates the same feature maps every time, so each step
    page-faults them all in again: 11,000-15,000 faults and 7-12% of a step at
    128 px on a 2-core CPU. The peak memory is the same; it is only kept between
    steps. Process-wide; whether it applied (CPU devices, glibc only).
    """
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library already loaded
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
