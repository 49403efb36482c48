"""Exported models: a trained network as an ONNX or TorchScript file, and running one.

What is exported is the inference form (see fastpath: batch norm folded, sub-pixel
upsampling), in fp32, with batch, height and width left free. The files carry
the model's name, style and network config, so ``stylize image`` runs them as it
runs model files.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stylize.errors import StylizeError, check_choice
from stylize.fileio import atomic_path
from stylize.model.fastpath import optimize_for_inference, set_tile
from stylize.model.files import StyleModel
from stylize.model.network import MIN_SIZE, pad_to_min_size
from stylize.version import VERSION

EXPORT_FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
EXPORT_TAG = "stylize-export"
_TORCHSCRIPT_METADATA = "stylize.json"
# Largest side the ONNX graph accepts; the exporter needs some bound.
MAX_SIDE = 32768
INPUT_NAME, OUTPUT_NAME = "image", "stylized"
# Tracing/exporting at batch 2 keeps the batch dimension free (batch 1 would be specialized).
_EXAMPLE_SHAPE = (2, 3, 64, 64)
ONNX_EXTRA = "pip install 'stylize[onnx]'"


def check_format(fmt: str) -> str:
    return check_choice("format", fmt, EXPORT_FORMATS)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and warn about deprecations; the CLI alone speaks."""
    exporter_loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in exporter_loggers]
    try:
        for logger in exporter_loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(exporter_loggers, levels, strict=True):
            logger.setLevel(level)


def _metadata(model: StyleModel) -> dict[str, str]:
    return {
        "format": EXPORT_TAG,
        "name": model.info.name,
        "style": model.info.style,
        "network": json.dumps(model.info.config.to_dict()),
        "stylize": VERSION,
    }


class _ClampedOutput(torch.nn.Module):
    """Exported files are for other runtimes too: the [0, 1] clamp goes in the graph."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).clamp(0, 1)


def export_model(model: StyleModel, fmt: str, out: Path) -> Path:
    """Write ``model`` to ``out`` (atomically) as ONNX or TorchScript; returns ``out``.

    ``fmt``: ``onnx`` or ``torchscript``. The graph maps NCHW float in [0, 1] to
    the same, clamped, with batch, height and width free (ONNX: sides of 16 to
    32768 pixels). Raises InvalidSetting for another ``fmt``, and StylizeError
    for ONNX without the onnx extra installed or an ``out`` that cannot be written.
    """
    check_format(fmt)
    network = _ClampedOutput(optimize_for_inference(model.network).cpu().float())
    set_tile(network, None)  # whole maps: one static graph
    example = torch.rand(_EXAMPLE_SHAPE)
    with _quiet(), atomic_path(out) as temporary:
        if fmt == "onnx":
            _export_onnx(network, example, _metadata(model), temporary)
        else:
            traced = torch.jit.trace(network, example)
            torch.jit.save(traced, str(temporary), _extra_files={_TORCHSCRIPT_METADATA: json.dumps(_metadata(model))})
    return out


def _export_onnx(network: torch.nn.Module, example: torch.Tensor, metadata: dict[str, str], path: Path) -> None:
    try:
        import onnx  # noqa: F401 - the exporter needs it, and onnxscript
        import onnxscript  # noqa: F401
    except ImportError:
        raise StylizeError(f"exporting to ONNX needs the onnx extra: {ONNX_EXTRA}") from None
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height", min=MIN_SIZE, max=MAX_SIDE)
    width = torch.export.Dim("width", min=MIN_SIZE, max=MAX_SIDE)
    program = torch.onnx.export(
        network,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: batch, 2: height, 3: width}},
    )
    assert program is not None  # the dynamo exporter always returns one
    program.model.metadata_props.update(metadata)
    program.save(str(path), external_data=False)


def exported_format(path: Path) -> str | None:
    """``onnx`` or ``torchscript`` for a file ``export_model`` wrote, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if zipfile.is_zipfile(path):
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
            if any(name.endswith(f"extra/{_TORCHSCRIPT_METADATA}") for name in archive.namelist()):
                return "torchscript"
    return None


@dataclass(frozen=True)
class ExportInfo:
    name: str
    style: str
    format: str
    runs_on: str  # the device or onnxruntime provider it runs on


class ExportedNetwork:
    """An exported file as a function: NCHW in [0, 1] -> the same, on the input's device.

    The graphs need sides of at least ``MIN_SIZE`` (the original pads smaller
    images itself); this pads and crops around them the same way.

    Raises StylizeError if ``path`` is not a file ``export_model`` wrote or
    cannot be read, or is ONNX and onnxruntime is not installed.
    """

    def __init__(self, path: Path, device: torch.device, on_notice: Callable[[str], None] | None = None):
        self.path = Path(path)
        fmt = exported_format(self.path)
        if fmt is None:
            raise StylizeError(f"{path} is not an ONNX or TorchScript file written by `stylize export`")
        if fmt == "onnx":
            metadata, self._run, runs_on = _open_onnx(self.path, device, on_notice)
        else:
            metadata, self._run, runs_on = _open_torchscript(self.path, device)
        if metadata.get("format") != EXPORT_TAG:
            raise StylizeError(f"{path} is a {fmt} file but not one written by `stylize export`")
        self.info = ExportInfo(
            name=metadata.get("name") or self.path.stem,
            style=metadata.get("style", ""),
            format=fmt,
            runs_on=runs_on,
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        return self._run(pad_to_min_size(images.float()))[..., :height, :width].clamp(0, 1).to(images.device)


Runner = Callable[[torch.Tensor], torch.Tensor]


def _open_onnx(
    path: Path, device: torch.device, on_notice: Callable[[str], None] | None
) -> tuple[dict[str, str], Runner, str]:
    try:
        import onnxruntime
    except ImportError:
        raise StylizeError(f"running {path.name} needs onnxruntime: {ONNX_EXTRA}") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif on_notice is not None:
            on_notice("this onnxruntime has no CUDA support (pip install onnxruntime-gpu); running on the CPU")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own classes for unreadable or invalid graphs
        raise StylizeError(f"{path} is not a readable ONNX model ({type(error).__name__})") from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)

    def run(x: torch.Tensor) -> torch.Tensor:
        (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().contiguous().numpy()})
        return torch.from_numpy(output)

    return metadata, run, session.get_providers()[0]


def _open_torchscript(path: Path, device: torch.device) -> tuple[dict[str, str], Runner, str]:
    extra = {_TORCHSCRIPT_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in new releases, and says so on every load
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as error:  # torch.jit raises RuntimeError and its own C++ errors alike
        raise StylizeError(f"{path} is not a readable TorchScript model ({type(error).__name__})") from None
    metadata: dict[str, Any] = json.loads(extra[_TORCHSCRIPT_METADATA] or "{}")

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(device))

    return {key: str(value) for key, value in metadata.items()}, run, str(device)
