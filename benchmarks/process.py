"""The whole process a user times: ``stylize image`` against pytorch/examples'
``neural_style.py eval`` (``benchmarks/peer_eval.py``) on the same photo and
weights, and start-up against ``import torch``.

    python -m benchmarks.process [--image PHOTO] [--size 2048x1536] [--runs 5]

Each command runs as its own process, alternating with the others, and the
table gives medians. The phases (imports, load, decode, to tensor, network, to pixels, encode) come
from a separate run of each: the peer times its own steps, and stylize's come
from the calls ``stylize image`` makes, each timed (``benchmarks.stylize_phases``).
The weights are a pytorch/examples-format file of random weights spread over
0..255 like a trained model's output: both tools read that format, and speed
does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from stylize.images import load_image, to_uint8

from .common import bench_image, machine, show, write_json

ROOT = Path(__file__).resolve().parents[1]
FORMATS = (".jpg", ".png")
PHASES = ("imports", "load", "decode", "to tensor", "network", "to pixels", "encode")


def stylize_command() -> list[str]:
    """The console script beside this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("stylize")
    return [str(script)] if script.exists() else [sys.executable, "-m", "stylize"]


def prepare(folder: Path, image: Path, width: int, height: int) -> tuple[Path, Path]:
    """The photo as a quality-95 JPEG of the benchmark size, and the weights file."""
    from tests.reference_fast_neural_style import randomized

    photo = folder / f"photo-{width}x{height}.jpg"
    pixels = to_uint8(bench_image(image, width, height))[0].permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(photo, quality=95)
    weights = folder / "random.pth"
    torch.save(randomized().state_dict(), weights)
    return photo, weights


def run_timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return seconds, done.stdout


def whole_commands(photo: Path, weights: Path, folder: Path) -> dict[str, list[str]]:
    commands = {}
    for suffix in FORMATS:
        out = folder / f"stylize{suffix}"
        commands[f"stylize image, {suffix}"] = [*stylize_command(), "image", str(photo), "--model", str(weights),
                                                "--out", str(out)]  # fmt: skip
        commands[f"neural_style.py eval, {suffix}"] = [sys.executable, "-m", "benchmarks.peer_eval",
                                                       "--content-image", str(photo), "--model", str(weights),
                                                       "--output-image", str(folder / f"peer{suffix}")]  # fmt: skip
    return commands


def startup_commands() -> dict[str, list[str]]:
    return {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "stylize --help": [*stylize_command(), "--help"],
        "stylize models": [*stylize_command(), "models"],
        "stylize image's imports": [sys.executable, "-c", "import stylize.cli.app"],
    }


def alternate(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Every command once per round, ``runs`` rounds, so that drifts hit all alike."""
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            seconds[name].append(run_timed(command)[0])
    return seconds


def phase_rows(photo: Path, weights: Path, folder: Path) -> dict[str, dict[str, float]]:
    rows = {}
    for suffix in FORMATS:
        out = folder / f"phases{suffix}"
        _, printed = run_timed([sys.executable, "-m", "benchmarks.stylize_phases", str(photo), str(weights), str(out)])
        rows[f"stylize image, {suffix}"] = json.loads(printed.splitlines()[-1])
        _, printed = run_timed([sys.executable, "-m", "benchmarks.peer_eval", "--content-image", str(photo),
                                "--model", str(weights), "--output-image", str(out)])  # fmt: skip
        rows[f"neural_style.py eval, {suffix}"] = json.loads(printed.splitlines()[-1])
    return rows


def output_differences(photo: Path, weights: Path, folder: Path) -> dict[str, dict[str, float]]:
    """Both tools' PNG outputs, in levels of 255: at ``--precision fp32`` stylize computes the
    peer's function (within rounding); its default (bf16 where native) stays within the bf16 bound."""
    exact = folder / "exact.png"
    run_timed([*stylize_command(), "image", str(photo), "--model", str(weights), "--precision", "fp32",
               "--out", str(exact)])  # fmt: skip
    peer = load_image(folder / "peer.png").rgb
    differences = {}
    for name, path in (("fp32", exact), ("default", folder / "stylize.png")):
        difference = (load_image(path).rgb - peer).abs() * 255
        differences[name] = {"max_levels": difference.max().item(), "mean_levels": difference.mean().item()}
    return differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "rocket.jpg", help="photo to scale and crop")
    parser.add_argument("--size", default="2048x1536", help="WIDTHxHEIGHT")
    parser.add_argument("--runs", type=int, default=5, help="rounds of alternating runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/process.json"))
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))

    folder = Path(tempfile.mkdtemp(prefix="stylize-process-"))
    try:
        photo, weights = prepare(folder, args.image, width, height)
        whole = alternate(whole_commands(photo, weights, folder), args.runs)
        outputs = output_differences(photo, weights, folder)
        phases = phase_rows(photo, weights, folder)
        startup = alternate(startup_commands(), args.runs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(args, whole, phases, startup, outputs)


def report(
    args: argparse.Namespace,
    whole: dict[str, list[float]],
    phases: dict[str, dict[str, float]],
    startup: dict[str, list[float]],
    outputs: dict[str, dict[str, float]],
) -> None:
    median = {name: statistics.median(runs) for name, runs in {**whole, **startup}.items()}
    rows = []
    for name in whole:
        peer = median[name.replace("stylize image", "neural_style.py eval")]
        split = phases[name]
        rows.append([name, f"{median[name]:.2f}", f"{peer / median[name]:.2f}x",
                     *(f"{split[key]:.2f}" for key in PHASES),
                     f"{median[name] - sum(split.values()):.2f}"])  # fmt: skip
    show(
        f"whole process, one {args.size} JPEG, median of {args.runs} alternating runs (s)",
        ["command", "whole", "stylize faster", *PHASES, "rest"],
        rows,
    )
    torch_s = median["python -c 'import torch'"]
    show(
        f"start-up, median of {args.runs} alternating runs (s)",
        ["command", "seconds", "vs import torch"],
        [[name, f"{median[name]:.2f}", f"{median[name] / torch_s:.2f}x"] for name in startup],
    )
    write_json(
        args.out,
        {
            "machine": machine(torch.device("cpu")),
            "image": args.image.name,
            "size": args.size,
            "runs": args.runs,
            "whole_s": whole,
            "phases_s": phases,
            "startup_s": startup,
            "median_s": median,
            "png_outputs_differ_from_peer_by": outputs,
        },
    )


if __name__ == "__main__":
    main()
