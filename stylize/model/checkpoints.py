"""Training checkpoints: the one place their format is written and read.

A checkpoint holds what continuing a run exactly needs (weights, optimizer
state, step; data order is a function of the step) and what rebuilding its
network needs, so every command that takes a model takes a checkpoint too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch

from stylize.errors import StylizeError
from stylize.fileio import atomic_path, load_torch_file
from stylize.model.network import NetConfig

CHECKPOINTS_KEPT = 3
_PATTERN = "step-*.pt"
_REQUIRED = frozenset({"model", "optimizer", "step", "config"})


@dataclass(frozen=True)
class Checkpoint:
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    step: int
    # Photos per step over all processes; the run's recorded settings (TrainConfig.to_dict).
    global_batch: int
    config: dict[str, Any]
    net_config: NetConfig
    style: str = ""
    seconds: float = 0.0
    unreadable_files: tuple[str, ...] = ()
    init_sha256: str | None = None  # of the model a fine-tuning run started from

    def to_state(self) -> dict[str, Any]:
        return {
            "model": self.weights,
            "optimizer": self.optimizer,
            "step": self.step,
            "global_batch": self.global_batch,
            "config": self.config,
            "net_config": self.net_config.to_dict(),
            "style": self.style,
            "seconds": self.seconds,
            "unreadable_files": list(self.unreadable_files),
            "init_sha256": self.init_sha256,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Checkpoint:
        """Checkpoints of older versions lack some keys: they had those defaults then."""
        config = state["config"]
        return cls(
            weights=state["model"],
            optimizer=state["optimizer"],
            step=int(state["step"]),
            global_batch=int(state.get("global_batch", config.get("batch_size", 0))),
            config=config,
            net_config=NetConfig.from_dict(state.get("net_config", {})),
            style=state.get("style", ""),
            seconds=float(state.get("seconds", 0.0)),
            unreadable_files=tuple(state.get("unreadable_files", ())),
            init_sha256=state.get("init_sha256"),
        )


def is_checkpoint_state(state: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(state, dict) and _REQUIRED <= state.keys()


def checkpoint_dir(out: Path) -> Path:
    """Where a run writing the model ``out`` keeps its checkpoints."""
    return out.with_name(f"{out.stem}.ckpt")


def checkpoint_files(folder: Path) -> list[Path]:
    """Oldest first."""
    return sorted(Path(folder).glob(_PATTERN))


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file, or the newest one in a checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        found = checkpoint_files(path)
        if not found:
            raise StylizeError(f"no checkpoints ({_PATTERN}) in {path}")
        return found[-1]
    if not path.is_file():
        raise StylizeError(f"checkpoint not found: {path}")
    return path


def read_checkpoint(path: Path) -> Checkpoint:
    state = load_torch_file(path, "a training checkpoint")
    if not is_checkpoint_state(state):
        raise StylizeError(f"{path} is not a training checkpoint")
    try:
        return Checkpoint.from_state(state)
    except (AttributeError, KeyError, TypeError, ValueError, StylizeError) as error:
        raise StylizeError(f"{path} is not a readable training checkpoint ({error})") from None


def write_checkpoint(folder: Path, checkpoint: Checkpoint) -> Path:
    """Write atomically, then drop all but the newest few and any temporary
    files a killed run left behind."""
    path = folder / f"step-{checkpoint.step:08d}.pt"
    try:
        with atomic_path(path) as temporary:
            torch.save(checkpoint.to_state(), temporary)
    except StylizeError as error:  # e.g. the disk is full: the older checkpoints are intact
        raise StylizeError(f"{error}; the last good checkpoint is {latest_checkpoint(folder)}") from None
    for old in [*checkpoint_files(folder)[:-CHECKPOINTS_KEPT], *folder.glob(".step-*")]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: Path) -> str:
    """The newest checkpoint's path, or "none", for messages."""
    found = checkpoint_files(folder)
    return str(found[-1]) if found else "none"
