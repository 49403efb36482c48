from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylize import ExportedNetwork, StylizeError, load_model
from stylize.model.blend import blend_models

from .helpers import minimal_record, photo, write_model


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _child(parent: Path, path: Path, seed: int, norm: str = "instance") -> Path:
    """A model recorded as fine-tuned from ``parent`` (its own weights random: only the record matters here)."""
    record = {**minimal_record(path), "init": str(parent), "init_sha256": _sha(parent)}
    return write_model(path, norm=norm, seed=seed, training=record)


@pytest.fixture
def family(tmp_path: Path) -> dict[str, Path]:
    parent = write_model(tmp_path / "parent.safetensors", seed=0)
    return {
        "parent": parent,
        "first": _child(parent, tmp_path / "first.safetensors", seed=1),
        "second": _child(parent, tmp_path / "second.safetensors", seed=2),
        "stranger": write_model(tmp_path / "stranger.safetensors", seed=3),
        "batch": _child(parent, tmp_path / "batch.safetensors", seed=4, norm="batch"),
    }


def test_a_blend_is_the_weighted_average_of_every_weight(family: dict[str, Path]) -> None:
    first, second = load_model(family["first"]), load_model(family["second"])
    theirs = {key: value.clone() for key, value in first.network.state_dict().items()}
    ours = {key: value.clone() for key, value in second.network.state_dict().items()}
    blended = blend_models(first, second, 0.25)
    for key, value in blended.network.state_dict().items():
        torch.testing.assert_close(value, 0.75 * theirs[key] + 0.25 * ours[key])
    assert blended.info.name == "first+second-25" and blended.info.style == "test-style 75% + test-style 25%"
    # The ends are the models themselves, and neither input changed.
    image = torch.rand(1, 3, 24, 28)
    with torch.no_grad():
        torch.testing.assert_close(blend_models(first, second, 0.0).network(image), first.network(image))
        torch.testing.assert_close(blend_models(first, second, 1.0).network(image), second.network(image))
    for model, before in ((first, theirs), (second, ours)):
        for key, value in model.network.state_dict().items():
            assert torch.equal(value, before[key]), key


def test_siblings_and_a_parent_with_its_child_blend_but_strangers_and_other_networks_do_not(
    family: dict[str, Path],
) -> None:
    model = {name: load_model(path) for name, path in family.items()}
    blend_models(model["first"], model["second"], 0.5)
    blend_models(model["parent"], model["second"], 0.5)
    blend_models(model["second"], model["parent"], 0.5)
    with pytest.raises(StylizeError, match="first and stranger cannot be blended: they were not trained from the same"):
        blend_models(model["first"], model["stranger"], 0.5)
    with pytest.raises(StylizeError, match=r"blended: their networks differ \(norm instance vs batch\)"):
        blend_models(model["first"], model["batch"], 0.5)
    with pytest.raises(StylizeError, match="mix must be between 0 and 1, not 1.5"):
        blend_models(model["first"], model["second"], 1.5)


def test_the_cli_blends_two_models_and_refuses_bad_blends_in_one_line(
    cli, tmp_path: Path, family: dict[str, Path]
) -> None:
    source = tmp_path / "photo.png"
    Image.fromarray(photo(40, 48, seed=5)).save(source)
    outputs = {}
    for mix in ("0", "0.5", "1"):
        out = tmp_path / f"mix{mix}.png"
        result = cli("image", source, "--model", family["first"], "--model", family["second"], "--mix", mix,
                     "--out", out, "--precision", "fp32")  # fmt: skip
        assert result.code == 0, result.err
        outputs[mix] = np.asarray(Image.open(out)).astype(int)
    for name in ("first", "second"):
        result = cli("image", source, "--model", family[name], "--out", tmp_path / f"{name}.png", "--precision", "fp32")
        assert result.code == 0, result.err
    assert np.abs(outputs["0"] - np.asarray(Image.open(tmp_path / "first.png"))).max() <= 1
    assert np.abs(outputs["1"] - np.asarray(Image.open(tmp_path / "second.png"))).max() <= 1
    assert np.abs(outputs["0.5"] - outputs["0"]).mean() > 1 and np.abs(outputs["0.5"] - outputs["1"]).mean() > 1

    refusals = {
        "were not trained from the same --init model": ("--model", family["first"], "--model", family["stranger"]),
        "--mix blends two models: give two": ("--model", family["first"], "--mix", "0.3"),
        "give one model, or two with --mix": ("--model", family["first"], "--model", family["second"],
                                              "--model", family["parent"]),
        "mix must be between 0 and 1": ("--model", family["first"], "--model", family["second"], "--mix", "-1"),
        "--mix blends two models; with --style": ("--style", source, "--mix", "0.3"),
    }  # fmt: skip
    for message, options in refusals.items():
        out = tmp_path / "refused.png"
        result = cli("image", source, *options, "--out", out)
        assert result.code != 0 and message in result.err, result.err
        assert len(result.error_lines) == 1 and "Traceback" not in result.err
        assert not out.exists()


def test_a_blend_exports_as_the_network_it_paints_with(cli, tmp_path: Path, family: dict[str, Path]) -> None:
    out = tmp_path / "blend.pt"
    result = cli("export", family["first"], family["second"], "--mix", "0.3", "--format", "torchscript", "--out", out)
    assert result.code == 0, result.err
    exported = ExportedNetwork(out, torch.device("cpu"))
    expected = blend_models(load_model(family["first"]), load_model(family["second"]), 0.3).network
    image = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        reference = expected(image).clamp(0, 1)
    torch.testing.assert_close(exported(image), reference, atol=1e-4, rtol=0)
    refused = cli("export", family["first"], family["stranger"], "--out", tmp_path / "no.pt")
    assert refused.code != 0 and len(refused.error_lines) == 1 and "cannot be blended" in refused.err
    assert not (tmp_path / "no.pt").exists()
