"""Fast neural style transfer with switchable normalization (instance vs batch norm).

The typed API the CLI is built on::

    from stylize import Stylizer, TrainConfig, train
    Stylizer.load("starry-night").stylize_file(Path("photo.jpg"), Path("out.jpg"))
"""

from .compare import CompareSettings, Comparison, compare
from .controls import StyleControls
from .curves import write_curves
from .errors import StylizeError, TrainingDiverged, TrainingInterrupted
from .exported import ExportedNetwork, export_model
from .images import LoadedImage, load_image, save_image
from .losses import LossWeights, gram_matrix, perceptual_loss, total_variation
from .modelfile import ModelInfo, StyleModel, bundled_models, load_model, save_model
from .network import NetConfig, TransformerNet
from .norms import create_norm, norm_names, register_norm
from .sheet import write_sheet
from .stylizer import ImageStylizer, InferenceSettings, Stylizer, load_any_model, make_stylizer
from .training import StepReport, TrainConfig, TrainResult, train
from .version import VERSION
from .vgg import LossNetwork
from .video import VideoSettings, stylize_video

__all__ = [
    "CompareSettings",
    "Comparison",
    "ExportedNetwork",
    "ImageStylizer",
    "InferenceSettings",
    "LoadedImage",
    "LossNetwork",
    "LossWeights",
    "ModelInfo",
    "NetConfig",
    "StepReport",
    "StyleControls",
    "StyleModel",
    "StylizeError",
    "Stylizer",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TransformerNet",
    "VideoSettings",
    "bundled_models",
    "compare",
    "create_norm",
    "export_model",
    "gram_matrix",
    "load_any_model",
    "load_image",
    "load_model",
    "make_stylizer",
    "norm_names",
    "perceptual_loss",
    "register_norm",
    "save_image",
    "save_model",
    "stylize_video",
    "total_variation",
    "train",
    "write_curves",
    "write_sheet",
]

__version__ = VERSION
