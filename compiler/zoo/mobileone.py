"""MobileOne-S1: "MobileOne: An Improved One millisecond Mobile Backbone", Vasu, Gabriel, Zhu, Tuzel,
Ranjan (arXiv:2206.04861).

Configuration: Table 7 of the paper for S1: width multipliers (1.5, 1.5, 2.0, 2.5) over the base widths
(64, 128, 256, 512) -> 64 (stem), 96, 192, 512, 1280 channels; 1 + 2 + 8 + 10 + 1 blocks; k = 1
over-parameterised branch; no squeeze-and-excite; 224x224, 1000 classes. Each block is a depthwise 3x3
then a pointwise 1x1 MobileOne block (Figure 3). The network is built, seeded and calibrated in its
train-time form (branches: k conv-BN, a 1x1 conv-BN "scale" branch, a BN skip), then re-parameterised
(Section 3.2) into what ships: one conv with bias and a ReLU per block. 4.76M parameters, 0.83 GMACs
(the paper: 4.8M, 0.825 G).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compiler.zoo.layers import Classifier, conv_bn
from compiler.zoo.untrained import build_baseline

INPUT_SIZE = 224
BASE_WIDTHS = (64, 128, 256, 512)
MULTIPLIERS = (1.5, 1.5, 2.0, 2.5)  # S1
BLOCKS = (2, 8, 10, 1)
BRANCHES = 1  # k: S0 uses 4, S1-S4 use 1


class MobileOneBlock(nn.Module):
    """Train-time MobileOne block: ReLU(sum of k KxK conv-BN, a 1x1 conv-BN when K > 1, a BN skip when
    the shape is kept). `reparameterized()` folds every branch into one KxK conv with bias."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 branches: int = BRANCHES):
        super().__init__()
        self.conv_args = dict(in_channels=in_ch, out_channels=out_ch, kernel_size=kernel, stride=stride,
                              padding=kernel // 2, groups=groups)
        self.convs = nn.ModuleList(conv_bn(in_ch, out_ch, kernel, stride, groups) for _ in range(branches))
        self.scale = conv_bn(in_ch, out_ch, 1, stride, groups) if kernel > 1 else None
        self.skip = nn.BatchNorm2d(out_ch) if stride == 1 and in_ch == out_ch else None

    def branches(self) -> list[nn.Module]:
        return [*self.convs, *([self.scale] if self.scale is not None else []),
                *([self.skip] if self.skip is not None else [])]

    def forward(self, x):
        return F.relu(sum(branch(x) for branch in self.branches()))

    def reparameterized(self) -> nn.Sequential:
        """Conv2d(bias) -> ReLU computing what this block computes in eval mode."""
        conv = nn.Conv2d(**self.conv_args, bias=True)
        kernels, biases = zip(*(self._folded(branch) for branch in self.branches()))
        conv.weight.data = torch.stack(kernels).sum(0)
        conv.bias.data = torch.stack(biases).sum(0)
        return nn.Sequential(conv, nn.ReLU())

    def _folded(self, branch: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(KxK kernel, bias) of one branch with its BatchNorm folded in; a BN skip is an identity kernel."""
        kernel_size, groups = self.conv_args["kernel_size"], self.conv_args["groups"]
        if isinstance(branch, nn.BatchNorm2d):
            bn, per_group = branch, self.conv_args["in_channels"] // groups
            weight = torch.zeros(bn.num_features, per_group, 1, 1)
            weight[torch.arange(bn.num_features), torch.arange(bn.num_features) % per_group] = 1.0
        else:
            conv, bn = branch
            weight = conv.weight.detach()
        scale = bn.weight.detach() / (bn.running_var + bn.eps).sqrt()
        pad = (kernel_size - weight.shape[-1]) // 2  # a 1x1 kernel sits at the centre of the KxK one
        weight = F.pad(weight * scale.reshape(-1, 1, 1, 1), [pad] * 4)
        return weight, bn.bias.detach() - bn.running_mean * scale


class MobileOneS1(nn.Module):
    """Train-time MobileOne-S1; `reparameterize` turns it into the inference form."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        widths = [int(base * m) for base, m in zip(BASE_WIDTHS, MULTIPLIERS)]
        width = min(64, widths[0])
        layers = [MobileOneBlock(3, width, 3, 2)]
        for out_ch, blocks in zip(widths, BLOCKS):
            for index in range(blocks):
                layers += [MobileOneBlock(width, width, 3, 2 if index == 0 else 1, groups=width),
                           MobileOneBlock(width, out_ch, 1)]
                width = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def reparameterize(model: nn.Module) -> nn.Module:
    """Replace every MobileOneBlock, in place, by its single-conv inference form; return the model."""
    for name, child in model.named_children():
        if isinstance(child, MobileOneBlock):
            setattr(model, name, child.reparameterized())
        else:
            reparameterize(child)
    return model.eval()


def build_train_time(seed: int | None = 0) -> nn.Module:
    return build_baseline(MobileOneS1, seed, INPUT_SIZE)


def build(seed: int | None = 0) -> nn.Module:
    """The inference (re-parameterised) form, as shipped."""
    return reparameterize(build_train_time(seed))
