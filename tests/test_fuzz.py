"""Fuzzing the two loaders that read user files: every outcome is a result or a StylizeError."""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylize import StylizeError, load_image, load_model

from .helpers import photo, write_model

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
           b"II*\x00", b"MM\x00*", b"\x00\x00\x00\x0cjP  "]  # fmt: skip


def _valid_images() -> dict[str, bytes]:
    encoded = {}
    for fmt in ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"):
        buffer = io.BytesIO()
        Image.fromarray(photo(12, 10, seed=1)).save(buffer, format=fmt)
        encoded[fmt] = buffer.getvalue()
    return encoded


VALID_IMAGES = _valid_images()


def _load(data: bytes, suffix: str = ".img") -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # nothing but the result or the error reaches the user
                image = load_image(path)
        except StylizeError:
            return
        assert image.rgb.ndim == 4 and image.rgb.shape[:2] == (1, 3)
        assert float(image.rgb.min()) >= 0 and float(image.rgb.max()) <= 1


@FUZZ
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=600))
def test_random_bytes_are_an_image_or_a_stylize_error(header: bytes, body: bytes) -> None:
    _load(header + body)


@FUZZ
@given(
    fmt=st.sampled_from(sorted(VALID_IMAGES)),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6),
    cut=st.floats(0.05, 1.0),
)
def test_damaged_images_are_an_image_or_a_stylize_error(fmt: str, flips: list[tuple[int, int]], cut: float) -> None:
    data = bytearray(VALID_IMAGES[fmt])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    _load(bytes(data[: max(1, int(len(data) * cut))]))


@FUZZ
@given(
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "I;16", "I", "F", "1", "YCbCr", "LAB", "HSV"]),
    fmt=st.sampled_from(["PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"]),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    seed=st.integers(0, 2**16),
)
def test_small_valid_images_of_any_mode_load(mode: str, fmt: str, height: int, width: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = (
        Image.fromarray(pixels).convert(mode)
        if mode not in ("I;16", "I", "F")
        else Image.fromarray(pixels[..., 0].astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]) * 200)
    )
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # Pillow cannot write this mode in this format: nothing to load
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"image.{fmt.lower()}"
        path.write_bytes(buffer.getvalue())
        loaded = load_image(path)  # a valid file must load, never raise
    assert loaded.rgb.shape == (1, 3, height, width)
    assert float(loaded.rgb.min()) >= 0 and float(loaded.rgb.max()) <= 1


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz-models")
    return {norm: write_model(folder / f"{norm}.safetensors", norm=norm).read_bytes() for norm in ("instance", "batch")}


def _load_model_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"model{suffix}"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # nothing but the model or the error reaches the user
                model = load_model(path)
        except StylizeError:
            return
        assert model.network is not None


@FUZZ
@given(body=st.binary(max_size=400), suffix=st.sampled_from([".safetensors", ".pth", ".pt", ".model"]),
       header=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x08\x00\x00\x00\x00\x00\x00\x00{"]))  # fmt: skip
def test_random_bytes_are_a_model_or_a_stylize_error(body: bytes, suffix: str, header: bytes) -> None:
    _load_model_bytes(header + body, suffix)


@FUZZ
@given(norm=st.sampled_from(["instance", "batch"]), header_flips=st.lists(st.tuples(st.integers(0, 4000),
       st.integers(1, 255)), min_size=1, max_size=4), cut=st.floats(0.0, 1.0))  # fmt: skip
def test_damaged_model_files_are_a_model_or_a_stylize_error(
    model_bytes: dict[str, bytes], norm: str, header_flips: list[tuple[int, int]], cut: float
) -> None:
    data = bytearray(model_bytes[norm])
    for position, mask in header_flips:  # the JSON header and metadata live in the first few KB
        data[position % len(data)] ^= mask
    if cut < 0.5:
        data = data[: int(len(data) * cut * 2)]
    _load_model_bytes(bytes(data), ".safetensors")
