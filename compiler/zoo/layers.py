"""Building blocks the baselines share: conv-BN(-activation) and the inverted residual of MobileNetV2
(Sandler et al., arXiv:1801.04381), which MobileNetV3, FBNet and MobileViT all build on.

Padding is always the conv's own (kernel // 2), never F.pad: the legacy exporter turns F.pad into a Pad
with dynamic pads, which TVM's Relax ONNX importer rejects. Convs before a BatchNorm have no bias, so the
pair folds into one Conv at ONNX export.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn


def conv_bn(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            act: Optional[Callable[[], nn.Module]] = None) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm [-> act()]."""
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_ch)]
    return nn.Sequential(*layers, *([act()] if act is not None else []))


class InvertedResidual(nn.Module):
    """[1x1 expand -> act] -> KxK depthwise -> act -> [attention] -> 1x1 linear projection, + input if shapes match.

    `expand` defaults to "only when the width changes" (MobileNetV3's first bneck has none); FBNet's
    blocks keep the 1x1 even at expansion 1. `attention` (e.g. squeeze-and-excite) sees the depthwise output.
    """

    def __init__(self, in_ch: int, hidden: int, out_ch: int, kernel: int, stride: int,
                 act: Callable[[], nn.Module], attention: Optional[nn.Module] = None,
                 expand: Optional[bool] = None):
        super().__init__()
        expand = hidden != in_ch if expand is None else expand
        layers = [conv_bn(in_ch, hidden, 1, act=act)] if expand else []
        layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act),
                   *([attention] if attention is not None else []),
                   conv_bn(hidden, out_ch, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class Classifier(nn.Module):
    """Global average pooling -> flatten -> [hidden linear -> act] -> linear to the classes."""

    def __init__(self, in_ch: int, num_classes: int, hidden: Optional[int] = None,
                 act: Optional[Callable[[], nn.Module]] = None):
        super().__init__()
        layers = [nn.Linear(in_ch, hidden), act()] if hidden else []
        self.head = nn.Sequential(*layers, nn.Linear(hidden or in_ch, num_classes))

    def forward(self, x):
        return self.head(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
