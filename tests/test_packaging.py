"""A non-editable install carries the bundled models: built offline, without
reinstalling torch, and read from a folder that is not the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import write_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_package_lists_and_runs_its_bundled_models(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "stylize", source / "stylize", ignore=shutil.ignore_patterns("__pycache__"))
    (source / "models").mkdir()
    write_model(source / "models" / "shipped-instance.safetensors", style="shipped")
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*install, "--target", str(target), str(source)], check=True, capture_output=True)
    assert (target / "stylize" / "models" / "shipped-instance.safetensors").is_file()

    shutil.rmtree(source)  # nothing may be read from the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "STYLIZE_MODELS"} | {"PYTHONPATH": str(target)}
    listed = subprocess.run(
        [sys.executable, "-m", "stylize", "models"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "shipped-instance" in listed.stdout
    photo = ROOT / "assets" / "cat.jpg"
    styled = subprocess.run(
        [sys.executable, "-m", "stylize", "image", str(photo), "--model", "shipped", "--out", str(elsewhere)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert styled.returncode == 0, styled.stderr
    assert (elsewhere / "cat-shipped-instance.jpg").is_file()
