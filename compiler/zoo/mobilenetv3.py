"""MobileNetV3-Large: "Searching for MobileNetV3", Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang,
Vasudevan, Le, Adam (arXiv:1905.02244).

Configuration: Table 1 of the paper (width 1.0, 224x224, 1000 classes): 15 bnecks with h-swish in the
later half, squeeze-and-excite (squeezed to a quarter of the expansion width, rounded to a multiple of 8;
ReLU then h-sigmoid) in the marked ones, a 1x1 conv to 960, pooling, then 1280 (no BatchNorm) and the
classifier. 5.48M parameters, 0.22 GMACs.
"""
from __future__ import annotations

from torch import nn

from compiler.zoo.layers import Classifier, InvertedResidual, conv_bn
from compiler.zoo.untrained import build_baseline

INPUT_SIZE = 224

# Table 1: (kernel, expansion width, output width, squeeze-and-excite, h-swish, stride) per bneck
BNECKS = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never more than 10% down (the MobileNet rounding)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    """x * h-sigmoid(W2 relu(W1 avgpool(x))): channel attention, squeezed to a quarter of the width (Sec. 5.3)."""

    def __init__(self, channels: int):
        super().__init__()
        squeezed = make_divisible(channels / 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeezed, 1), nn.ReLU(),
                                  nn.Conv2d(squeezed, channels, 1), nn.Hardsigmoid())

    def forward(self, x):
        return x * self.gate(x)


class MobileNetV3Large(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [conv_bn(3, 16, 3, 2, act=nn.Hardswish)]
        width = 16
        for kernel, hidden, out_ch, squeeze, hswish, stride in BNECKS:
            layers.append(InvertedResidual(width, hidden, out_ch, kernel, stride, nn.Hardswish if hswish else nn.ReLU,
                                           SqueezeExcite(hidden) if squeeze else None))
            width = out_ch
        layers.append(conv_bn(width, 960, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(960, num_classes, hidden=1280, act=nn.Hardswish)  # 1x1 convs "NBN"

    def forward(self, x):
        return self.classifier(self.features(x))


def build(seed: int | None = 0) -> nn.Module:
    return build_baseline(MobileNetV3Large, seed, INPUT_SIZE)
