from __future__ import annotations

import pytest
import torch
from torch import nn

from stylize import StylizeError, create_norm, norm_names, register_norm
from stylize.network import NORM_SITES, NetConfig, TransformerNet
from stylize.norms import _REGISTRY


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("size", [(33, 47), (16, 17), (5, 9), (1, 1), (64, 48)])
def test_output_has_the_input_size(norm: str, size: tuple[int, int]) -> None:
    network = TransformerNet(NetConfig(norm=norm)).eval()
    with torch.no_grad():
        output = network(torch.rand(2, 3, *size))
    assert output.shape == (2, 3, *size)
    assert torch.isfinite(output).all()


def test_architecture_matches_johnson_et_al() -> None:
    network = TransformerNet()
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in (convs[0], convs[-1])] == [9, 9]
    assert [c.stride[0] for c in convs[:3]] == [1, 2, 2]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in network.modules())
    assert len(network.res) == 5 and all(block.conv1.conv2d.in_channels == 128 for block in network.res)
    assert all(conv.padding == (0, 0) for conv in convs)  # all padding is reflection padding
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in network.modules()) == len(convs)


def _images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(4, 3, 24, 24) * torch.tensor([1.0, 0.3, 2.0, 0.7]).view(4, 1, 1, 1)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_instance_norm_output_does_not_depend_on_batch_neighbours(mode: str) -> None:
    network = TransformerNet(NetConfig(norm="instance")).train(mode == "train")
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
    with pytest.raises(StylizeError, match="unknown norm 'groupy'.*batch, instance"):
        create_norm("groupy", 8, "norm1")
    with pytest.raises(StylizeError, match="batch, instance"):
        NetConfig(norm="groupy")


def test_a_registered_norm_drops_in_without_touching_the_network() -> None:
    sites: list[tuple[int, str]] = []

    @register_norm("recording")
    def recording(channels: int, site: str) -> nn.Module:
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
