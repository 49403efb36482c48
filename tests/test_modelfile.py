from __future__ import annotations

import json
import os
import pickle
import stat
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from stylize import StylizeError, bundled_models, load_model, save_model
from stylize.images import to_uint8
from stylize.model.checkpoints import Checkpoint, write_checkpoint
from stylize.model.files import read_info, resolve_model
from stylize.model.network import NetConfig, TransformerNet

from .helpers import ALL_NORMS, write_model
from .reference_fast_neural_style import randomized, stylize_like_examples


@pytest.mark.parametrize("norm", ALL_NORMS)
def test_round_trip_keeps_weights_config_and_metadata(tmp_path: Path, norm: str) -> None:
    torch.manual_seed(0)
    config = NetConfig(norm=norm, groups=4)
    network = TransformerNet(config)
    with torch.no_grad():
        network.train()(torch.rand(4, 3, 20, 20))  # non-trivial running statistics where there are any
        for parameter in network.parameters():  # norm scales, shifts and gates away from their defaults
            parameter.add_(torch.randn_like(parameter) * 0.1)
    network.eval()
    save_model(tmp_path / "m.safetensors", network, style="wave", training={"steps_done": 7, "image_size": 64})
    model = load_model(tmp_path / "m.safetensors")
    assert model.info.config == config and model.info.style == "wave"
    assert model.info.training == {"steps_done": 7, "image_size": 64} and model.info.name == "m"
    assert not model.network.training
    stored = load_file(tmp_path / "m.safetensors")
    for key, value in network.state_dict().items():  # float16 on disk, float32 once loaded
        expected = value.half() if value.is_floating_point() else value
        assert stored[key].dtype == expected.dtype and torch.equal(stored[key], expected), key
        assert torch.equal(model.network.state_dict()[key], expected.to(value.dtype)), key
    images = torch.rand(1, 3, 23, 31)
    with torch.no_grad():
        network.load_state_dict(model.network.state_dict())
        torch.testing.assert_close(model.network(images), network(images), rtol=0, atol=0)


@pytest.mark.parametrize("with_stale_statistics", [False, True])
def test_pytorch_examples_models_reproduce_their_pixels(tmp_path: Path, with_stale_statistics: bool) -> None:
    reference = randomized()
    state = reference.state_dict()
    if with_stale_statistics:  # files from old PyTorch versions
        for key in [k for k in state if k.endswith(".weight") and ".in" in f".{k}" and "conv" not in k]:
            state[key.replace(".weight", ".running_mean")] = torch.zeros_like(state[key])
            state[key.replace(".weight", ".running_var")] = torch.ones_like(state[key])
        assert "res3.in2.running_mean" in state and "in1.running_var" in state
    torch.save(state, tmp_path / "udnie.pth")
    model = load_model(tmp_path / "udnie.pth")
    assert model.info.config == NetConfig(
        norm="instance", input_scale=255.0, bounded_output=False, resampling="nearest"
    )

    images = torch.rand(2, 3, 36, 44)
    expected = stylize_like_examples(reference, images).int()
    with torch.no_grad():
        ours = to_uint8(model.network(images)).int()
    assert 0 < expected.float().std()  # the comparison is not between two blank images
    assert (ours - expected).abs().max() <= 1


@pytest.mark.parametrize("wrapper", ["module.", "module.module.", "_orig_mod.", "module._orig_mod."])
def test_models_saved_from_a_wrapper_load_as_the_plain_model(tmp_path: Path, wrapper: str) -> None:
    reference = randomized()
    torch.save({f"{wrapper}{key}": value for key, value in reference.state_dict().items()}, tmp_path / "dp.pth")
    torch.save(reference.state_dict(), tmp_path / "plain.pth")
    images = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        wrapped, plain = (load_model(tmp_path / name).network(images) for name in ("dp.pth", "plain.pth"))
    torch.testing.assert_close(wrapped, plain, rtol=0, atol=0)
    assert (to_uint8(wrapped).int() - stylize_like_examples(reference, images).int()).abs().max() <= 1


def test_training_checkpoints_load_as_models(tmp_path: Path) -> None:
    network = TransformerNet(NetConfig(norm="batch")).eval()
    optimizer = torch.optim.Adam(network.parameters())
    checkpoint = Checkpoint(network.state_dict(), optimizer.state_dict(), 10, 4, {}, network.config, style="x")
    model = load_model(write_checkpoint(tmp_path, checkpoint))
    assert model.info.config.norm == "batch" and model.info.style == "x"


def test_a_pickle_payload_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"in1.weight": Payload()}))
    torch.save({"x": Payload()}, tmp_path / "evil2.pth")  # zip format with the same payload
    for name in ("evil.pth", "evil2.pth"):
        with warnings.catch_warnings(record=True) as caught, pytest.raises(StylizeError, match="not a model file"):
            warnings.simplefilter("always")
            load_model(tmp_path / name)
        assert caught == []  # nothing but the one error line reaches the user
    assert not marker.exists()


def test_wrong_architecture_and_wrong_files(tmp_path: Path, model_file: Path) -> None:
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(StylizeError, match="not a stylize model"):
        load_model(tmp_path / "other.safetensors")

    tensors = {"conv1.conv2d.weight": torch.zeros(32, 3, 9, 9)}
    metadata = {"format": "stylize", "format_version": "1", "network": json.dumps({"norm": "instance"})}
    save_file(tensors, str(tmp_path / "partial.safetensors"), metadata=metadata)
    with pytest.raises(StylizeError, match="does not hold a instance-norm network: missing"):
        load_model(tmp_path / "partial.safetensors")

    (tmp_path / "text.safetensors").write_text("hello world, not a model")
    with pytest.raises(StylizeError, match="not a model file|not a readable model file"):
        load_model(tmp_path / "text.safetensors")

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model_file.read_bytes()[:5000])
    with pytest.raises(StylizeError, match="not a readable model file"):
        load_model(truncated)


def test_an_unknown_device_is_one_clear_error(model_file: Path) -> None:
    with pytest.raises(StylizeError, match="device must be one of: auto, cpu, cuda, cuda:N; not 'tpu'"):
        load_model(model_file, device="tpu")


def test_antialiased_models_are_format_2_so_older_readers_refuse_them(tmp_path: Path) -> None:
    """Their weights fit a nearest network: a reader of version 1 must not run them as one."""
    for resampling, version in (("nearest", "1"), ("antialiased", "2")):
        path = tmp_path / f"{resampling}.safetensors"
        save_model(path, TransformerNet(NetConfig(resampling=resampling)), style="s", training={})
        with safe_open(str(path), framework="pt") as handle:
            assert handle.metadata()["format_version"] == version
        assert load_model(path).info.config.resampling == resampling
    metadata = {"format": "stylize", "format_version": "2", "network": json.dumps({"resampling": "cubic"})}
    save_file({"x": torch.zeros(1)}, str(tmp_path / "future.safetensors"), metadata=metadata)
    with pytest.raises(StylizeError, match="future.safetensors holds a network this stylize cannot build: resampling"):
        load_model(tmp_path / "future.safetensors")


def test_metadata_norm_must_agree_with_the_weights(tmp_path: Path) -> None:
    write_model(tmp_path / "in.safetensors", norm="instance")
    with open(tmp_path / "in.safetensors", "rb") as handle:
        data = handle.read()
    lying = data.replace(b'{\\"norm\\": \\"instance\\"', b'{\\"norm\\":    \\"batch\\"')
    assert lying != data and len(lying) == len(data)
    (tmp_path / "lying.safetensors").write_bytes(lying)
    assert read_info(tmp_path / "lying.safetensors").config.norm == "batch"
    with pytest.raises(
        StylizeError, match="does not hold a batch-norm network: missing norm1[.](num_batches_tracked|running_mean)"
    ):
        load_model(tmp_path / "lying.safetensors")


def test_bundled_models_are_found_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLIZE_MODELS", str(tmp_path))
    write_model(tmp_path / "wave-instance.safetensors", style="wave")
    write_model(tmp_path / "wave-batch.safetensors", norm="batch", style="wave")
    write_model(tmp_path / "wave-batch-instance.safetensors", norm="batch-instance", style="wave")
    write_model(tmp_path / "ant-weight.safetensors", norm="weight", style="ant")
    # By style, then instance and batch first as the norm registry orders them (not by file name).
    assert [info.name for info in bundled_models()] == [
        "ant-weight",
        "wave-instance",
        "wave-batch",
        "wave-batch-instance",
    ]
    assert resolve_model("wave") == tmp_path / "wave-instance.safetensors"
    assert resolve_model("wave-batch") == tmp_path / "wave-batch.safetensors"
    with pytest.raises(StylizeError, match="no model file or bundled model named 'sky'.*wave-instance, wave-batch,"):
        resolve_model("sky")


def test_a_source_checkout_finds_the_repository_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $STYLIZE_MODELS an editable install reads the top-level models/ folder."""
    monkeypatch.delenv("STYLIZE_MODELS", raising=False)
    repository = Path(__file__).resolve().parents[1] / "models"
    assert {info.path for info in bundled_models()} == set(repository.glob("*.safetensors")) != set()
    assert resolve_model("starry-night") == repository / "starry-night-instance.safetensors"


def test_model_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """mkstemp makes 0600 files and safetensors writes its own; the final file follows the umask."""
    umask = os.umask(0)
    os.umask(umask)
    path = write_model(tmp_path / "m.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
