"""FBNet-C: "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable Neural Architecture Search",
Wu, Dai, Zhang, Wang, Sun, Wu, Tian, Vajda, Jia, Keutzer (arXiv:1812.03443).

Configuration: the macro-architecture of Table 1 (stem 3x3 conv 16 stride 2, 22 searched layers in stages
of 16/24/32/64/112/184/352 channels, 1x1 conv to 1984, pooling, FC to 1000 classes at 224x224) with the
blocks that Figure 4 draws for FBNet-C. Each block is 1x1 conv -> ReLU -> KxK depthwise -> ReLU -> 1x1 conv
(no activation), with a skip when input and output shapes match (Figure 3); FBNet-C picked no grouped
1x1 convs, so no channel shuffle. 5.57M parameters, 0.38 GMACs.
"""
from __future__ import annotations

from torch import nn

from compiler.zoo.layers import Classifier, InvertedResidual, conv_bn
from compiler.zoo.untrained import build_baseline

INPUT_SIZE = 224
STEM = 16
HEAD = 1984

# Figure 4, FBNet-C: (output width, stride of the stage's first layer, blocks as (kernel, expansion) or
# None for the "skip" candidate, which leaves the layer out)
STAGES = (
    (16, 1, [(3, 1)]),
    (24, 2, [(3, 6), None, (3, 1), (3, 1)]),
    (32, 2, [(5, 6), (5, 3), (5, 6), (3, 6)]),
    (64, 2, [(5, 6), (5, 3), (5, 6), (5, 6)]),
    (112, 1, [(5, 6), (5, 6), (5, 6), (5, 3)]),
    (184, 2, [(5, 6), (5, 6), (5, 6), (5, 6)]),
    (352, 1, [(3, 6)]),
)


class FBNetC(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [conv_bn(3, STEM, 3, 2, act=nn.ReLU)]
        width = STEM
        for out_ch, stride, blocks in STAGES:
            for index, block in enumerate(blocks):
                if block is None:
                    continue
                kernel, expansion = block
                layers.append(InvertedResidual(width, width * expansion, out_ch, kernel,
                                               stride if index == 0 else 1, nn.ReLU, expand=True))
                width = out_ch
        layers.append(conv_bn(width, HEAD, 1, act=nn.ReLU))
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(HEAD, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def build(seed: int | None = 0) -> nn.Module:
    return build_baseline(FBNetC, seed, INPUT_SIZE)
