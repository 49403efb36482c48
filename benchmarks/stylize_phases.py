"""``stylize image``'s steps for one photo, each timed, for ``benchmarks.process``.
Its own process, so that the imports are timed from a fresh interpreter.

    python -m benchmarks.stylize_phases PHOTO MODEL OUT
"""

import importlib
import json
import sys
import time


def main() -> None:
    mark = time.perf_counter()
    importlib.import_module("stylize.cli.app")  # everything the command imports
    phases = {"imports": time.perf_counter() - mark}
    from pathlib import Path

    from stylize.images import image_to_tensor, open_image, save_pil, tensor_to_image
    from stylize.inference.stylizer import load_stylizer

    photo, model, out = map(Path, sys.argv[1:4])
    mark = time.perf_counter()
    stylizer = load_stylizer(str(model), "cpu")
    phases["load"], mark = time.perf_counter() - mark, time.perf_counter()
    decoded = open_image(photo)  # what load_image does, in its two steps
    phases["decode"], mark = time.perf_counter() - mark, time.perf_counter()
    image = image_to_tensor(decoded)
    phases["to tensor"], mark = time.perf_counter() - mark, time.perf_counter()
    result = stylizer.stylize(image)
    phases["network"], mark = time.perf_counter() - mark, time.perf_counter()
    pixels = tensor_to_image(result.rgb, result.alpha)  # what save_image does, in its two steps
    phases["to pixels"], mark = time.perf_counter() - mark, time.perf_counter()
    save_pil(out, pixels)
    phases["encode"] = time.perf_counter() - mark
    print(json.dumps(phases))


if __name__ == "__main__":
    main()
