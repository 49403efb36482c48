"""Model files: stylize's own safetensors files, training checkpoints, and pytorch/examples models.

A stylize model file is safetensors with JSON metadata carrying the network
config (so any command rebuilds the same network) and how it was trained.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from stylize.devices import resolve_device
from stylize.errors import InvalidSetting, StylizeError
from stylize.fileio import atomic_path, load_torch_file
from stylize.model.checkpoints import Checkpoint, is_checkpoint_state
from stylize.model.network import NetConfig, TransformerNet
from stylize.model.norms import norm_names

FORMAT = "stylize"
# 2: antialiased resampling. Its weights have the names and shapes of a nearest
# network's, so a reader of version 1 would run them wrongly without a word;
# nearest models are still written as 1, which every reader runs right.
FORMAT_VERSION = 2
MODEL_SUFFIX = ".safetensors"
DEFAULT_NORM = "instance"
# Model files store float weights as float16: half the size, and stylized
# pixels within 1 level of 255 of the float32 network (loading casts back).
# Training checkpoints keep float32 so that resume stays exact.
STORED_DTYPE = torch.float16
# The bundled style that image and video use when no --model is given.
DEFAULT_STYLE = "starry-night"


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself, readable without loading weights."""

    name: str
    path: Path
    config: NetConfig
    style: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    style_thumbnail: str = ""  # base64 JPEG of the style image; see images.decode_thumbnail
    # A conditional network's styles in its order, and their thumbnails; empty for one-style models.
    styles: tuple[str, ...] = ()
    style_thumbnails: tuple[str, ...] = ()


@dataclass(frozen=True)
class StyleModel:
    """A loaded model, as ``load_model`` returns it: what its file says, and its
    network in eval mode."""

    info: ModelInfo
    network: TransformerNet


def models_dir() -> Path:
    """Bundled models: $STYLIZE_MODELS, else the installed package's models
    (stylize/models in a wheel), else the source tree's top-level models/."""
    override = os.environ.get("STYLIZE_MODELS")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[1]  # stylize/, above this module's stage
    installed = package / "models"
    return installed if installed.is_dir() else package.parent / "models"


def models_in(folder: Path) -> list[ModelInfo]:
    """The folder's model files by style, then in the norm registry's order (instance first)."""
    infos = [read_info(path) for path in folder.glob(f"*{MODEL_SUFFIX}")]
    order = norm_names()
    return sorted(infos, key=lambda info: (info.style, order.index(info.config.norm), info.name))


def bundled_models() -> list[ModelInfo]:
    """The models shipped with stylize ($STYLIZE_MODELS, else the package's
    models folder), by style, then by norm in registry order; empty without
    that folder. Reads metadata only.

    Raises StylizeError if a model file there is not a readable stylize model.
    """
    folder = models_dir()
    return models_in(folder) if folder.is_dir() else []


def default_model_name() -> str:
    """``DEFAULT_STYLE`` if bundled, else the first bundled model `stylize models` lists."""
    names = [info.name for info in bundled_models()]
    if not names:
        raise StylizeError(f"no bundled models in {models_dir()}")
    has_default = DEFAULT_STYLE in names or f"{DEFAULT_STYLE}-{DEFAULT_NORM}" in names
    return DEFAULT_STYLE if has_default else names[0]


def resolve_model(name_or_path: str | Path) -> Path:
    """A path to a model file, or a bundled model's name: ``starry-night`` picks
    ``starry-night.safetensors`` or else its instance-norm variant."""
    path = Path(name_or_path)
    if path.exists():
        if path.is_dir():
            raise StylizeError(f"{path} is a folder, not a model file")
        return path
    folder = models_dir()
    for candidate in (f"{name_or_path}{MODEL_SUFFIX}", f"{name_or_path}-{DEFAULT_NORM}{MODEL_SUFFIX}"):
        if (folder / candidate).is_file():
            return folder / candidate
    names = ", ".join(info.name for info in bundled_models()) or f"none in {folder}"
    raise StylizeError(f"no model file or bundled model named {str(name_or_path)!r} (bundled: {names})")


def resolve_models(names: Sequence[str | Path]) -> list[Path]:
    """Model files for ``compare``: paths, folders of models, bundled names, and
    bundled style names, which stand for every norm trained for that style."""
    found: list[Path] = []
    for name in names:
        path, folder = Path(name), models_dir()
        if path.is_dir():
            paths = [info.path for info in models_in(path)]
            if not paths:
                raise StylizeError(f"no model files (*{MODEL_SUFFIX}) in folder {path}")
        elif path.exists() or (folder / f"{name}{MODEL_SUFFIX}").is_file():
            paths = [resolve_model(name)]
        else:
            paths = [folder / f"{name}-{norm}{MODEL_SUFFIX}" for norm in norm_names()]
            paths = [candidate for candidate in paths if candidate.is_file()] or [resolve_model(name)]
        found.extend(candidate for candidate in paths if candidate not in found)
    return found


def save_model(
    path: Path,
    network: TransformerNet,
    style: str,
    training: dict[str, Any],
    style_thumbnail: str = "",
    *,
    styles: Sequence[str] = (),
    style_thumbnails: Sequence[str] = (),
) -> None:
    """Write ``network`` to ``path`` (atomically) as a stylize model file:
    safetensors with float weights stored as float16, and as metadata its
    ``NetConfig``, the ``style``'s name, the ``training`` record (JSON-able
    values) and ``style_thumbnail`` (base64 JPEG, see images.encode_thumbnail);
    for a conditional network, the names and thumbnails of all its ``styles``.

    Raises StylizeError if ``path`` cannot be written; ValueError if ``styles``
    are given but not one per style the network holds.
    """
    if styles and len(styles) != network.config.styles:
        raise ValueError(f"{len(styles)} style names for a network of {network.config.styles} styles")
    metadata = {
        "format": FORMAT,
        "format_version": "1" if network.config.resampling == "nearest" else str(FORMAT_VERSION),
        "network": json.dumps(network.config.to_dict()),
        "style": style,
        "style_thumbnail": style_thumbnail,
        "training": json.dumps(training),
    }
    if styles:
        metadata.update(styles=json.dumps(list(styles)), style_thumbnails=json.dumps(list(style_thumbnails)))
    tensors = {key: _stored(value) for key, value in network.state_dict().items()}
    with atomic_path(Path(path)) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return (tensor.to(STORED_DTYPE) if tensor.is_floating_point() else tensor).contiguous()


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _stylize_info(path: Path, metadata: dict[str, str] | None) -> ModelInfo:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise StylizeError(f"{path} is a safetensors file but not a stylize model")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise StylizeError(f"{path} has model format version {version!r}; this stylize reads up to {FORMAT_VERSION}")
    try:
        config = NetConfig.from_dict(json.loads(metadata["network"]))
        training = json.loads(metadata.get("training", "{}"))
        styles = tuple(map(str, json.loads(metadata.get("styles", "[]"))))
        thumbnails = tuple(map(str, json.loads(metadata.get("style_thumbnails", "[]"))))
        if styles and len(styles) != config.styles:
            raise ValueError(f"{len(styles)} style names for {config.styles} styles")
        if thumbnails and len(thumbnails) != len(styles):
            raise ValueError(f"{len(thumbnails)} style thumbnails for {len(styles)} style names")
        if len(set(styles)) != len(styles):
            raise ValueError("two styles share a name")
    except InvalidSetting as error:
        raise StylizeError(f"{path} holds a network this stylize cannot build: {error}") from None
    except (KeyError, ValueError, TypeError) as error:
        raise StylizeError(f"{path} has broken metadata ({error})") from None
    return ModelInfo(
        name=path.stem,
        path=path,
        config=config,
        style=metadata.get("style", ""),
        training=training,
        style_thumbnail=metadata.get("style_thumbnail", ""),
        styles=styles,
        style_thumbnails=thumbnails,
    )


def read_info(path: Path) -> ModelInfo:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return _stylize_info(path, handle.metadata())
    except (SafetensorError, OSError) as error:
        raise StylizeError(f"{path} is not a readable model file ({error})") from None


# pytorch/examples fast_neural_style names its layers differently and works in 0..255.
_EXAMPLES_RENAMES = (
    (re.compile(r"^res(\d)\."), lambda m: f"res.{int(m[1]) - 1}."),
    (re.compile(r"(^|\.)in(\d)\."), lambda m: f"{m[1]}norm{m[2]}."),
    (re.compile(r"^deconv([12])\."), lambda m: f"up{m[1]}."),
    (re.compile(r"^deconv3\."), lambda m: "conv_out."),
)
_EXAMPLES_STALE = re.compile(r"(^|\.)in\d\.running_(mean|var)$")


def _is_examples_state(state: dict[str, torch.Tensor]) -> bool:
    return "deconv3.conv2d.weight" in state and "in1.weight" in state


def _from_examples(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in state.items():
        if _EXAMPLES_STALE.search(key):
            continue  # old InstanceNorm2d files carry statistics they never use
        for pattern, replacement in _EXAMPLES_RENAMES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted


# Prefixes every key gets from a wrapper the model was saved inside:
# DataParallel and DistributedDataParallel, and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _unwrapped(state: object) -> object:
    """A state dict saved from a wrapped model, with the wrappers' prefixes taken off its keys."""
    while isinstance(state, dict) and state:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(str(key).startswith(p) for key in state)), None)
        if prefix is None:
            break
        state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _read_torch_file(path: Path) -> tuple[ModelInfo, dict[str, torch.Tensor]]:
    state = _unwrapped(load_torch_file(path, "a model file"))
    if is_checkpoint_state(state):
        checkpoint = Checkpoint.from_state(state)
        return ModelInfo(
            name=path.stem, path=path, config=checkpoint.net_config, style=checkpoint.style
        ), checkpoint.weights
    if isinstance(state, dict) and _is_examples_state(state):
        examples = NetConfig(norm="instance", input_scale=255.0, bounded_output=False, resampling="nearest")
        info = ModelInfo(name=path.stem, path=path, config=examples)
        return info, _from_examples(state)
    raise StylizeError(f"{path} is not a stylize model, training checkpoint or fast_neural_style model")


def load_model(name_or_path: str | Path, device: torch.device | str = "cpu") -> StyleModel:
    """Rebuild the network a model file describes, in eval mode on ``device``.

    ``name_or_path``: a bundled model's name, a stylize model file, a training
    checkpoint, or a pytorch/examples fast_neural_style state dict. Raises
    StylizeError if there is no such file or bundled model, the file is none of
    those or cannot be read, or its weights do not fit the network it describes;
    InvalidSetting for an unknown device name.
    """
    target = resolve_device(device) if isinstance(device, str) else device
    path = resolve_model(name_or_path)
    try:
        if _is_safetensors(path):
            info = read_info(path)
            state = load_file(str(path))
        else:
            info, state = _read_torch_file(path)
    except (SafetensorError, OSError) as error:
        raise StylizeError(f"{path} is not a readable model file ({error})") from None
    network = TransformerNet(info.config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = _mismatch(network, state, error)
        raise StylizeError(f"{path} does not hold a {info.config.norm}-norm network: {detail}") from None
    return StyleModel(info=info, network=network.to(target).eval())


def _mismatch(network: TransformerNet, state: dict[str, torch.Tensor], error: RuntimeError) -> str:
    expected, given = set(network.state_dict()), set(state)
    for label, keys in (("missing", sorted(expected - given)), ("unexpected", sorted(given - expected))):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            return f"{label} {keys[0]}{more}"
    lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
    return lines[0] if lines else type(error).__name__
