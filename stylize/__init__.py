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
from typing import TYPE_CHECKING, Any

from stylize.version import VERSION

_MODULES = {
    "stylize.errors": ("InvalidSetting", "StylizeError", "TrainingDiverged", "TrainingInterrupted"),
    "stylize.images": ("LoadedImage", "load_image", "save_image"),
    "stylize.model.blend": ("Blend", "blend_models"),
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
    "stylize.inference.outputs": ("FilesResult", "plan_outputs", "stylize_files"),
    "stylize.inference.stylizer": ("ImageLimits", "ImageStylizer", "InferenceSettings", "Stylizer", "load_stylizer"),
    "stylize.inference.temporal": ("FlowStabilizer", "StabilizerSettings"),
    "stylize.inference.video": ("VideoResult", "VideoSettings", "stylize_video"),
    "stylize.report.compare": ("CompareSettings", "Comparison", "compare"),
    "stylize.report.curves": ("write_curves",),
    "stylize.report.sheet": ("write_sheet",),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)
__version__ = VERSION

if TYPE_CHECKING:  # what editors and type checkers follow; at run time, __getattr__ imports
    from stylize.errors import InvalidSetting as InvalidSetting
    from stylize.errors import StylizeError as StylizeError
    from stylize.errors import TrainingDiverged as TrainingDiverged
    from stylize.errors import TrainingInterrupted as TrainingInterrupted
    from stylize.images import LoadedImage as LoadedImage
    from stylize.images import load_image as load_image
    from stylize.images import save_image as save_image
    from stylize.inference.controls import StyleControls as StyleControls
    from stylize.inference.exported import ExportedNetwork as ExportedNetwork
    from stylize.inference.exported import export_model as export_model
    from stylize.inference.optimization import OptimizationSettings as OptimizationSettings
    from stylize.inference.optimization import StyleImage as StyleImage
    from stylize.inference.optimization import StyleOptimizer as StyleOptimizer
    from stylize.inference.outputs import FilesResult as FilesResult
    from stylize.inference.outputs import plan_outputs as plan_outputs
    from stylize.inference.outputs import stylize_files as stylize_files
    from stylize.inference.stylizer import ImageLimits as ImageLimits
    from stylize.inference.stylizer import ImageStylizer as ImageStylizer
    from stylize.inference.stylizer import InferenceSettings as InferenceSettings
    from stylize.inference.stylizer import Stylizer as Stylizer
    from stylize.inference.stylizer import load_stylizer as load_stylizer
    from stylize.inference.temporal import FlowStabilizer as FlowStabilizer
    from stylize.inference.temporal import StabilizerSettings as StabilizerSettings
    from stylize.inference.video import VideoResult as VideoResult
    from stylize.inference.video import VideoSettings as VideoSettings
    from stylize.inference.video import stylize_video as stylize_video
    from stylize.model.blend import Blend as Blend
    from stylize.model.blend import blend_models as blend_models
    from stylize.model.files import ModelInfo as ModelInfo
    from stylize.model.files import StyleModel as StyleModel
    from stylize.model.files import bundled_models as bundled_models
    from stylize.model.files import load_model as load_model
    from stylize.model.files import save_model as save_model
    from stylize.model.network import NetConfig as NetConfig
    from stylize.model.network import TransformerNet as TransformerNet
    from stylize.model.norms import create_norm as create_norm
    from stylize.model.norms import norm_names as norm_names
    from stylize.model.norms import register_norm as register_norm
    from stylize.report.compare import CompareSettings as CompareSettings
    from stylize.report.compare import Comparison as Comparison
    from stylize.report.compare import compare as compare
    from stylize.report.curves import write_curves as write_curves
    from stylize.report.sheet import write_sheet as write_sheet
    from stylize.training.config import TrainConfig as TrainConfig
    from stylize.training.loop import StepReport as StepReport
    from stylize.training.loop import TrainResult as TrainResult
    from stylize.training.loop import train as train
    from stylize.training.losses import LossWeights as LossWeights
    from stylize.training.losses import gram_matrix as gram_matrix
    from stylize.training.losses import perceptual_loss as perceptual_loss
    from stylize.training.losses import total_variation as total_variation
    from stylize.training.vgg import LossNetwork as LossNetwork


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'stylize' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
