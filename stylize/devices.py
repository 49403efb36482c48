"""Device choice and the fast settings each device gets."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from .errors import StylizeError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda:N`` picks a GPU by index."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise StylizeError(f"unknown device {name!r}; choose one of: auto, cpu, cuda, cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise StylizeError("CUDA was requested but no CUDA GPU is available; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise StylizeError(f"no GPU {name}: this machine has {torch.cuda.device_count()}")
    return torch.device(name)


def autocast(device: torch.device) -> ContextManager[object]:
    """bf16 autocast on CUDA (tensor cores, half the memory traffic); fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last lets cuDNN use its fastest NHWC convolution kernels."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
