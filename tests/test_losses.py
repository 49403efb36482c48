from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torchvision.models.vgg import cfgs, make_layers

from stylize import StylizeError
from stylize.training.losses import (
    LossTerms,
    LossWeights,
    content_loss,
    gram_matrix,
    mean_terms,
    perceptual_loss,
    shift_equivariance,
    shift_image,
    style_loss,
    style_targets,
    total_variation,
)
from stylize.training.vgg import LossNetwork, relu_indices

SHARED_VGG = Path(__file__).resolve().parents[2] / "shared" / "weights" / "vgg16_bn_features.pth"


def test_gram_matrix_by_hand() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / (2 * 1 * 2)
    torch.testing.assert_close(gram_matrix(features), expected.view(1, 2, 2))


def test_gram_matrix_is_per_image_and_float32_under_bf16() -> None:
    features = torch.randn(3, 4, 5, 6, dtype=torch.bfloat16)
    grams = gram_matrix(features)
    assert grams.shape == (3, 4, 4) and grams.dtype == torch.float32
    torch.testing.assert_close(grams[1], gram_matrix(features[1:2])[0])


def test_gram_matrix_stays_float32_under_bf16_autocast() -> None:
    features = torch.randn(2, 8, 12, 10).relu().to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grams = gram_matrix(features)
    assert grams.dtype == torch.float32  # autocast would round every entry to bf16
    torch.testing.assert_close(grams, gram_matrix(features.float()), rtol=1e-6, atol=1e-7)


def test_gram_matrix_gradient() -> None:
    features = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram_matrix, (features,))


def test_gram_matrix_gradient_under_bf16_is_the_float32_one_rounded() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 16, 32, 32).relu()
    target = gram_matrix(features[:1]).detach() * 1.2
    exact = features.clone().requires_grad_()
    (gram_matrix(exact) - target).square().sum().backward()
    rounded = features.to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (gram_matrix(rounded) - target).square().sum().backward()
    assert rounded.grad.dtype == torch.bfloat16  # what the convolution behind it takes
    relative = (rounded.grad.float() - exact.grad).norm() / exact.grad.norm()
    assert relative < 0.01


def test_shift_image_moves_the_picture_down_and_right_and_reflects_into_the_gap() -> None:
    images = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).view(2, 3, 6, 7)
    moved = shift_image(images, (2, 1))
    assert moved.shape == images.shape
    torch.testing.assert_close(moved[..., 2:, 1:], images[..., :-2, :-1])
    torch.testing.assert_close(moved[..., 0, 1:], images[..., 2, :-1])  # the row reflected about the new top row
    torch.testing.assert_close(moved[..., 2:, 0], images[..., :-2, 1])


def _lattice_network(images: torch.Tensor) -> torch.Tensor:
    """Downsample by 4 and back: each output pixel shows its place in the 4x4 grid."""
    return torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(images, 4), scale_factor=4.0)


def test_shift_equivariance_is_zero_for_a_network_that_commutes_with_shifts_and_not_for_a_stride_4_one() -> None:
    photos = torch.rand(2, 3, 40, 44)
    for shift in ((1, 0), (0, 3), (2, 2)):
        smooth = torch.nn.functional.conv2d(photos, torch.full((3, 3, 3, 3), 1 / 27), padding=1)
        moved_smooth = torch.nn.functional.conv2d(
            shift_image(photos, shift), torch.full((3, 3, 3, 3), 1 / 27), padding=1
        )
        assert shift_equivariance(smooth, moved_smooth, shift).item() < 1e-12
        lattice = shift_equivariance(_lattice_network(photos), _lattice_network(shift_image(photos, shift)), shift)
        assert lattice.item() > 1e-3
    # A shift by the stride is exact for the stride-4 network too.
    photos = torch.rand(1, 3, 40, 40)
    moved = torch.cat([photos[..., :4, :], photos[..., :-4, :]], dim=-2)
    assert shift_equivariance(_lattice_network(photos), _lattice_network(moved), (4, 0)).item() < 1e-12


def test_shift_equivariance_by_hand_and_refuses_an_output_with_no_interior() -> None:
    output, moved = torch.zeros(1, 1, 20, 20), torch.zeros(1, 1, 20, 20)
    moved[..., 10, 10] = 0.5  # inside the compared rows 3-19, columns 2-19 of the moved output
    assert shift_equivariance(output, moved, (3, 2), margin=0).item() == pytest.approx(0.25 / (17 * 18))
    assert shift_equivariance(output, moved, (3, 2), margin=8).item() == 0.0  # row 11, columns 10-11 only
    with pytest.raises(ValueError, match="no pixels 8 px inside"):
        shift_equivariance(torch.zeros(1, 3, 18, 40), torch.zeros(1, 3, 18, 40), (3, 0))


def test_content_and_tv_losses_by_hand() -> None:
    a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[1.0, 3.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    # MSE (1 + 9) / 4 relative to the photo's mean square (1 + 9) / 4
    assert content_loss(a, b).item() == pytest.approx(1.0)
    assert content_loss(b / 2, b).item() == pytest.approx(0.25)
    # horizontal |3-1|, |0-0| -> mean 1; vertical |0-1|, |0-3| -> mean 2
    assert total_variation(b).item() == pytest.approx(3.0)


def test_style_loss_sums_relative_layer_errors_and_broadcasts_targets() -> None:
    out = {"a": torch.ones(2, 1, 1, 2), "b": torch.zeros(2, 1, 1, 1)}
    targets = {"a": torch.full((1, 1, 1), 0.5), "b": torch.full((1, 1, 1), 2.0)}
    # gram of ones (C=1, HW=2) = 1 -> (1 - 0.5)^2 / 0.5^2 = 1; gram of zeros -> 4 / 4 = 1
    assert style_loss(out, targets).item() == pytest.approx(2.0)


def test_style_layer_weights_scale_each_layer() -> None:
    out = {"a": torch.ones(2, 1, 1, 2), "b": torch.zeros(2, 1, 1, 1)}
    targets = {"a": torch.full((1, 1, 1), 0.5), "b": torch.full((1, 1, 1), 2.0)}
    assert style_loss(out, targets, {"a": 3.0, "b": 0.5}).item() == pytest.approx(3.5)
    assert style_loss(out, targets, {"a": 0.0}).item() == pytest.approx(1.0)  # b unlisted: weight 1


def test_loss_weights_mean_the_same_at_any_activation_scale() -> None:
    """A VGG whose activations are 1000x louder gives the same losses."""
    torch.manual_seed(0)
    out = {"s": torch.rand(2, 4, 4, 4), "c": torch.rand(2, 4, 4, 4)}
    photo = {"c": torch.rand(2, 4, 4, 4)}
    style = {"s": torch.rand(1, 4, 4, 4)}

    def losses(scale: float) -> tuple[float, float]:
        louder = {key: value * scale for key, value in out.items()}
        targets = style_targets({"s": style["s"] * scale}, ["s"])
        return content_loss(louder["c"], photo["c"] * scale).item(), style_loss(louder, targets).item()

    assert losses(1000.0) == pytest.approx(losses(1.0), rel=1e-4)


def test_perceptual_loss_applies_weights_and_leaves_inputs_alone() -> None:
    torch.manual_seed(0)
    output = torch.rand(2, 3, 8, 8)
    out_features = {"c": torch.rand(2, 4, 4, 4), "s": torch.rand(2, 4, 4, 4)}
    in_features = {"c": torch.rand(2, 4, 4, 4)}
    targets = style_targets({"s": torch.rand(1, 4, 4, 4)}, ["s"])
    copies = [t.clone() for t in (output, out_features["c"], out_features["s"], in_features["c"])]
    weights = LossWeights(content=2.0, style=10.0, tv=0.5)
    terms = perceptual_loss(output, out_features, in_features, targets, "c", weights)
    assert terms.content.item() == pytest.approx(2.0 * content_loss(out_features["c"], in_features["c"]).item())
    assert terms.style.item() == pytest.approx(10.0 * style_loss(out_features, targets).item())
    assert terms.tv.item() == pytest.approx(0.5 * total_variation(output).item())
    assert terms.total.item() == pytest.approx((terms.content + terms.style + terms.tv).item())
    stacked = terms.stacked()
    assert stacked[3].item() == 0.0 and stacked[4].item() == pytest.approx(terms.total.item())
    with_shift = dataclasses.replace(terms, shift=torch.tensor(0.25))
    assert with_shift.total.item() == pytest.approx(terms.total.item() + 0.25)
    assert with_shift.stacked()[3].item() == 0.25
    for before, after in zip(copies, (output, out_features["c"], out_features["s"], in_features["c"]), strict=True):
        assert torch.equal(before, after)


def test_mean_terms_averages_each_term_over_loss_networks() -> None:
    def terms(content: float, style: float, shift: float | None = None) -> LossTerms:
        moved = None if shift is None else torch.tensor(shift)
        return LossTerms(torch.tensor(content), torch.tensor(style), torch.tensor(0.5), moved)

    mean = mean_terms([terms(1.0, 10.0), terms(3.0, 30.0)])
    assert (mean.content.item(), mean.style.item(), mean.tv.item(), mean.shift) == (2.0, 20.0, 0.5, None)
    assert mean_terms([terms(1.0, 2.0, 0.25), terms(3.0, 4.0, 0.75)]).shift.item() == 0.5
    single = terms(1.0, 2.0)
    assert mean_terms([single]) is single
    with pytest.raises(ValueError):
        mean_terms([])


def test_relu_names_follow_the_papers() -> None:
    vgg16 = relu_indices(make_layers(cfgs["D"]))
    assert (vgg16["relu1_2"], vgg16["relu2_2"], vgg16["relu4_3"]) == (3, 8, 22)
    assert relu_indices(make_layers(cfgs["D"], batch_norm=True))["relu4_3"] == 32
    assert relu_indices(make_layers(cfgs["E"]))["relu4_4"] == 26


def test_loss_network_loads_a_file_truncates_and_freezes(vgg_weights: Path) -> None:
    network = LossNetwork("vgg16", ["relu1_2", "relu2_2"], vgg_weights)
    assert len(network.features) == 9
    assert not any(p.requires_grad for p in network.parameters())
    state = torch.load(vgg_weights, weights_only=True)
    torch.testing.assert_close(network.features[0].weight, state["features.0.weight"])
    images = torch.rand(2, 3, 16, 16)
    features = network(images)
    assert set(features) == {"relu1_2", "relu2_2"} and features["relu2_2"].shape == (2, 128, 8, 8)
    # ImageNet normalization happens inside: feeding normalized pixels to the raw layers agrees.
    normalized = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(features["relu1_2"], network.features[:4](normalized))
    assert network.train().training is False


def test_loss_network_stops_at_the_deepest_layer_asked_for(vgg_weights: Path) -> None:
    network = LossNetwork("vgg16", ["relu1_2", "relu2_2"], vgg_weights)
    images = torch.rand(1, 3, 16, 16)
    calls: list[int] = []
    hooks = [layer.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, layer in enumerate(network.features)]
    shallow = network(images, layers=("relu1_2",))
    assert set(shallow) == {"relu1_2"} and max(calls) == 3
    calls.clear()
    torch.testing.assert_close(shallow["relu1_2"], network(images)["relu1_2"])
    assert max(calls) == 8
    for hook in hooks:
        hook.remove()


def test_loss_network_in_bf16_takes_fp32_images(vgg_weights: Path) -> None:
    network = LossNetwork("vgg16", ["relu2_2"], vgg_weights)
    images = torch.rand(1, 3, 16, 16)
    expected = network(images)["relu2_2"]
    network.features.to(torch.bfloat16)
    features = network(images)["relu2_2"]
    assert features.dtype == torch.bfloat16 and expected.dtype == torch.float32
    assert content_loss(features, expected).item() < 1e-3  # bf16 rounding only


def test_loss_network_says_which_weights_are_missing(vgg_weights: Path) -> None:
    with pytest.raises(StylizeError, match="does not fit this loss network.*features|Missing"):
        LossNetwork("vgg16", ["relu3_3"], vgg_weights)
    with pytest.raises(StylizeError, match="has no layer 'relu9_9'"):
        LossNetwork("vgg16", ["relu9_9"], vgg_weights)
    with pytest.raises(StylizeError, match="loss_network must be one of: vgg16.*; not 'alexnet'"):
        LossNetwork("alexnet", ["relu1_2"], vgg_weights)


def test_failed_download_says_to_pass_loss_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self: object, progress: bool = True, **kwargs: object) -> None:
        raise URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models.VGG16_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(StylizeError, match="loss_network_weights is needed offline") as raised:
        LossNetwork("vgg16", ["relu2_2"])
    assert "\n" not in str(raised.value)


@pytest.mark.skipif(not SHARED_VGG.exists(), reason="needs ../shared/weights (optional)")
def test_loads_the_shared_vgg16_bn_stand_in() -> None:
    network = LossNetwork("vgg16_bn", ["relu2_2", "relu4_3"], SHARED_VGG)
    assert len(network.features) == 33
    assert network(torch.rand(1, 3, 32, 32))["relu4_3"].shape == (1, 512, 4, 4)
