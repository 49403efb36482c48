"""pytorch/examples' ``neural_style.py eval``, step for step, for the whole-process
benchmark: its imports, decode, model load, network and encode, in its order,
with its network (re-stated in ``tests/reference_fast_neural_style.py``; the
peer's code is not in this repository). Prints its phase times as JSON.

    python -m benchmarks.peer_eval --content-image PHOTO --model MODEL.pth --output-image OUT
"""

import importlib
import json
import time

# What neural_style.py and the modules it imports (utils, transformer_net, vgg) import.
PEER_IMPORTS = (
    "argparse", "os", "re", "sys", "numpy", "torch", "torch.optim", "torch.utils.data", "torch.onnx",
    "torchvision.datasets", "torchvision.transforms", "torchvision.models", "PIL.Image",
    "tests.reference_fast_neural_style",
)  # fmt: skip


def main() -> None:
    started = time.perf_counter()
    for module in PEER_IMPORTS:
        importlib.import_module(module)
    phases = {"imports": time.perf_counter() - started}
    import argparse
    import re

    import torch
    from PIL import Image
    from torchvision import transforms

    from tests.reference_fast_neural_style import ExamplesTransformerNet

    parser = argparse.ArgumentParser()
    parser.add_argument("--content-image", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--output-image", required=True)
    args = parser.parse_args()
    device = torch.device("cpu")

    mark = time.perf_counter()
    content_image = Image.open(args.content_image).convert("RGB")  # utils.load_image
    phases["decode"], mark = time.perf_counter() - mark, time.perf_counter()
    content_transform = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: x.mul(255))])
    content_image = content_transform(content_image).unsqueeze(0).to(device)
    phases["to tensor"], mark = time.perf_counter() - mark, time.perf_counter()

    with torch.no_grad():
        style_model = ExamplesTransformerNet()
        state_dict = torch.load(args.model)
        for key in list(state_dict.keys()):  # deprecated running_* keys of old InstanceNorm files
            if re.search(r"in\d+\.running_(mean|var)$", key):
                del state_dict[key]
        style_model.load_state_dict(state_dict)
        style_model.to(device)
        style_model.eval()
        phases["load"], mark = time.perf_counter() - mark, time.perf_counter()
        output = style_model(content_image).cpu()
    phases["network"], mark = time.perf_counter() - mark, time.perf_counter()

    img = output[0].clone().clamp(0, 255).numpy()  # utils.save_image
    img = Image.fromarray(img.transpose(1, 2, 0).astype("uint8"))
    phases["to pixels"], mark = time.perf_counter() - mark, time.perf_counter()
    img.save(args.output_image)
    phases["encode"] = time.perf_counter() - mark
    print(json.dumps(phases))


if __name__ == "__main__":
    main()
