from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils._python_dispatch import TorchDispatchMode

from stylize import StylizeError, create_norm, norm_names, register_norm
from stylize.model.fastpath import optimize_for_inference
from stylize.model.network import (
    NORM_SITES,
    NORMALIZED_CONVS,
    BlurredConv,
    NetConfig,
    ReflectConv,
    TransformerNet,
)
from stylize.model.norms import _REGISTRY, IBN_INSTANCE_SITES, BatchInstanceNorm2d, NormOptions, WeightNorm

from .helpers import ALL_NORMS, photo_tensor


def test_every_norm_is_registered_instance_and_batch_first() -> None:
    assert norm_names() == ALL_NORMS


@pytest.mark.parametrize("norm", ALL_NORMS)
@pytest.mark.parametrize("size", [(33, 47), (16, 17), (5, 9), (1, 1), (64, 48)])
def test_output_has_the_input_size(norm: str, size: tuple[int, int]) -> None:
    network = TransformerNet(NetConfig(norm=norm)).eval()
    with torch.no_grad():
        output = network(torch.rand(2, 3, *size))
    assert output.shape == (2, 3, *size)
    assert torch.isfinite(output).all()


def test_bounded_output_stays_in_range_and_legacy_configs_are_unbounded() -> None:
    torch.manual_seed(0)
    bounded = TransformerNet(NetConfig()).eval()
    raw = TransformerNet(NetConfig(bounded_output=False)).eval()
    raw.load_state_dict(bounded.state_dict())
    with torch.no_grad():
        bounded.conv_out.conv2d.bias.fill_(40.0)  # drive the last layer far out of range
        raw.conv_out.conv2d.bias.fill_(40.0)
        images = torch.rand(1, 3, 32, 32)
        assert bounded(images).max() <= 1.1 and raw(images).min() > 30
        bounded.conv_out.conv2d.bias.zero_()
        raw.conv_out.conv2d.bias.zero_()
        torch.testing.assert_close(bounded(images), 0.5 + 0.6 * torch.tanh(raw(images)))
    # A stored config from before the setting existed rebuilds the unbounded network it was.
    legacy = NetConfig(norm="batch", bounded_output=False, resampling="nearest")
    assert NetConfig.from_dict({"norm": "batch"}) == legacy
    assert NetConfig.from_dict(NetConfig().to_dict()) == NetConfig()


@pytest.mark.parametrize("resampling", ["nearest", "antialiased"])
def test_architecture_matches_johnson_et_al(resampling: str) -> None:
    network = TransformerNet(NetConfig(resampling=resampling))
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in (convs[0], convs[-1])] == [9, 9]
    assert [c.stride[0] for c in convs[:3]] == [1, 2, 2]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in network.modules())
    assert len(network.res) == 5 and all(block.conv1.conv2d.in_channels == 128 for block in network.res)
    assert all(conv.padding == (0, 0) for conv in convs)  # all padding is reflection padding
    # Reflection padding everywhere (the blurred kernels are two taps wider); the
    # upsampling layers pad their small map by replication, which equals it for nearest.
    reflect = [m for m in network.modules() if isinstance(m, ReflectConv)]
    assert len(reflect) == len(convs) - 2 and all(m.padding == m.kernel().shape[-1] // 2 for m in reflect)
    blurred = [m.conv2d.stride[0] == 2 for m in reflect if isinstance(m, BlurredConv)]
    assert blurred == ([True, True] if resampling == "antialiased" else [])


def _images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(4, 3, 24, 24) * torch.tensor([1.0, 0.3, 2.0, 0.7]).view(4, 1, 1, 1)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("norm", ["instance", "weight", "layer", "group", "none"])
def test_per_image_norms_output_does_not_depend_on_batch_neighbours(norm: str, mode: str) -> None:
    network = TransformerNet(NetConfig(norm=norm)).train(mode == "train")
    images = _images()
    with torch.no_grad():
        alone = network(images[:1])
        in_batch = network(images)[:1]
        other_batch = network(torch.cat([images[:1], images[2:]]))[:1]
    torch.testing.assert_close(alone, in_batch, rtol=0, atol=1e-5)
    torch.testing.assert_close(alone, other_batch, rtol=0, atol=1e-5)


def test_batch_norm_output_depends_on_batch_neighbours_in_train_mode() -> None:
    network = TransformerNet(NetConfig(norm="batch")).train()
    images = _images()
    with torch.no_grad():
        with_bright = network(images[:2])[:1]
        with_dark = network(torch.cat([images[:1], images[3:]]))[:1]
    assert (with_bright - with_dark).abs().mean() > 1e-3
    network.eval()  # eval uses running statistics: neighbours no longer matter
    with torch.no_grad():
        torch.testing.assert_close(network(images[:2])[:1], network(images[[0, 3]])[:1], rtol=0, atol=1e-5)


def test_instance_norm_keeps_no_running_statistics() -> None:
    network = TransformerNet(NetConfig(norm="instance"))
    assert not any("running" in key for key in network.state_dict())
    assert any("running_mean" in key for key in TransformerNet(NetConfig(norm="batch")).state_dict())


def test_unknown_norm_lists_the_valid_ones() -> None:
    with pytest.raises(StylizeError, match="norm must be one of: instance, batch, layer, group"):
        create_norm("groupy", 8, "norm1")
    with pytest.raises(StylizeError, match="instance, batch, layer, group, none, weight, ibn, batch-instance"):
        NetConfig(norm="groupy")


def test_a_registered_norm_drops_in_without_touching_the_network() -> None:
    sites: list[tuple[int, str]] = []

    @register_norm("recording")
    def recording(channels: int, site: str, options: NormOptions) -> nn.Module:
        sites.append((channels, site))
        return nn.Identity()

    try:
        assert "recording" in norm_names()
        network = TransformerNet(NetConfig(norm="recording"))
        assert [site for _, site in sites] == list(NORM_SITES)
        assert sites[0] == (32, "norm1") and sites[-1] == (32, "norm5")
        names = {name for name, _ in network.named_modules()}
        assert set(NORM_SITES) <= names  # sites are the layers' module paths
        assert network(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)
    finally:
        del _REGISTRY["recording"]


def _norm_layers(network: TransformerNet) -> dict[str, nn.Module]:
    modules = dict(network.named_modules())
    return {site: modules[site] for site in NORM_SITES}


def test_ibn_uses_instance_norm_in_the_encoder_and_batch_norm_deeper() -> None:
    layers = _norm_layers(TransformerNet(NetConfig(norm="ibn")))
    assert IBN_INSTANCE_SITES == {"norm1", "norm2", "norm3"}
    for site, layer in layers.items():
        expected = nn.InstanceNorm2d if site in IBN_INSTANCE_SITES else nn.BatchNorm2d
        assert type(layer) is expected, site
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in layers.values()) == 12


def test_ibn_shallow_layers_ignore_batch_neighbours_deep_ones_do_not() -> None:
    network = TransformerNet(NetConfig(norm="ibn")).train()
    images = _images()
    with torch.no_grad():
        encoded = [
            network.norm3(network.conv3(network.norm2(network.conv2(network.norm1(network.conv1(x))))))
            for x in (images[:2], images[[0, 3]])
        ]
        torch.testing.assert_close(encoded[0][:1], encoded[1][:1], rtol=0, atol=1e-5)
        outputs = network(images[:2])[:1], network(images[[0, 3]])[:1]
    assert (outputs[0] - outputs[1]).abs().mean() > 1e-3


@pytest.mark.parametrize(("norm", "layer_type", "groups"), [("layer", nn.GroupNorm, 1), ("group", nn.GroupNorm, 4)])
def test_layer_and_group_norms_normalize_groups_of_channels(norm: str, layer_type: type, groups: int) -> None:
    layers = _norm_layers(TransformerNet(NetConfig(norm=norm, groups=4)))
    assert all(type(layer) is layer_type and layer.num_groups == groups for layer in layers.values())


def test_group_count_must_divide_every_layer() -> None:
    assert TransformerNet(NetConfig(norm="group")).norm1.num_groups == 8  # default
    with pytest.raises(StylizeError, match="groups must divide 32.*1, 2, 4, 8, 16, 32"):
        NetConfig(norm="group", groups=3)


def test_none_norm_has_no_norm_layers() -> None:
    network = TransformerNet(NetConfig(norm="none"))
    assert all(isinstance(layer, nn.Identity) for layer in _norm_layers(network).values())


def test_batch_instance_gate_is_learnable_and_bounded() -> None:
    layer = BatchInstanceNorm2d(8)
    assert torch.equal(layer.gate, torch.full((8,), 0.5))
    x = torch.randn(4, 8, 6, 6) * 3 + 1
    target = torch.randn(4, 8, 6, 6)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1e4)  # a huge step to push the gate to its bounds
    ((layer(x) - target) ** 2).mean().backward()
    assert layer.gate_logit.grad is not None and layer.gate_logit.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(layer.gate, torch.full((8,), 0.5))
    assert ((layer.gate >= 0) & (layer.gate <= 1)).all()


@pytest.mark.parametrize(("logit", "expected"), [(40.0, "batch"), (-40.0, "instance")])
def test_batch_instance_gate_ends_are_batch_and_instance_norm(logit: float, expected: str) -> None:
    layer = BatchInstanceNorm2d(8).train()
    with torch.no_grad():
        layer.gate_logit.fill_(logit)
        layer.weight.uniform_(0.5, 2)
        layer.bias.uniform_(-1, 1)
    reference = nn.BatchNorm2d(8) if expected == "batch" else nn.InstanceNorm2d(8, affine=True)
    reference.load_state_dict({"weight": layer.weight, "bias": layer.bias}, strict=False)
    x = torch.randn(4, 8, 6, 6) * 2 + 0.5
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference.train()(x), rtol=1e-5, atol=1e-5)


def test_weight_norm_reparametrizes_every_normalized_convolution_and_nothing_else() -> None:
    torch.manual_seed(3)
    network = TransformerNet(NetConfig(norm="weight"))
    torch.manual_seed(3)
    plain = TransformerNet(NetConfig(norm="none"))
    normalized = {path for path, module in network.named_modules() if parametrize.is_parametrized(module, "weight")}
    assert normalized == {f"{conv}.conv2d" for conv in NORMALIZED_CONVS.values()}
    assert all(type(network.get_submodule(site)) is WeightNorm for site in NORM_SITES)
    assert not any("running" in key for key in network.state_dict())
    for conv_path in NORMALIZED_CONVS.values():
        conv = network.get_submodule(conv_path).conv2d
        direction, length = conv.parametrizations.weight.original1, conv.parametrizations.weight.original0
        assert length.shape == (conv.out_channels, 1, 1, 1)  # one learned length per output filter
        # It starts as the plain network: g = ||v||, so the weights are the same.
        torch.testing.assert_close(length.flatten(), direction.flatten(1).norm(dim=1))
        torch.testing.assert_close(conv.weight, plain.get_submodule(conv_path).conv2d.weight)
        with torch.no_grad():
            length.mul_(2)  # the length is the filter's norm, whatever the direction's
        torch.testing.assert_close(conv.weight.flatten(1).norm(dim=1), length.flatten())
    images = _images()
    with torch.no_grad():  # no statistics of any kind: training and evaluation compute one function
        torch.testing.assert_close(network.train()(images), network.eval()(images), rtol=0, atol=0)


def test_weight_norm_learns_length_and_direction() -> None:
    network = TransformerNet(NetConfig(norm="weight"))
    network(_images()).square().mean().backward()
    weight = network.conv2.conv2d.parametrizations.weight
    assert weight.original0.grad.abs().sum() > 0 and weight.original1.grad.abs().sum() > 0


class _PadInputs(TorchDispatchMode):
    """Records the dtype every padding op of a forward pass receives."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func.overloadpacket in (torch.ops.aten.reflection_pad2d, torch.ops.aten.replication_pad2d):
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("form", ["training", "inference"])
def test_padding_stays_bf16_under_autocast(form: str) -> None:
    """CPU autocast would pad in float32: two casts of every feature map per layer."""
    network = TransformerNet(NetConfig())
    if form == "inference":
        network = optimize_for_inference(network.eval())
    with torch.autocast("cpu", dtype=torch.bfloat16), _PadInputs() as pads:
        network(torch.rand(1, 3, 24, 24))
    # The photo itself is float32; every feature map after the first convolution is bf16.
    assert pads.dtypes[0] == torch.float32
    assert len(pads.dtypes) == 16 and set(pads.dtypes[1:]) == {torch.bfloat16}


def _shift_error(network: TransformerNet, image: torch.Tensor, shift: int) -> float:
    """How far the output of an image moved ``shift`` px left is from the output
    moved alike, away from the borders, relative to the output's own spread."""
    width = image.shape[-1] - 4
    with torch.no_grad():
        still = network(image[..., :width])
        moved = network(image[..., shift : width + shift])
    inner = (..., slice(16, -16))
    difference = still[(*inner, slice(16 + shift, -16))] - moved[(*inner, slice(16, -16 - shift))]
    return (difference.abs().mean() / (still - still.mean()).abs().mean()).item()


def test_antialiased_resampling_follows_a_one_pixel_shift_where_nearest_does_not() -> None:
    """The weave on flat areas is detail locked to the 4-pixel grid of two
    stride-2 layers; blurring before them and upsampling bilinearly unlocks it."""
    nearest = TransformerNet(NetConfig(resampling="nearest")).eval()
    antialiased = TransformerNet(NetConfig(resampling="antialiased")).eval()
    for seed in range(2):
        torch.manual_seed(seed)
        nearest.load_state_dict(TransformerNet(NetConfig(resampling="nearest")).state_dict())
        antialiased.load_state_dict(nearest.state_dict())  # the same weights, other resampling
        image = photo_tensor(80, 80, seed=seed)
        for shift in (1, 2):
            assert _shift_error(antialiased, image, shift) < 0.5 * _shift_error(nearest, image, shift)


def test_unknown_resampling_lists_the_valid_ones() -> None:
    with pytest.raises(StylizeError, match="resampling must be one of: nearest, antialiased; not 'bicubic'"):
        NetConfig(resampling="bicubic")
