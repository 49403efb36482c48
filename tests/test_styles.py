"""Multi-style networks: conditional norms, training several styles, choosing and mixing them."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import stylize.training.loop as training
from stylize import StylizeError, TrainConfig, load_model, save_model
from stylize.model.blend import check_blendable, load_blended
from stylize.model.files import ModelInfo
from stylize.model.network import NetConfig, TransformerNet
from stylize.model.norms import ConditionalBatchNorm2d, ConditionalInstanceNorm2d
from stylize.model.styles import choose_styles, plain_network, set_style_mix, style_weights
from stylize.report.compare import BLEND_STRIP, CompareSettings, compare
from stylize.training.config import plan_norm_runs

from .helpers import assert_same_weights, minimal_record, photo_tensor, train_args, write_model

CONDITIONAL = ["conditional-instance", "conditional-batch"]
STYLES = ("waves", "dots", "stripes")


@pytest.fixture(scope="module")
def dots_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("style") / "dots.png"
    rows, cols = np.mgrid[0:48, 0:48]
    dots = ((rows % 8 < 3) & (cols % 8 < 3))[..., None] * np.array([200, 40, 30])
    Image.fromarray((dots + 20).astype(np.uint8)).save(path)
    return path


def multi_network(norm: str, styles: int = 3, seed: int = 0) -> TransformerNet:
    """A conditional network whose styles differ (random γ and β per style), in eval mode."""
    torch.manual_seed(seed)
    network = TransformerNet(NetConfig(norm=norm, styles=styles))
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if ".styles." in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
        network.train()(photo_tensor(32, 32, seed).repeat(4, 1, 1, 1))
    return network.eval()


def write_multi(path: Path, norm: str = "conditional-instance") -> Path:
    network = multi_network(norm)
    thumbnails = [f"thumb-{name}" for name in STYLES]
    save_model(path, network, "waves+2", {**minimal_record(path)}, styles=STYLES, style_thumbnails=thumbnails)
    return path


def test_one_style_of_conditional_instance_norm_is_instance_norm_with_its_scale_and_shift() -> None:
    layer = ConditionalInstanceNorm2d(8, styles=3)
    with torch.no_grad():
        layer.styles.weight.normal_()
        layer.styles.bias.normal_()
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    layer.styles.mix.copy_(F.one_hot(torch.tensor(2), 3).float())
    expected = F.instance_norm(x, weight=layer.styles.weight[2], bias=layer.styles.bias[2])
    torch.testing.assert_close(layer(x), expected)
    # Each image is normalized by its own statistics: the other image does not matter.
    torch.testing.assert_close(layer(x[:1]), expected[:1])


def test_conditional_batch_norm_shares_its_statistics_across_styles() -> None:
    layer = ConditionalBatchNorm2d(4, styles=2)
    x = torch.randn(6, 4, 3, 3) + 2
    for style in (0, 1, 0):
        layer.styles.mix.copy_(F.one_hot(torch.tensor(style), 2).float())
        layer(x)
    assert int(layer.num_batches_tracked) == 3  # one set of running statistics for both styles
    assert "styles.weight" in dict(layer.named_parameters()) and layer.weight is None


@pytest.mark.parametrize("norm", CONDITIONAL)
def test_a_mix_is_the_plain_network_with_mixed_scale_and_shift(norm: str) -> None:
    network = multi_network(norm)
    photo = photo_tensor(40, 36, seed=3)
    weights = torch.tensor([0.2, 0.5, 0.3])
    set_style_mix(network, weights)
    plain = plain_network(network, weights)
    assert plain.config.norm == norm.removeprefix("conditional-") and plain.config.styles == 1
    with torch.no_grad():
        torch.testing.assert_close(plain(photo), network(photo), rtol=0, atol=1e-4)
        # Convex in γ and β: the mix's scale is the weighted sum of the styles' scales.
        rows = network.norm1.styles.weight
        torch.testing.assert_close(plain.norm1.weight, weights @ rows)


@pytest.mark.parametrize("norm", CONDITIONAL)
def test_the_styles_of_one_network_paint_differently(norm: str) -> None:
    network = multi_network(norm)
    photo = photo_tensor(32, 32, seed=1)
    with torch.no_grad():
        outputs = [plain_network(network, F.one_hot(torch.tensor(i), 3).float())(photo) for i in range(3)]
    assert (outputs[0] - outputs[1]).abs().mean() > 0.01 and (outputs[1] - outputs[2]).abs().mean() > 0.01


def test_style_weights_are_normalised_and_unknown_names_list_the_styles() -> None:
    torch.testing.assert_close(style_weights(STYLES, {"dots": 3, "waves": 1}), torch.tensor([0.25, 0.75, 0.0]))
    with pytest.raises(StylizeError, match="no style 'candy' in this model; its styles: waves, dots, stripes"):
        style_weights(STYLES, {"candy": 1})
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(StylizeError, match="must be finite and not negative"):
            style_weights(STYLES, {"dots": bad, "waves": 2})
    with pytest.raises(StylizeError, match="sum to 0"):
        style_weights(STYLES, {"dots": 0})


def test_several_styles_need_a_conditional_norm(tmp_path: Path) -> None:
    with pytest.raises(StylizeError, match="instance holds one style; several need conditional-instance or"):
        NetConfig(norm="instance", styles=2)
    with pytest.raises(StylizeError, match="batch holds one style"):
        TrainConfig(Path("a.jpg"), tmp_path, tmp_path, norm="batch", more_style_images=(Path("b.jpg"),))
    assert NetConfig(norm="conditional-instance", styles=4).styles == 4
    with pytest.raises(StylizeError, match="need different names .* two are 'a'"):
        TrainConfig(
            Path("x/a.jpg"), tmp_path, tmp_path, norm="conditional-instance", more_style_images=(Path("a.png"),)
        )


def test_a_multi_style_file_lists_its_styles_and_thumbnails(tmp_path: Path) -> None:
    info = load_model(write_multi(tmp_path / "multi.safetensors")).info
    assert info.styles == STYLES and info.style_thumbnails == tuple(f"thumb-{name}" for name in STYLES)
    assert info.config.styles == 3
    with pytest.raises(ValueError, match="2 style names for a network of 3 styles"):
        save_model(tmp_path / "bad.safetensors", multi_network("conditional-instance"), "x", {}, styles=STYLES[:2])
    for styles, thumbnails, problem in [
        (STYLES, ("one",), "1 style thumbnails for 3 style names"),
        (("a", "b", "a"), (), "two styles share a name"),
    ]:
        bad = tmp_path / "bad.safetensors"
        save_model(bad, multi_network("conditional-instance"), "x", {}, styles=styles, style_thumbnails=thumbnails)
        with pytest.raises(StylizeError, match=f"{bad} has broken metadata \\({problem}\\)"):
            load_model(bad)


def test_multi_style_models_blend_only_with_the_same_styles_in_the_same_order(tmp_path: Path) -> None:
    first = load_model(write_multi(tmp_path / "first.safetensors")).info
    other = tmp_path / "other.safetensors"
    save_model(other, multi_network("conditional-instance"), "x", minimal_record(other), styles=STYLES[::-1])
    with pytest.raises(StylizeError, match="first and other cannot be blended: they hold other styles"):
        check_blendable(first, load_model(other).info)


def test_choosing_a_style_names_the_output_and_keeps_its_thumbnail(tmp_path: Path) -> None:
    loaded = load_model(write_multi(tmp_path / "multi.safetensors"))
    first = choose_styles(loaded)
    assert (
        first.info.name == "multi-waves" and first.info.style == "waves" and first.info.style_thumbnail == "thumb-waves"
    )
    mixed = choose_styles(loaded, {"dots": 0.7, "stripes": 0.3})
    assert mixed.info.name == "multi-dots70+stripes30" and mixed.info.style == "dots 70% + stripes 30%"
    assert mixed.network.config.norm == "instance"
    # A mix of 1:0 is the single style.
    alone, one_zero = choose_styles(loaded, {"dots": 1}), choose_styles(loaded, {"dots": 1, "waves": 0})
    assert_equal_networks(alone.network, one_zero.network)
    with pytest.raises(StylizeError, match="holds one style; a style mix needs a multi-style model"):
        load_blended(write_model(tmp_path / "single.safetensors"), None, style_mix={"dots": 1})


def assert_equal_networks(first: torch.nn.Module, second: torch.nn.Module) -> None:
    theirs = second.state_dict()
    for key, value in first.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_the_steps_style_order_takes_each_style_once_a_round_fixed_by_seed() -> None:
    order = [training._style_index(42, step, 3) for step in range(30)]
    assert all(sorted(order[i : i + 3]) == [0, 1, 2] for i in range(0, 30, 3))
    assert order != [0, 1, 2] * 10  # shuffled, not cyclic
    assert order == [training._style_index(42, step, 3) for step in range(30)]
    assert training._style_index(42, 7, 1) == 0


@pytest.mark.parametrize("norm", CONDITIONAL)
def test_one_run_trains_every_style_and_writes_them_all(
    cli, tmp_path: Path, style_image: Path, dots_image: Path, photos: Path, vgg_weights: Path, norm: str
) -> None:
    out = tmp_path / "multi.safetensors"
    args = train_args(style_image, photos, out, vgg_weights, "--norm", norm, "--warmup-steps", "0", "--lr", "0.01")
    args.insert(2, str(dots_image))  # a second style after the first
    result = cli(*args)
    assert result.code == 0, result.err
    model = load_model(out)
    assert model.info.styles == ("swirls", "dots") and model.info.name == "multi"
    assert all(model.info.style_thumbnails) and model.info.training["more_style_images"] == [str(dots_image)]
    rows = model.network.norm1.styles.weight  # every style's scale trained, each its own way
    assert (rows - 1).abs().amin(dim=1).min() > 0 and not torch.equal(rows[0], rows[1])

    # compare: a column per style, each measured against its own style image.
    comparison = compare([style_image], [out], CompareSettings(size=32, device="cpu"))
    assert [report.info.name for report in comparison.reports] == ["multi-swirls", "multi-dots"]
    assert all(report.losses.source.endswith(", style image") for report in comparison.reports)
    assert comparison.reports[0].losses.style != comparison.reports[1].losses.style


def test_a_resumed_multi_style_run_ends_with_the_same_weights_bit_for_bit(
    cli, tmp_path: Path, style_image: Path, dots_image: Path, photos: Path, vgg_weights: Path
) -> None:
    def run(out: Path, *extra: str) -> None:
        args = train_args(style_image, photos, out, vgg_weights, "--norm", "conditional-instance", *extra)
        args.insert(2, str(dots_image))
        assert cli(*args).code == 0

    run(tmp_path / "straight.safetensors")
    run(tmp_path / "resumed.safetensors", "--steps", "1", "--checkpoint-every", "1")
    run(tmp_path / "resumed.safetensors", "--resume", str(tmp_path / "resumed.ckpt"))
    assert_same_weights(tmp_path / "straight.safetensors", tmp_path / "resumed.safetensors")


def test_several_styles_with_a_plain_norm_is_one_line(
    cli, tmp_path: Path, style_image: Path, dots_image: Path, photos: Path, vgg_weights: Path
) -> None:
    args = train_args(style_image, photos, tmp_path / "m.safetensors", vgg_weights)
    args.insert(2, str(dots_image))
    result = cli(*args)
    assert result.code == 2 and result.error_lines == [
        "error: --norm instance holds one style; several need conditional-instance or conditional-batch"
    ]
    assert not (tmp_path / "m.safetensors").exists()


def test_the_cli_stylizes_with_a_chosen_style_or_mix_and_lists_styles(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    multi = write_multi(models / "multi.safetensors")
    source = tmp_path / "photo.png"
    Image.fromarray((photo_tensor(24, 32, 5)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(source)

    for option, name in (("dots", "multi-dots"), ("dots=0.7,stripes=0.3", "multi-dots70+stripes30")):
        result = cli("image", source, "--model", multi, "--style-mix", option, "--out", tmp_path, "--precision", "fp32")
        assert result.code == 0, result.err
        written = np.asarray(Image.open(tmp_path / f"photo-{name}.png"), dtype=np.float32)
        chosen = choose_styles(load_model(multi), {"dots": 1} if option == "dots" else {"dots": 0.7, "stripes": 0.3})
        with torch.no_grad():
            expected = chosen.network(photo_tensor(24, 32, 5)).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(written - expected).max() <= 1.5

    bad = cli("image", source, "--model", multi, "--style-mix", "candy", "--out", tmp_path)
    assert bad.code == 2 and bad.error_lines == [
        "error: no style 'candy' in this model; its styles: waves, dots, stripes"
    ]
    malformed = cli("image", source, "--model", multi, "--style-mix", "dots=lots", "--out", tmp_path)
    assert malformed.code == 2 and malformed.error_lines == [
        "error: --style-mix 'dots=lots': a weight is not a finite number (write NAME=WEIGHT)"
    ]
    endless = cli("image", source, "--model", multi, "--style-mix", "dots=inf,waves=1", "--out", tmp_path)
    assert endless.code == 2 and endless.error_lines == [
        "error: --style-mix 'dots=inf,waves=1': a weight is not a finite number (write NAME=WEIGHT)"
    ]

    exported = cli("export", multi, "--style-mix", "stripes", "--format", "torchscript", "--out", tmp_path / "s.pt")
    assert exported.code == 0, exported.err
    refused = cli("image", source, "--model", tmp_path / "s.pt", "--style-mix", "dots", "--out", tmp_path)
    assert refused.code == 2 and "an exported file holds one style" in refused.err

    sheet = tmp_path / "strip.png"
    strip = cli("compare", source, "--model", multi, "--styles", "stripes, dots", "--blend-strip", "--out", sheet,
                "--size", "32", "--stylized-only")  # fmt: skip
    assert strip.code == 0, strip.err
    names = [model["name"] for model in json.loads(sheet.with_suffix(".json").read_text())["models"]]
    assert names == ["multi-stripes", "multi-stripes+multi-dots-25", "multi-stripes+multi-dots-50",
                     "multi-stripes+multi-dots-75", "multi-dots"]  # fmt: skip

    monkeypatch.setenv("STYLIZE_MODELS", str(models))
    monkeypatch.setenv("COLUMNS", "200")
    listing = cli("models")
    assert listing.code == 0
    assert "waves, dots, stripes" in next(line for line in listing.out.splitlines() if "multi" in line)


def only_norm_params_run(
    cli, style: Path, photos: Path, vgg_weights: Path, parent: Path
) -> tuple[str, dict[str, tuple[torch.Tensor, torch.Tensor]], ModelInfo]:
    """A fast --only-norm-params run from ``parent``, checked to leave every
    weight and running statistic bit for bit; its stderr, each style tensor
    (γ or β, a row per style) after and before, and its model's info."""
    out = parent.with_name("trained.safetensors")
    fast = ("--warmup-steps", "0", "--lr", "0.01")
    result = cli(*train_args(style, photos, out, vgg_weights, "--init", parent, "--only-norm-params", *fast))
    assert result.code == 0, result.err
    after, before = load_file(str(out)), load_file(str(parent))
    for key, value in before.items():
        if ".styles." not in key:
            assert torch.equal(after[key], value), key
    styles = {key: (after[key], value) for key, value in before.items() if ".styles." in key}
    return result.err, styles, load_model(out).info


@pytest.mark.parametrize(("style", "expected"), [("dots", "multi"), ("swirls", "multi+swirls")])
def test_only_norm_params_into_a_folder_names_an_in_place_retrain_after_its_parent(
    tmp_path: Path, photos: Path, style: str, expected: str
) -> None:
    parent = write_multi(tmp_path / "multi.safetensors")
    (tmp_path / "out").mkdir()
    config = TrainConfig(
        style_image=tmp_path / f"{style}.png", data=photos, out=tmp_path / "out", init=str(parent),
        only_norm_params=True,
    )  # fmt: skip
    (run,) = plan_norm_runs(config, ["conditional-instance"])
    assert run.out == tmp_path / "out" / f"{expected}.safetensors"


@pytest.mark.parametrize("norm", CONDITIONAL)
def test_only_norm_params_adds_a_style_and_leaves_everything_else_bit_for_bit(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, norm: str
) -> None:
    parent = write_multi(tmp_path / "multi.safetensors", norm)
    _, styles, info = only_norm_params_run(cli, style_image, photos, vgg_weights, parent)
    assert info.styles == (*STYLES, "swirls") and info.config.norm == norm
    assert info.style_thumbnails[:3] == tuple(f"thumb-{name}" for name in STYLES)
    for key, (grown, value) in styles.items():
        assert torch.equal(grown[:3], value), key  # the other styles' rows untouched
        assert not torch.equal(grown[3], value.float().mean(dim=0).half()), key  # the new one trained


@pytest.mark.parametrize("norm", CONDITIONAL)
def test_only_norm_params_with_a_held_style_name_retrains_that_style_in_place(
    cli, tmp_path: Path, dots_image: Path, photos: Path, vgg_weights: Path, norm: str
) -> None:
    parent = write_multi(tmp_path / "multi.safetensors", norm)
    err, styles, info = only_norm_params_run(cli, dots_image, photos, vgg_weights, parent)
    assert "multi.safetensors holds 'dots': retraining its γ and β in place, the others" in " ".join(err.split())
    assert info.styles == STYLES and info.config.norm == norm
    assert [info.style_thumbnails[0], info.style_thumbnails[2]] == ["thumb-waves", "thumb-stripes"]
    assert info.style_thumbnails[1] != "thumb-dots"  # the run's own image
    for key, (retrained, value) in styles.items():
        assert torch.equal(retrained[[0, 2]], value[[0, 2]]), key  # the other styles untouched
        assert not torch.equal(retrained[1], value[1]), key  # dots retrained...
        # ... from its own rows: 4 Adam steps of 0.01 move no number more than 0.04 (+ fp16 rounding)
        assert (retrained[1].float() - value[1].float()).abs().max() < 0.05, key


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_only_norm_params_from_a_one_style_model_makes_a_two_style_model_of_its_conditional_twin(
    cli, tmp_path: Path, style_image: Path, photos: Path, vgg_weights: Path, norm: str
) -> None:
    parent = write_model(tmp_path / "parent.safetensors", norm=norm, style="starry", style_thumbnail="thumb-starry")
    out = tmp_path / "two.safetensors"
    fast = ("--warmup-steps", "0", "--lr", "0.01")
    result = cli(*train_args(style_image, photos, out, vgg_weights, "--init", parent, "--only-norm-params", *fast))
    assert result.code == 0, result.err

    two = load_model(out)
    assert two.info.config.norm == f"conditional-{norm}" and two.info.styles == ("starry", "swirls")
    assert two.info.style_thumbnails[0] == "thumb-starry"
    first, second = (choose_styles(two, {name: 1.0}).network for name in two.info.styles)
    parent_state = load_model(parent).network.state_dict()
    for key, value in first.state_dict().items():  # the parent, bit for bit, as the first style
        assert torch.equal(value, parent_state[key]), key
    image = photo_tensor(40, 48, seed=3)
    with torch.no_grad():
        assert (first(image) - second(image)).abs().max() > 1e-3  # the new style's γ and β trained

    # Each column's losses are against its own painting: the run had only the new style's image.
    source = tmp_path / "photo.png"
    Image.fromarray((photo_tensor(24, 32, 5)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(source)
    reports = compare([source], [out], CompareSettings(size=32, device="cpu")).reports
    sources = {report.info.style: report.losses.source for report in reports}
    # (the parent's thumbnail here is a placeholder, so Starry Night's column has no painting at all)
    assert sources["starry"].endswith(", no style image") and sources["swirls"].endswith(", style image"), sources
    beside = style_image.with_stem("starry")  # a painting of the held style's name beside the run's
    try:
        shutil.copy(style_image, beside)
        reports = compare([source], [out], CompareSettings(size=32, device="cpu")).reports
    finally:
        beside.unlink()
    assert all(report.losses.source.endswith(", style image") for report in reports)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_a_one_style_model_starts_every_style_of_a_multi_style_run_of_its_conditional_twin(
    cli, tmp_path: Path, style_image: Path, dots_image: Path, photos: Path, vgg_weights: Path, norm: str
) -> None:
    parent = write_model(tmp_path / "parent.safetensors", norm=norm, seed=7)
    out = tmp_path / "multi.safetensors"
    still = ("--steps", "1", "--lr", "1e-9", "--warmup-steps", "0")  # the start, hardly moved
    args = train_args(style_image, photos, out, vgg_weights, "--init", parent, "--norm", f"conditional-{norm}", *still)
    args.insert(2, str(dots_image))
    result = cli(*args)
    assert result.code == 0, result.err

    multi = load_model(out)
    assert multi.info.config.norm == f"conditional-{norm}" and multi.info.styles == ("swirls", "dots")
    expected = dict(load_model(parent).network.named_parameters())  # (a batch norm's statistics moved a step)
    for name in multi.info.styles:  # each style is the parent, its γ and β included
        for key, value in choose_styles(multi, {name: 1.0}).network.named_parameters():
            assert torch.allclose(value, expected[key], atol=1e-5), (name, key)


def test_a_joint_run_from_a_multi_style_model_says_which_style_starts_each_where_the_names_differ(
    cli, tmp_path: Path, style_image: Path, dots_image: Path, photos: Path, vgg_weights: Path
) -> None:
    parent = write_model(tmp_path / "parent.safetensors", norm="instance", seed=7)
    steps = ("--steps", "1", "--norm", "conditional-instance")
    multi = tmp_path / "multi.safetensors"
    first = train_args(style_image, photos, multi, vgg_weights, "--init", parent, *steps)
    first.insert(2, str(dots_image))
    assert cli(*first).code == 0

    again = train_args(style_image, photos, tmp_path / "again.safetensors", vgg_weights, "--init", multi, *steps)
    again.insert(2, str(dots_image))
    swapped = train_args(dots_image, photos, tmp_path / "swapped.safetensors", vgg_weights, "--init", multi, *steps)
    swapped.insert(2, str(style_image))
    same, other = cli(*again), cli(*swapped)
    assert same.code == 0 and other.code == 0, other.err
    assert "starts from" not in same.err
    assert (
        "holds the styles swirls, dots; each style starts from the one in its place: dots from swirls, swirls from dots"
        in " ".join(other.err.split())
    )


def test_only_norm_params_is_refused_in_one_line_where_it_cannot_work(
    cli, tmp_path: Path, style_image: Path, dots_image: Path, photos: Path, vgg_weights: Path
) -> None:
    out = tmp_path / "m.safetensors"
    single = write_model(tmp_path / "single.safetensors", norm="layer")
    plain = write_model(tmp_path / "plain.safetensors", norm="instance", style="swirls")
    multi = write_multi(tmp_path / "multi.safetensors")
    cases = {
        "--only-norm-params adds (or retrains) one style image of a multi-style --init model": (),
        "single is layer-norm. Train one with --norm conditional-instance": ("--init", single),
        "plain is a one-style model of 'swirls': to train it on, leave out --only-norm-params": ("--init", plain),
        "--only-norm-params trains the --init model's own norm: leave out --norm": (
            "--init", multi, "--norm", "conditional-instance"
        ),
        "--resampling must be the --init model's (antialiased) with --only-norm-params": (
            "--init", multi, "--resampling", "nearest"
        ),
    }  # fmt: skip
    for message, extra in cases.items():
        result = cli(*train_args(style_image, photos, out, vgg_weights, "--only-norm-params", *extra))
        assert result.code == 2 and len(result.error_lines) == 1 and message in result.err, result.err
    assert not out.exists()


def test_compare_shows_a_column_per_style_and_a_blend_strip_between_neighbours(tmp_path: Path) -> None:
    multi = write_multi(tmp_path / "multi.safetensors")
    source = tmp_path / "photo.png"
    Image.fromarray((photo_tensor(24, 32, 5)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(source)
    settings = CompareSettings(size=32, device="cpu")

    every = compare([source], [multi], settings)
    assert [report.info.name for report in every.reports] == [f"multi-{name}" for name in STYLES]

    strip = compare([source], [multi], dataclasses.replace(settings, styles=("stripes", "dots"), blend_strip=True))
    assert len(strip.reports) == len(BLEND_STRIP) == 5
    # In the order asked for, not the model's: the strip runs from stripes to dots.
    assert strip.reports[0].info.style == "stripes" and strip.reports[-1].info.style == "dots"
    halfway = choose_styles(load_model(multi), {"dots": 0.5, "stripes": 0.5}).network
    with torch.no_grad():
        expected = halfway(strip.contents[0]).clamp(0, 1)
    torch.testing.assert_close(strip.outputs[2][0].plain, expected, rtol=0, atol=1e-4)
    assert (strip.outputs[1][0].plain - strip.outputs[3][0].plain).abs().mean() > 0.005
    # Three styles: a walk stripes -> dots -> waves, nine columns, each style once.
    walk = compare(
        [source], [multi], dataclasses.replace(settings, styles=("stripes", "dots", "waves"), blend_strip=True)
    )
    assert [report.info.style for report in walk.reports][::4] == ["stripes", "dots", "waves"]
    assert len(walk.reports) == 9
    torch.testing.assert_close(walk.outputs[2][0].plain, strip.outputs[2][0].plain, rtol=0, atol=0)

    with pytest.raises(StylizeError, match="a blend strip needs two columns"):
        compare([source], [multi], dataclasses.replace(settings, styles=("dots",), blend_strip=True))
    with pytest.raises(StylizeError, match="no model here holds the style 'candy'"):
        compare([source], [multi], dataclasses.replace(settings, styles=("candy",)))
