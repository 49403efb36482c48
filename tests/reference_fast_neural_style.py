"""An independent re-statement of pytorch/examples' fast_neural_style network,
with its state-dict key names and its 0..255 pixel convention: the oracle the
import of those models is checked against."""

from __future__ import annotations

import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = nn.functional.interpolate(x, mode="nearest", scale_factor=2)
        return self.conv2d(self.reflection_pad(x))


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.in1 = Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)
        self.conv2, self.in2 = Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.in2(self.conv2(torch.relu(self.in1(self.conv1(x)))))


class ExamplesTransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.in1 = Conv(3, 32, 9), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = Conv(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = Conv(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        for i in range(1, 6):
            setattr(self, f"res{i}", Residual(128))
        self.deconv1, self.in4 = Conv(128, 64, 3, upsample=True), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = Conv(64, 32, 3, upsample=True), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = Conv(32, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.in1(self.conv1(x)))
        y = torch.relu(self.in2(self.conv2(y)))
        y = torch.relu(self.in3(self.conv3(y)))
        for i in range(1, 6):
            y = getattr(self, f"res{i}")(y)
        y = torch.relu(self.in4(self.deconv1(y)))
        y = torch.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def randomized() -> ExamplesTransformerNet:
    """Random weights with non-trivial affine norms, like a trained model's."""
    torch.manual_seed(3)
    network = ExamplesTransformerNet()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        network.deconv3.conv2d.weight.mul_(40)  # outputs spread over 0..255
        network.deconv3.conv2d.bias.fill_(128)
    return network.eval()


def stylize_like_examples(network: ExamplesTransformerNet, pixels_0_1: torch.Tensor) -> torch.Tensor:
    """Their pipeline: ToTensor * 255 in, clamp(0, 255) and astype('uint8') (truncation) out."""
    with torch.no_grad():
        out = network(pixels_0_1 * 255)
    return out.clamp(0, 255).to(torch.uint8)
