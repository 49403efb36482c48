"""Stylizing: a loaded model on its device, applied to tensors, PIL images or files."""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from stylize.devices import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    autocast,
    check_precision,
    compute_dtype,
    keep_freed_memory,
    memory_format,
    resolve_device,
)
from stylize.errors import InvalidSetting, StylizeError
from stylize.fileio import refuse_overwriting
from stylize.images import (
    LoadedImage,
    image_to_tensor,
    load_animation,
    load_image,
    resize_long_side,
    save_animation,
    save_image,
    spatial_size,
    tensor_to_image,
)
from stylize.inference.controls import PLAIN, StyleControls, apply_controls, check_working_size
from stylize.inference.exported import ExportedNetwork, exported_format
from stylize.model.blend import Blend, load_blended
from stylize.model.fastpath import optimize_for_inference, set_tile
from stylize.model.files import StyleModel

# Norms whose networks stylize in bf16 by default where bf16 is native: on 24
# photos the bundled instance-norm models' bf16 output is within 0.4 levels of
# 255 of fp32 on average, differences are isolated speckles (99.9% of pixels
# within 8 levels), and no lattice or banding appears. Batch-norm models shift
# whole areas (12% of pixels over 2 levels on one photo): they stay fp32.
# benchmarks/precision.py measures it; BENCHMARKS.md has the table.
BF16_BY_DEFAULT_NORMS = frozenset({"instance"})
# torch.compile costs 10-25 s once on a 2-core CPU (a few s with inductor's cache warm)
# and then saves ~0.4 s per 1024x768 image (BENCHMARKS.md).
COMPILE_MIN_IMAGES = 16
# Eager runs go in bands of rows: the same output, less memory, and on a CPU
# faster too (a band's padded copies stay in cache: 1.7 vs 2.2 s at 1024x768).
AUTO_TILE_ROWS = 64
# Compiled runs use whole maps (bands cost them speed) unless the image is this large.
AUTO_TILE_PIXELS = 4_000_000


@dataclass(frozen=True)
class InferenceSettings:
    """How a model runs; the defaults pick the fastest way to the same output.

    Raises InvalidSetting for an unknown ``precision`` or a negative ``tile``.
    """

    precision: str = DEFAULT_PRECISION  # see devices.compute_dtype
    # None (auto): compile when told, via for_images, of enough images to pay for it.
    compile: bool | None = None
    # Band height in image rows; 0: never. None (auto): AUTO_TILE_ROWS, except
    # whole maps for compiled runs on images up to AUTO_TILE_PIXELS.
    tile: int | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.tile is not None and self.tile < 0:
            raise InvalidSetting("tile", "must be 0 (off) or a number of rows")

    def for_images(self, count: int) -> InferenceSettings:
        """Settle ``compile=None`` for a job of ``count`` images."""
        if self.compile is not None:
            return self
        return dataclasses.replace(self, compile=count >= COMPILE_MIN_IMAGES)

    def tile_for(self, height: int, width: int, compiled: bool) -> int | None:
        if self.tile is None:
            return None if compiled and height * width <= AUTO_TILE_PIXELS else AUTO_TILE_ROWS
        return self.tile or None


@dataclass(frozen=True)
class ImageLimits:
    """How large an image may be: shrunk so its long side is at most ``max_size``
    px; refused over ``max_pixels`` (None: ``max_pixels_setting()``).

    Raises InvalidSetting if either is under 1.
    """

    max_size: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_size", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidSetting(name, "must be at least 1")


NO_LIMITS = ImageLimits()


class ImageStylizer(ABC):
    """Tensors, images and files in, stylized out, on top of one raw function
    (``run``); the controls apply here, so every kind of model has them.

    ``stylize`` and ``stylize_file`` raise StylizeError as they say.
    """

    controls: StyleControls

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def run(self, images: torch.Tensor) -> torch.Tensor:
        """The network alone: NCHW in [0, 1] -> NCHW in [0, 1], same size, on the input's device."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``run`` under the controls (colour, strength, scale)."""
        return apply_controls(self.run, images, self.controls)

    def stylize(self, image: LoadedImage, max_size: int | None = None, max_pixels: int | None = None) -> LoadedImage:
        """Stylize, shrinking first when ``max_size`` asks; alpha follows the pixels.
        The working size of the scale control must stay within ``max_pixels``.

        ``max_size``: the long side at most, px. Raises StylizeError if the working
        size is over ``max_pixels`` (default: ``max_pixels_setting()``).
        """
        ImageLimits(max_size, max_pixels)  # validates
        rgb, alpha = image.rgb, image.alpha
        if max_size is not None and max(rgb.shape[-2:]) > max_size:
            rgb = resize_long_side(rgb, max_size)
            if alpha is not None and alpha.shape[-2:] != rgb.shape[-2:]:
                alpha = F.interpolate(alpha, size=rgb.shape[-2:], mode="bilinear", antialias=True)
        check_working_size(*spatial_size(rgb), self.controls, max_pixels)
        return LoadedImage(rgb=self(rgb), alpha=alpha)

    def stylize_pil(self, image: Image.Image, max_size: int | None = None) -> Image.Image:
        result = self.stylize(image_to_tensor(image), max_size)
        return tensor_to_image(result.rgb, result.alpha)

    def stylize_file(
        self, source: Path, destination: Path, max_size: int | None = None, max_pixels: int | None = None
    ) -> None:
        """Stylize an image file; an animated one (GIF, APNG, WebP) frame by
        frame, keeping each frame's duration and the loop count.

        Raises StylizeError if ``destination`` is ``source``; if the source cannot
        be read, or it or the scale control's working size is over ``max_pixels``;
        or if ``destination``'s extension names no image format (for an
        animation: GIF, PNG or WebP) or it cannot be written.
        """
        refuse_overwriting(source, destination)
        animation = load_animation(source, max_pixels)
        if animation is None:
            result = self.stylize(load_image(source, max_pixels), max_size, max_pixels)
            save_image(destination, result.rgb, result.alpha)
            return
        frames = [self.stylize(frame, max_size, max_pixels) for frame in animation.frames]
        save_animation(destination, dataclasses.replace(animation, frames=frames))


class Stylizer(ImageStylizer):
    """A model ready to stylize: the inference form of its network (see fastpath),
    in the settings' precision, compiled if asked, channels_last on CUDA.

    Usually made by ``load_stylizer``. Making one raises no StylizeError; its
    methods raise as ``ImageStylizer``'s say.
    """

    def __init__(
        self,
        model: StyleModel,
        device: torch.device,
        settings: InferenceSettings = InferenceSettings(),
        on_notice: Callable[[str], None] | None = None,
        controls: StyleControls = PLAIN,
    ):
        self.model = model
        self.device = device
        self.settings = settings
        self.controls = controls
        self.dtype = compute_dtype(settings.precision, device, model.info.config.norm in BF16_BY_DEFAULT_NORMS)
        self.on_notice = on_notice
        keep_freed_memory(device)  # on a CPU, no page-faulting every band's maps in again, image after image
        self.network = optimize_for_inference(model.network).to(device)
        if memory_format(device) == torch.channels_last:
            self.network.to(memory_format=torch.channels_last)
        self._compiled = quiet_compile(self.network) if settings.compile else None

    @property
    def name(self) -> str:
        return self.model.info.name

    @torch.inference_mode()
    def run(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, memory_format=memory_format(self.device))
        tile = self.settings.tile_for(*spatial_size(x), compiled=self._compiled is not None)
        with autocast(self.device, self.dtype):
            y = self._run_compiled(x) if self._compiled is not None and tile is None else None
            if y is None:
                set_tile(self.network, tile)
                y = self.network(x)
        return y.float().clamp(0, 1).contiguous().to(images.device)

    def _run_compiled(self, x: torch.Tensor) -> torch.Tensor | None:
        """The compiled network's output, or None (and eager from now on) when
        compiling fails, e.g. for want of a C++ compiler: the output is the same."""
        import torch._dynamo  # loaded by torch.compile already; costs a second otherwise

        set_tile(self.network, None)
        compiled = self._compiled
        if compiled is None:
            return None
        try:
            return compiled(x)
        except torch._dynamo.exc.TorchDynamoException as error:
            self._compiled = None
            if self.on_notice is not None:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                self.on_notice(f"torch.compile failed ({first_line[:200]}); continuing without it")
            return None


def quiet_compile(network: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` without the line a CUDA build of torch logs when its
    C++ compiler set-up loads on a machine without a GPU ("No CUDA runtime is
    found, using CUDA_HOME=..."): true, and nothing a user can act on."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return torch.compile(network)


class ExportedStylizer(ImageStylizer):
    """A file from ``stylize export`` (ONNX or TorchScript), run as exported."""

    def __init__(self, network: ExportedNetwork, controls: StyleControls = PLAIN):
        self.network = network
        self.controls = controls

    @property
    def name(self) -> str:
        return self.network.info.name

    def run(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


def load_stylizer(
    model: str | Path,
    device: str | torch.device = DEFAULT_DEVICE,
    settings: InferenceSettings = InferenceSettings(),
    controls: StyleControls = PLAIN,
    images: int = 1,
    on_notice: Callable[[str], None] | None = None,
    blend: Blend | None = None,
    style_mix: Mapping[str, float] | None = None,
) -> ImageStylizer:
    """The one way to get a stylizer: from a bundled model's name, a model
    file, a training checkpoint, or a file from ``export_model``, for a job of
    ``images`` images (which settles whether compiling pays); with ``blend``,
    the network interpolated towards a second model (``blend_models``); for a
    multi-style model, the ``style_mix`` of its styles (``choose_styles``).

    Exported files run as they were exported (fp32, whole maps, their own
    runtime); ``settings`` other than the defaults earn a notice there.

    Raises InvalidSetting for an unknown ``device`` or ``cuda`` without a CUDA
    GPU, and StylizeError for a GPU index this machine lacks, a model that
    cannot be found or read (see ``load_model`` and ``ExportedNetwork``),
    models that cannot be blended, or a style mix the model cannot give.
    """
    resolved = resolve_device(device) if isinstance(device, str) else device
    if blend is not None and (exported_format(Path(model)) or exported_format(Path(blend.model))):
        raise StylizeError("exported files cannot be blended: blend the model files, then export")
    if style_mix is not None and exported_format(Path(model)):
        raise StylizeError("an exported file holds one style: choose the style mix when exporting")
    if exported_format(Path(model)) is None:
        network = load_blended(model, blend, resolved, style_mix)
        return Stylizer(network, resolved, settings.for_images(images), on_notice, controls)
    if settings != InferenceSettings() and on_notice is not None:
        on_notice("precision, compile and tile settings apply to model files; exported files run as exported")
    return ExportedStylizer(ExportedNetwork(Path(model), resolved, on_notice), controls)
