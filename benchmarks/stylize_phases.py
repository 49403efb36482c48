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

    from stylize.images import load_image, save_image
    from stylize.inference.stylizer import load_stylizer

    photo, model, out = map(Path, sys.argv[1:4])
    mark = time.perf_counter()
    stylizer = load_stylizer(str(model), "cpu")
    phases["load"], mark = time.perf_counter() - mark, time.perf_counter()
    image = load_image(photo)
    phases["decode"], mark = time.perf_counter() - mark, time.perf_counter()
    result = stylizer.stylize(image)
    phases["network"], mark = time.perf_counter() - mark, time.perf_counter()
    save_image(out, result.rgb, result.alpha)
    phases["encode"] = time.perf_counter() - mark
    print(json.dumps(phases))


if __name__ == "__main__":
    main()
