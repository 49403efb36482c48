"""The frozen VGG that the perceptual loss looks through.

Built from torchvision, truncated after the deepest layer the loss uses, with
ImageNet normalization inside so callers pass plain [0, 1] images. torchvision
is imported only when a loss network is built: it costs more than a second of
start-up, which commands that never build one should not pay.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylize.errors import InvalidSetting, StylizeError, check_choice
from stylize.fileio import load_torch_file

# name -> (torchvision layer config, batch norm, torchvision's ImageNet weights
# enum); only the feature stack is ever built: the classifier would be 120M
# unused parameters.
_ARCHITECTURES: dict[str, tuple[str, bool, str]] = {
    "vgg16": ("D", False, "VGG16_Weights"),
    "vgg19": ("E", False, "VGG19_Weights"),
    "vgg16_bn": ("D", True, "VGG16_BN_Weights"),
}

# Style at the last ReLU of blocks 1-4, as Johnson et al.; content one block
# deeper than theirs (relu2_2): shallow content features pin every pixel's
# tone, and a short training then satisfies the style with saturated blobs
# in bright areas instead of brushwork. The first style layer weighs a
# quarter: at full weight its Gram matrix (the palette) is cheapest matched by
# saturated blobs in flat areas, which painting a blob out shows (its relu1_2
# style loss rises by half). See README, "The training recipe".
DEFAULT_CONTENT_LAYER = "relu3_3"
DEFAULT_STYLE_LAYERS: dict[str, dict[str, float]] = {
    "vgg16": {"relu1_2": 0.25, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0},
    "vgg16_bn": {"relu1_2": 0.25, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0},
    "vgg19": {"relu1_2": 0.25, "relu2_2": 1.0, "relu3_4": 1.0, "relu4_4": 1.0},
}


def style_layer_weights(
    loss_network: str, layers: Sequence[str] = (), weights: Sequence[float] = ()
) -> dict[str, float]:
    """Each style layer's weight: ``layers`` with their ``weights`` (none given:
    every layer weighs 1), or without ``layers`` the loss network's defaults."""
    if not layers:
        return dict(DEFAULT_STYLE_LAYERS[check_loss_network(loss_network)])
    return dict(zip(layers, weights or [1.0] * len(layers), strict=True))


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def loss_network_names() -> list[str]:
    return sorted(_ARCHITECTURES)


def relu_indices(features: nn.Sequential) -> dict[str, int]:
    """Name every ReLU the way the papers do (relu{block}_{n}) -> its index."""
    names: dict[str, int] = {}
    block, relu = 1, 0
    for index, layer in enumerate(features):
        if isinstance(layer, nn.ReLU):
            relu += 1
            names[f"relu{block}_{relu}"] = index
        elif isinstance(layer, nn.MaxPool2d):
            block, relu = block + 1, 0
    return names


def check_loss_network(name: str) -> str:
    return check_choice("loss_network", name, loss_network_names())


def _imagenet_weights(name: str) -> Any:
    from torchvision import models

    return getattr(models, _ARCHITECTURES[check_loss_network(name)][2]).IMAGENET1K_V1


def imagenet_weights_cached(name: str) -> bool:
    """Whether torchvision already downloaded ``name``'s ImageNet weights, so
    building the loss network needs no network access."""
    url = _imagenet_weights(name).url
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file()


def announce_download(name: str, weights_file: Path | None, on_notice: Callable[[str], None] | None) -> None:
    """Tell ``on_notice`` when building the loss network ``name`` will download its weights."""
    if on_notice is not None and weights_file is None and not imagenet_weights_cached(name):
        on_notice(f"downloading torchvision's ImageNet {name} weights (about 530 MB, once)")


def _download_state_dict(name: str) -> dict[str, torch.Tensor]:
    try:
        return _imagenet_weights(name).get_state_dict(progress=False)  # the library never prints
    except OSError as error:  # URLError and socket errors are OSErrors
        raise InvalidSetting(
            "loss_network_weights",
            f"is needed offline: cannot download the ImageNet weights for {name} ({error}); "
            "give a torchvision-format VGG state dict file",
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a torchvision-format state dict without ever unpickling code."""
    if not path.is_file():
        raise StylizeError(f"loss network weights file not found: {path}")
    state = load_torch_file(path, "a PyTorch weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StylizeError(f"{path} does not hold a state dict of tensors")
    return state


class LossNetwork(nn.Module):
    """Frozen VGG features; ``forward`` returns the requested layers' activations.

    ``name``: ``vgg16``, ``vgg19`` or ``vgg16_bn``; ``layers``: names such as
    ``relu3_3``; ``weights_file``: a torchvision-format state dict, else the
    ImageNet weights, downloaded once. ``forward`` takes NCHW in [0, 1] (the
    ImageNet normalization is inside). Raises InvalidSetting for an unknown
    ``name`` or ImageNet weights that cannot be downloaded, and StylizeError for
    a layer the network lacks or a weights file missing, unreadable or unfit.
    """

    def __init__(self, name: str, layers: Sequence[str], weights_file: Path | None = None):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        config, batch_norm, _ = _ARCHITECTURES[check_loss_network(name)]
        features = make_layers(cfgs[config], batch_norm=batch_norm)
        indices = relu_indices(features)
        unknown = [layer for layer in layers if layer not in indices]
        if unknown:
            raise StylizeError(f"{name} has no layer {unknown[0]!r}; its layers are: {', '.join(indices)}")
        self.layers = {indices[layer]: layer for layer in layers}
        depth = max(self.layers) + 1
        self.features = features[:depth]

        if weights_file is None:
            state = _download_state_dict(name)
        else:
            state = read_state_dict(weights_file)
        self._load_features(state, depth, source=str(weights_file or name))

        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _load_features(self, state: dict[str, torch.Tensor], depth: int, source: str) -> None:
        wanted = {}
        for key, value in state.items():
            prefix, _, rest = key.partition(".")
            index, _, param = rest.partition(".")
            if prefix == "features" and index.isdigit() and int(index) < depth:
                wanted[f"{index}.{param}"] = value
        try:
            self.features.load_state_dict(wanted, strict=True)
        except RuntimeError as error:
            detail = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
            raise StylizeError(f"{source} does not fit this loss network: {detail}") from None

    def train(self, mode: bool = True) -> LossNetwork:
        # Always eval: a loss network's BatchNorm must keep its ImageNet statistics.
        return super().train(False)

    def forward(self, images: torch.Tensor, layers: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` (default: all this network was built for),
        computing no deeper than the deepest of them: the content target needs
        only a shallow layer, a third of the work of the whole stack."""
        wanted = self.layers if layers is None else {i: name for i, name in self.layers.items() if name in layers}
        depth = max(wanted, default=-1) + 1
        x = ((images - self.mean) / self.std).to(self.features[0].weight.dtype)
        activations = {}
        for index, layer in enumerate(self.features[:depth]):
            x = layer(x)
            if index in wanted:
                activations[wanted[index]] = x
        return activations
