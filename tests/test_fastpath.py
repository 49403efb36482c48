"""The inference form of the network (stylize.model.fastpath) and the settings that pick it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

import stylize.inference.stylizer as stylizer_module
from stylize.errors import StylizeError
from stylize.images import load_image
from stylize.inference.stylizer import InferenceSettings, Stylizer
from stylize.model.fastpath import (
    BandedConv,
    FastReflectConv,
    SpaceToDepthConv,
    SubpixelConv,
    optimize_for_inference,
    set_tile,
)
from stylize.model.files import load_model
from stylize.model.network import SPACE_TO_DEPTH, BlockConv, BlurredConv, ReflectConv, UpsampleConv
from stylize.model.norms import BatchInstanceNorm2d

from .helpers import ALL_NORMS, photo, photo_tensor, random_network, write_model

ROOT = Path(__file__).resolve().parents[1]

CPU = torch.device("cpu")
# fp32 sums in a different order: far below one level of 255.
SAME = 1e-4


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize(
    ("norm", "resampling"),
    [(norm, "antialiased") for norm in ALL_NORMS] + [("instance", "nearest"), ("batch", "nearest")],
)
@pytest.mark.parametrize("size", [(37, 53), (64, 48), (5, 9)])
def test_inference_form_computes_the_same_function(norm: str, resampling: str, size: tuple[int, int]) -> None:
    network = random_network(norm, resampling=resampling)
    images = torch.cat([photo_tensor(*size, seed=1), photo_tensor(*size, seed=2)])
    with torch.no_grad():
        expected = network(images)
        got = optimize_for_inference(network)(images)
    assert _max_difference(got, expected) < SAME


def test_batch_norm_is_folded_into_the_convolutions() -> None:
    fast = optimize_for_inference(random_network("batch"))
    assert not any(isinstance(module, nn.BatchNorm2d) for module in fast.modules())
    ibn = optimize_for_inference(random_network("ibn"))
    assert isinstance(ibn.norm1, nn.InstanceNorm2d) and isinstance(ibn.norm4, nn.Identity)
    # A learned mix of batch and instance statistics is not an affine map: kept.
    mixed = optimize_for_inference(random_network("batch-instance"))
    assert isinstance(mixed.norm1, BatchInstanceNorm2d)


def test_weight_norm_is_computed_once_into_plain_weights() -> None:
    network = random_network("weight")
    fast = optimize_for_inference(network)
    assert not any(parametrize.is_parametrized(module) for module in fast.modules())
    assert torch.equal(fast.conv2.weight, network.conv2.kernel().detach())
    assert parametrize.is_parametrized(network.conv2.conv2d)  # the trained network keeps its g and v


def test_optimizing_leaves_the_trained_network_untouched() -> None:
    network = random_network("batch")
    before = {key: value.clone() for key, value in network.state_dict().items()}
    optimize_for_inference(network)
    assert isinstance(network.norm1, nn.BatchNorm2d) and isinstance(network.up1, UpsampleConv)
    assert all(torch.equal(before[key], value) for key, value in network.state_dict().items())


def _upsample_then_convolve(x: torch.Tensor, conv: nn.Conv2d, upsampling: str) -> torch.Tensor:
    """What ``UpsampleConv`` means, step by step: the oracle for its cheaper forms."""
    if upsampling == "nearest":
        upsampled = F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect")
    else:
        upsampled = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        upsampled = F.pad(upsampled, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(upsampled, conv.weight, conv.bias)


def _blur_then_convolve(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """What ``BlurredConv`` means: a [1, 2, 1]² / 16 blur, then the strided convolution."""
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = (blur[:, None] * blur[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), blur, groups=x.shape[1])
    return F.conv2d(blurred, conv.weight, conv.bias, conv.stride)


@pytest.mark.parametrize("upsampling", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 7)])
def test_subpixel_convolution_equals_upsample_then_convolve(upsampling: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    upsample = UpsampleConv(6, 5, upsampling)
    x = torch.randn(2, 6, *size)
    with torch.no_grad():
        expected = _upsample_then_convolve(x, upsample.conv2d, upsampling)
        assert _max_difference(upsample(x), expected) < SAME  # the training form
        assert _max_difference(SubpixelConv(upsample, 1)(x), expected) < SAME  # the inference form


@pytest.mark.parametrize("size", [(3, 3), (9, 14), (16, 11)])
def test_blurred_convolution_equals_blur_then_convolve(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    down = BlurredConv(6, 5, 3, stride=2)
    x = torch.randn(2, 6, *size)
    with torch.no_grad():
        expected = _blur_then_convolve(x, down.conv2d)
        assert _max_difference(down(x), expected) < SAME
        assert _max_difference(FastReflectConv(down, 1)(x), expected) < SAME


@pytest.mark.parametrize("upsampling", ["nearest", "bilinear"])
def test_subpixel_and_blurred_gradients_reach_the_stored_3x3_weights(upsampling: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6)
    for layer, oracle in [
        (UpsampleConv(4, 3, upsampling), lambda conv: _upsample_then_convolve(x, conv, upsampling)),
        (BlurredConv(4, 3, 3, stride=2), lambda conv: _blur_then_convolve(x, conv)),
    ]:
        layer(x).square().sum().backward()
        fast_grad = layer.conv2d.weight.grad.clone()
        layer.conv2d.weight.grad = None
        oracle(layer.conv2d).square().sum().backward()
        torch.testing.assert_close(fast_grad, layer.conv2d.weight.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("kernel", "factor"), [(9, 4), (9, 2), (3, 4), (5, 3)])
@pytest.mark.parametrize("size", [(16, 20), (9, 13), (21, 6)])
def test_space_to_depth_convolution_equals_the_plain_one(kernel: int, factor: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    conv = ReflectConv(8, 3, kernel)
    x = torch.randn(1, 8, *size)
    with torch.no_grad():
        expected = F.conv2d(F.pad(x, (kernel // 2,) * 4, mode="reflect"), conv.conv2d.weight, conv.conv2d.bias)
        assert _max_difference(SpaceToDepthConv(conv, 1, factor)(x), expected) < SAME
        if factor == SPACE_TO_DEPTH:
            block = BlockConv(8, 3, kernel)
            block.load_state_dict(conv.state_dict())
            assert _max_difference(block(x), expected) < SAME


@pytest.mark.parametrize(
    ("norm", "resampling"), [("instance", "antialiased"), ("batch", "antialiased"), ("group", "nearest")]
)
def test_tiles_leave_no_seams(norm: str, resampling: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of rows give the untiled output: every norm still sees the whole map."""
    fast = optimize_for_inference(random_network(norm, resampling=resampling))
    image = photo_tensor(100, 72, seed=3)
    bands: list[int] = []
    band = BandedConv.__call__

    def counting(self: BandedConv, x: torch.Tensor) -> torch.Tensor:
        bands.append(self.band_rows or 0)
        return band(self, x)

    with torch.no_grad():
        whole = fast(image)
        monkeypatch.setattr(BandedConv, "__call__", counting)
        set_tile(fast, 16)
        tiled = fast(image)
    assert max(bands) == 16 and min(bands) == 4  # quarter-resolution layers: 16 // 4 rows
    assert _max_difference(tiled, whole) < SAME


def test_a_band_is_computed_per_tile_of_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = optimize_for_inference(random_network()).conv1
    calls: list[tuple[int, int, int]] = []
    band = type(conv).band

    def record(self: BandedConv, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        calls.append((x.shape[-2], top, bottom))
        return band(self, x, top, bottom)

    monkeypatch.setattr(type(conv), "band", record)
    conv.set_tile(10)
    with torch.no_grad():
        out = conv(torch.rand(1, 3, 25, 12))
    assert out.shape == (1, 32, 25, 12)
    # rows 0-9 (+4 below), 10-19 (4 above and below), 20-24 (4 above): padding only at the border
    assert calls == [(14, 4, 0), (18, 0, 0), (9, 0, 4)]


def test_channels_last_input_gives_the_same_output() -> None:
    fast = optimize_for_inference(random_network())
    image = photo_tensor(40, 36, seed=4)
    with torch.no_grad():
        expected = fast(image)
        got = fast(image.contiguous(memory_format=torch.channels_last))
    assert _max_difference(got, expected) < SAME


def _stylizer(path: Path, **settings: object) -> Stylizer:
    return Stylizer(load_model(path, CPU), CPU, InferenceSettings(**settings))  # type: ignore[arg-type]


def test_a_cpu_stylizer_keeps_freed_memory_for_the_next_image(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without it, every image page-faults its bands' maps in again (~100,000 faults at 1024x768)."""
    calls: list[torch.device] = []
    monkeypatch.setattr(stylizer_module, "keep_freed_memory", lambda device: calls.append(device) or True)
    _stylizer(model_file)
    assert calls == [CPU]


def test_bf16_is_as_close_to_fp32_as_plain_bf16_autocast(model_file: Path) -> None:
    """Random weights amplify rounding more than trained ones; the bound is
    therefore the plain network's own bf16 error, not an absolute number."""
    image = photo_tensor(48, 40, seed=5)
    fp32 = _stylizer(model_file, precision="fp32")(image)
    bf16 = _stylizer(model_file, precision="bf16")(image)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain_bf16 = load_model(model_file, CPU).network(image).float().clamp(0, 1)
    assert not torch.equal(bf16, fp32)  # bf16 really ran
    error, plain_error = (bf16 - fp32).abs().mean().item(), (plain_bf16 - fp32).abs().mean().item()
    assert error < 3 / 255
    assert error < 1.5 * plain_error


def test_bf16_on_a_bundled_model_is_within_the_documented_bound() -> None:
    """The README's figure for trained models: mean under 0.4 levels of 255, no pixel over 10.
    On a 256 px square of the photo at full scale: bf16 is emulated, and many times slower, on CPUs without it."""
    photo = load_image(ROOT / "assets" / "astronaut.jpg").rgb
    top, left = (photo.shape[-2] - 256) // 2, (photo.shape[-1] - 256) // 2
    photo = photo[..., top : top + 256, left : left + 256]
    model = ROOT / "models" / "starry-night-instance.safetensors"
    levels = {precision: (_stylizer(model, precision=precision)(photo) * 255).round() for precision in ("fp32", "bf16")}
    difference = (levels["fp32"] - levels["bf16"]).abs()
    assert 0 < difference.mean() < 0.4 and difference.max() <= 10


def test_auto_precision_is_bf16_for_instance_norm_where_bf16_is_native(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stylizer_module, "BF16_BY_DEFAULT_NORMS", frozenset({"instance"}))  # the product's
    batch_norm = write_model(tmp_path / "batch.safetensors", norm="batch")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert _stylizer(model_file).dtype == torch.bfloat16
    assert _stylizer(batch_norm).dtype == torch.float32  # BN models shift whole areas in bf16
    assert _stylizer(model_file, precision="fp32").dtype == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert _stylizer(model_file).dtype == torch.float32  # emulated bf16 would be slow
    assert _stylizer(model_file, precision="bf16").dtype == torch.bfloat16


_LOAD_COMPILER_SETUP = """
import sys, torch
if sys.argv[1] == "quiet":
    from stylize.inference.stylizer import quiet_compile
    quiet_compile(torch.nn.Identity())
import torch.utils.cpp_extension  # what compiling loads
"""


def test_compiling_keeps_quiet_about_cuda_home_on_a_cpu() -> None:
    def stderr(mode: str) -> str:
        run = subprocess.run([sys.executable, "-c", _LOAD_COMPILER_SETUP, mode], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stderr

    if "No CUDA runtime is found" not in stderr("plain"):
        pytest.skip("this torch finds no CUDA_HOME here, so it has nothing to warn about")
    assert stderr("quiet") == ""


def test_compiled_network_equals_eager(model_file: Path) -> None:
    image = photo_tensor(24, 28, seed=6)
    eager = _stylizer(model_file, compile=False)(image)
    compiled = _stylizer(model_file, compile=True)
    assert compiled._compiled is not None
    assert _max_difference(compiled(image), eager) < SAME
    assert compiled._compiled is not None  # did not fall back


def test_a_failed_compile_falls_back_to_eager_with_a_notice(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo

    def failing(*args: object) -> torch.Tensor:
        raise torch._dynamo.exc.TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found\nmore")

    monkeypatch.setattr(torch, "compile", lambda network: failing)
    notices: list[str] = []
    stylizer = Stylizer(load_model(model_file, CPU), CPU, InferenceSettings(compile=True), notices.append)
    image = photo_tensor(20, 20, seed=7)
    assert _max_difference(stylizer(image), _stylizer(model_file)(image)) < SAME
    stylizer(image)
    assert notices == [
        "torch.compile failed (InvalidCxxCompiler: No working C++ compiler found); continuing without it"
    ]


def test_auto_tiles_eager_runs_and_large_compiled_ones(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stylizer_module, "AUTO_TILE_PIXELS", 30 * 30)
    monkeypatch.setattr(stylizer_module, "AUTO_TILE_ROWS", 8)
    auto = InferenceSettings()
    assert auto.tile_for(30, 30, compiled=False) == 8
    assert auto.tile_for(30, 30, compiled=True) is None
    assert auto.tile_for(40, 30, compiled=True) == 8
    assert InferenceSettings(tile=0).tile_for(4000, 4000, compiled=False) is None
    assert InferenceSettings(tile=20).tile_for(10, 10, compiled=True) == 20
    stylizer, untiled = _stylizer(model_file), _stylizer(model_file, tile=0)
    image = photo_tensor(40, 30, seed=8)
    tiled = stylizer(image)
    assert stylizer.network.conv1.band_rows == 8
    assert _max_difference(tiled, untiled(image)) < SAME
    assert untiled.network.conv1.band_rows is None


def test_compile_pays_off_only_for_many_images() -> None:
    auto = InferenceSettings()
    assert auto.for_images(stylizer_module.COMPILE_MIN_IMAGES).compile is True
    assert auto.for_images(1).compile is False
    assert InferenceSettings(compile=False).for_images(1000).compile is False
    assert InferenceSettings(compile=True).for_images(1).compile is True


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"precision": "fp16"}, "precision must be one of: auto, fp32, bf16; not 'fp16'"),
        ({"tile": -1}, "tile must be 0 (off) or a number of rows"),
    ],
)
def test_bad_settings_are_one_clear_error(settings: dict[str, object], message: str) -> None:
    with pytest.raises(StylizeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        InferenceSettings(**settings)  # type: ignore[arg-type]


def test_cli_fast_path_options(tmp_path: Path, cli) -> None:
    model = write_model(tmp_path / "model.safetensors", norm="batch")
    source = tmp_path / "in.png"
    Image.fromarray(photo(30, 26, seed=9)).save(source)
    plain, tiled = tmp_path / "plain.png", tmp_path / "tiled.png"
    assert cli("image", str(source), "--model", str(model), "--out", str(plain), "--device", "cpu").code == 0
    result = cli(
        "image", str(source), "--model", str(model), "--out", str(tiled), "--tile", "8", "--no-compile",
        "--precision", "fp32", "--device", "cpu",
    )  # fmt: skip
    assert result.code == 0
    assert np.array_equal(_pixels(plain), _pixels(tiled))
    bad = cli("image", str(source), "--model", str(model), "--out", str(tmp_path / "x.png"), "--precision", "fp16")
    assert bad.code == 2 and bad.error_lines == ["error: --precision must be one of: auto, fp32, bf16; not 'fp16'"]
    assert not (tmp_path / "x.png").exists()


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)
