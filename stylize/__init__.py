"""Fast neural style transfer with switchable normalization (instance vs batch norm).

The typed API the CLI is built on::

    from stylize import load_stylizer
    load_stylizer("starry-night").stylize_file(Path("photo.jpg"), Path("out.jpg"))

The stages, each a sub-package importing only the ones before it: ``model``
(the network and its files), ``training``, ``inference``, ``report``, ``cli``.
Names are imported on first use, so ``import stylize`` stays as cheap as
``import torch`` and torchvision loads only for training and comparing.
"""

from __future__ import annotations

import importlib
from typing import Any

from stylize.version import VERSION

_MODULES = {
    "stylize.errors": ("StylizeError", "TrainingDiverged", "TrainingInterrupted"),
    "stylize.images": ("LoadedImage", "load_image", "save_image"),
    "stylize.model.files": ("ModelInfo", "StyleModel", "bundled_models", "load_model", "save_model"),
    "stylize.model.network": ("NetConfig", "TransformerNet"),
    "stylize.model.norms": ("create_norm", "norm_names", "register_norm"),
    "stylize.training.config": ("TrainConfig",),
    "stylize.training.loop": ("StepReport", "TrainResult", "train"),
    "stylize.training.losses": ("LossWeights", "gram_matrix", "perceptual_loss", "total_variation"),
    "stylize.training.vgg": ("LossNetwork",),
    "stylize.inference.controls": ("StyleControls",),
    "stylize.inference.exported": ("ExportedNetwork", "export_model"),
    "stylize.inference.optimization": ("OptimizationSettings", "StyleImage", "StyleOptimizer"),
    "stylize.inference.stylizer": ("ImageStylizer", "InferenceSettings", "Stylizer", "load_stylizer"),
    "stylize.inference.video": ("VideoSettings", "stylize_video"),
    "stylize.report.compare": ("CompareSettings", "Comparison", "compare"),
    "stylize.report.curves": ("write_curves",),
    "stylize.report.sheet": ("write_sheet",),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)
__version__ = VERSION


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'stylize' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
