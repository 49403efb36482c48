"""Stylizing: a loaded model on its device, applied to tensors, PIL images or files."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .devices import autocast, memory_format, resolve_device
from .errors import StylizeError
from .images import (
    LoadedImage,
    expand_inputs,
    image_to_tensor,
    load_image,
    output_format,
    resize_long_side,
    save_image,
    tensor_to_image,
)
from .modelfile import StyleModel, load_model


class Stylizer:
    """A model ready to stylize: eval mode, no autograd, bf16 + channels_last on CUDA."""

    def __init__(self, model: StyleModel, device: torch.device):
        self.model = model
        self.device = device
        self.network = model.network.to(device, memory_format=memory_format(device)).eval()

    @classmethod
    def load(cls, name_or_path: str | Path, device: str = "auto") -> Stylizer:
        resolved = resolve_device(device)
        return cls(load_model(name_or_path, resolved), resolved)

    @property
    def name(self) -> str:
        return self.model.info.name

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """NCHW in [0, 1] -> NCHW in [0, 1], same size, on the input's device."""
        x = images.to(self.device, memory_format=memory_format(self.device))
        with autocast(self.device):
            y = self.network(x)
        return y.float().clamp(0, 1).contiguous().to(images.device)

    def stylize(self, image: LoadedImage, max_size: int | None = None) -> LoadedImage:
        """Stylize, shrinking first when ``max_size`` asks; alpha follows the pixels."""
        rgb, alpha = image.rgb, image.alpha
        if max_size is not None and max(rgb.shape[-2:]) > max_size:
            rgb = resize_long_side(rgb, max_size)
            if alpha is not None and alpha.shape[-2:] != rgb.shape[-2:]:
                alpha = F.interpolate(alpha, size=rgb.shape[-2:], mode="bilinear", antialias=True)
        return LoadedImage(rgb=self(rgb), alpha=alpha)

    def stylize_pil(self, image: Image.Image, max_size: int | None = None) -> Image.Image:
        result = self.stylize(image_to_tensor(image), max_size)
        return tensor_to_image(result.rgb, result.alpha)

    def stylize_file(
        self, source: Path, destination: Path, max_size: int | None = None, max_pixels: int | None = None
    ) -> None:
        result = self.stylize(load_image(source, max_pixels), max_size)
        save_image(destination, result.rgb, result.alpha)


def plan_outputs(inputs: Sequence[str], out: Path | None, model_name: str) -> list[tuple[Path, Path]]:
    """Pair every input image with where its result goes.

    One input may go to a file (``--out result.png``); otherwise results go into
    a folder (``--out`` or the current one) as ``NAME-MODEL.EXT``, keeping the
    sub-folders of folder inputs.
    """
    found = expand_inputs(inputs)
    if out is not None and out.suffix and not out.is_dir():
        if len(found) > 1:
            raise StylizeError(f"{len(found)} inputs need --out to be a folder, not the file {out}")
        output_format(out)
        pairs = [(found[0][0], out)]
    else:
        folder = out if out is not None else Path(".")
        pairs = [
            (source, folder / relative.parent / f"{relative.stem}-{model_name}{relative.suffix}")
            for source, relative in found
        ]
    for source, destination in pairs:
        if destination.resolve() == source.resolve():
            raise StylizeError(f"refusing to overwrite the input {source}")
    return pairs
