"""What does steadier video cost? Per frame: the network alone, and ``stylize
video``'s flow stabilizer after it (``stylize.inference.temporal``), alternating
in one run on consecutive frames of a slow pan made from a photo.

    python -m benchmarks.stabilize --photo PHOTO [--sizes 640x360 1280x720] [--model NAME]

Per size: median milliseconds per frame of each, and the stabilizer's share of
the frame-by-frame time. The shift term (``--shift-weight``) costs nothing here:
it changes training only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stylize.images import load_image
from stylize.inference.stylizer import InferenceSettings, Stylizer
from stylize.inference.temporal import FlowStabilizer
from stylize.model.files import DEFAULT_STYLE, load_model

from .common import machine, pan_clip, show, time_calls, write_json

CPU = torch.device("cpu")


def _size(text: str) -> tuple[int, int]:
    width, height = map(int, text.lower().split("x"))
    return height, width


def measure(stylizer: Stylizer, photo: torch.Tensor, size: tuple[int, int], repeats: int) -> dict[str, float]:
    """Median ms per frame of the network and of the stabilizer, timed in turn on the same frames."""
    frames = pan_clip(photo, size, frames=2).frames
    stylized = stylizer(frames)
    stabilizer = FlowStabilizer()
    stabilizer(frames[:1], stylized[:1])
    after_first = stabilizer.previous

    def stabilize_second() -> torch.Tensor:
        stabilizer.previous = after_first  # every call carries frame 0 onto frame 1 along the pan
        return stabilizer(frames[1:], stylized[1:])

    network = stabilizer_timing = None
    for _ in range(2):  # alternate, so a slow spell of the machine hits both
        network = time_calls(lambda: stylizer(frames[1:]), CPU, repeats)
        stabilizer_timing = time_calls(stabilize_second, CPU, repeats)
    assert network is not None and stabilizer_timing is not None
    return {
        "network_ms": network.median_s * 1000,
        "stabilizer_ms": stabilizer_timing.median_s * 1000,
        "share": stabilizer_timing.median_s / network.median_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--sizes", type=_size, nargs="+", default=[(360, 640), (720, 1280)], metavar="WxH")
    parser.add_argument("--model", default=DEFAULT_STYLE, help="model name or file")
    parser.add_argument("--precision", default="auto", help="the network's precision, as stylize video runs it")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stabilize.json"))
    args = parser.parse_args()

    stylizer = Stylizer(load_model(args.model, CPU), CPU, InferenceSettings(precision=args.precision, compile=False))
    photo = load_image(args.photo).rgb
    results = {f"{w}x{h}": measure(stylizer, photo, (h, w), args.repeats) for h, w in args.sizes}
    rows = [
        [size, f"{r['network_ms']:.0f}", f"{r['stabilizer_ms']:.0f}", f"+{r['share']:.0%}"]
        for size, r in results.items()
    ]
    device = machine(CPU)
    show(
        f"Per frame, ms: {Path(args.model).stem}, {args.precision} ({stylizer.dtype}), {device['cpu']}",
        ["frame", "network", "stabilizer", "extra"],
        rows,
    )
    write_json(
        args.out,
        {
            "machine": device,
            "model": args.model,
            "precision": args.precision,
            "dtype": str(stylizer.dtype),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
