"""Backbones a user brings: eight published architectures that are not registered models, written in PyTorch
to their papers' configurations and exported to ONNX the way users export them (torch.onnx.export, batch 1,
224x224). They are what the no-database benchmark builds to see how the default schedules do on a model nobody
developed the rules on (bench/default_schedules.py --models user).

Families, by what their kernels ask of the default schedules:
  convnext_atto    7x7 depthwise convolutions, layer norm over channels, MLP matmuls with GELU
  efficientnet_b0  depthwise 3x3/5x5 with squeeze-and-excite, SiLU
  regnetx_200mf    grouped 3x3 convolutions of 8-channel groups, widths 24, 56, 152, 368
  regnety_400mf    the same with squeeze-and-excite, widths 48, 104, 208, 440
  mixnet_s         mixed depthwise kernels (3x3 to 11x11 on channel splits), grouped 1x1 convolutions
  ghostnet_100     ghost modules (a 1x1 convolution and a cheap depthwise one, concatenated)
  resnet18         dense 3x3 convolutions
  deit_tiny        a vision transformer: patch embedding, 12 blocks of attention and MLP, layer norms

Weights are seeded (no download here) and BatchNorm statistics non-trivial; latency does not depend on them.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import torch
from torch import nn

IMAGE = (1, 3, 224, 224)


def _divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never below 90% of it (the MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(cin, cout, kernel=1, stride=1, groups=1, act=nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduced, act=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.reduce, self.act = nn.Conv2d(channels, reduced, 1), act()
        self.expand, self.gate = nn.Conv2d(reduced, channels, 1), gate()

    def forward(self, x):
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(scale))))


class Classifier(nn.Sequential):
    def __init__(self, channels, classes=1000):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


# ConvNeXt (Liu et al. 2022), the Atto size of timm: depths 2, 2, 6, 2; widths 40, 80, 160, 320.
class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels of an NCHW tensor."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 1e-1))

    def forward(self, x):
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)):
        super().__init__()
        layers = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, 2)]
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm, self.head = nn.LayerNorm(dims[-1], eps=1e-6), nn.Linear(dims[-1], 1000)

    def forward(self, x):
        return self.head(self.norm(self.features(x).mean((2, 3))))


# EfficientNet-B0 (Tan & Le 2019): inverted residuals with squeeze-and-excite, SiLU.
class InvertedResidual(nn.Module):
    """1x1 expansion (grouped when `groups` > 1), depthwise convolution(s) of `kernels` on equal channel splits
    (one kernel: a plain depthwise convolution), optional squeeze-and-excite, 1x1 projection."""

    def __init__(self, cin, cout, kernels, stride, expand, se_ratio, act, exp_groups=1, proj_groups=1):
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn(cin, mid, groups=exp_groups, act=act) if expand != 1 else nn.Identity()
        self.depthwise = MixedDepthwise(mid, kernels, stride, act)
        self.se = SqueezeExcite(mid, max(1, int(cin * se_ratio)), act) if se_ratio else nn.Identity()
        self.project = conv_bn(mid, cout, groups=proj_groups, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class MixedDepthwise(nn.Module):
    """Depthwise convolutions of several kernel sizes on a split of the channels (MixConv), concatenated."""

    def __init__(self, channels, kernels, stride, act):
        super().__init__()
        splits = [channels // len(kernels)] * len(kernels)
        splits[0] += channels - sum(splits)
        self.splits = splits
        self.convs = nn.ModuleList(nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False)
                                   for c, k in zip(splits, kernels))
        self.bn, self.act = nn.BatchNorm2d(channels), act()

    def forward(self, x):
        if len(self.convs) == 1:
            y = self.convs[0](x)
        else:
            y = torch.cat([conv(part) for conv, part in zip(self.convs, torch.split(x, self.splits, 1))], 1)
        return self.act(self.bn(y))


def inverted_residual_network(stem: int, stages, head: int, act) -> nn.Sequential:
    """stages: (expand, kernels, stride, out channels, repeats, se ratio, act, expansion groups, projection groups)."""
    layers, cin = [conv_bn(3, stem, 3, 2, act=act)], stem
    for expand, kernels, stride, cout, repeats, se, stage_act, exp_groups, proj_groups in stages:
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, kernels, stride if i == 0 else 1, expand, se, stage_act or act,
                                           exp_groups, proj_groups))
            cin = cout
    return nn.Sequential(*layers, conv_bn(cin, head, act=act), Classifier(head))


def efficientnet_b0() -> nn.Module:
    stages = [(1, (3,), 1, 16, 1), (6, (3,), 2, 24, 2), (6, (5,), 2, 40, 2), (6, (3,), 2, 80, 3),
              (6, (5,), 1, 112, 3), (6, (5,), 2, 192, 4), (6, (3,), 1, 320, 1)]
    return inverted_residual_network(32, [(*s, 0.25, None, 1, 1) for s in stages], 1280, nn.SiLU)


def mixnet_s() -> nn.Module:
    """MixNet-S (Tan & Le 2019): MixConv kernels per stage, grouped 1x1 convolutions where the paper has them."""
    relu, swish = nn.ReLU, nn.SiLU
    stages = [(1, (3,), 1, 16, 1, 0, relu, 1, 1),
              (6, (3,), 2, 24, 1, 0, relu, 2, 2), (3, (3,), 1, 24, 1, 0, relu, 2, 2),
              (6, (3, 5, 7), 2, 40, 1, 0.5, swish, 1, 1), (6, (3, 5), 1, 40, 3, 0.5, swish, 2, 2),
              (6, (3, 5, 7), 2, 80, 1, 0.25, swish, 1, 2), (6, (3, 5), 1, 80, 2, 0.25, swish, 1, 2),
              (6, (3, 5, 7), 1, 120, 1, 0.5, swish, 2, 2), (3, (3, 5, 7, 9), 1, 120, 2, 0.5, swish, 2, 2),
              (6, (3, 5, 7, 9, 11), 2, 200, 1, 0.5, swish, 1, 1), (6, (3, 5, 7, 9), 1, 200, 2, 0.5, swish, 1, 2)]
    return inverted_residual_network(16, stages, 1536, relu)


# RegNet (Radosavovic et al. 2020): X and Y at 200 and 400 MF, group width 8, bottleneck ratio 1.
class RegNetBlock(nn.Module):
    def __init__(self, cin, cout, stride, group_width, se_ratio):
        super().__init__()
        self.a = conv_bn(cin, cout)
        self.b = conv_bn(cout, cout, 3, stride, groups=cout // group_width)
        self.se = SqueezeExcite(cout, int(cin * se_ratio)) if se_ratio else nn.Identity()
        self.c = conv_bn(cout, cout, act=None)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.shortcut(x) + self.c(self.se(self.b(self.a(x)))))


def regnet(widths, depths, se_ratio=0.0, group_width=8) -> nn.Module:
    layers, cin = [conv_bn(3, 32, 3, 2)], 32
    for width, depth in zip(widths, depths):
        for i in range(depth):
            layers.append(RegNetBlock(cin, width, 2 if i == 0 else 1, group_width, se_ratio))
            cin = width
    return nn.Sequential(*layers, Classifier(cin))


# GhostNet (Han et al. 2020), width 1.0.
class GhostModule(nn.Module):
    def __init__(self, cin, cout, relu):
        super().__init__()
        self.out, primary = cout, math.ceil(cout / 2)
        act = nn.ReLU if relu else None
        self.primary = conv_bn(cin, primary, act=act)
        self.cheap = conv_bn(primary, primary, 3, groups=primary, act=act)

    def forward(self, x):
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], 1)[:, :self.out]


class GhostBottleneck(nn.Module):
    def __init__(self, cin, mid, cout, kernel, stride, se_ratio):
        super().__init__()
        self.ghost1 = GhostModule(cin, mid, relu=True)
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid, act=None) if stride > 1 else nn.Identity()
        self.se = (SqueezeExcite(mid, _divisible(mid * se_ratio, 4), gate=nn.Hardsigmoid) if se_ratio
                   else nn.Identity())
        self.ghost2 = GhostModule(mid, cout, relu=False)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(conv_bn(cin, cin, kernel, stride, groups=cin, act=None),
                                       conv_bn(cin, cout, act=None)))

    def forward(self, x):
        return self.shortcut(x) + self.ghost2(self.se(self.depthwise(self.ghost1(x))))


def ghostnet_100() -> nn.Module:
    blocks = [(3, 16, 16, 0, 1), (3, 48, 24, 0, 2), (3, 72, 24, 0, 1), (5, 72, 40, 0.25, 2), (5, 120, 40, 0.25, 1),
              (3, 240, 80, 0, 2), (3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1),
              (3, 672, 112, 0.25, 1), (5, 672, 160, 0.25, 2), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1),
              (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)]
    layers, cin = [conv_bn(3, 16, 3, 2)], 16
    for kernel, mid, cout, se, stride in blocks:
        layers.append(GhostBottleneck(cin, mid, cout, kernel, stride, se))
        cin = cout
    return nn.Sequential(*layers, conv_bn(cin, 960), nn.AdaptiveAvgPool2d(1), nn.Conv2d(960, 1280, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(1280, 1000))


# ResNet-18 (He et al. 2016).
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


def resnet18() -> nn.Module:
    layers, cin = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
    for i, width in enumerate((64, 128, 256, 512)):
        for j in range(2):
            layers.append(BasicBlock(cin, width, 2 if i and j == 0 else 1))
            cin = width
    return nn.Sequential(*layers, Classifier(cin))


# DeiT-Tiny (Touvron et al. 2021): ViT with 16x16 patches, width 192, 12 blocks of 3 heads.
class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, dim=192, depth=12, heads=3, patch=16, image=224):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.position = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 1000)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.position
        return self.head(self.norm(self.blocks(x))[:, 0])


BACKBONES = {
    "convnext_atto": ConvNeXt,
    "efficientnet_b0": efficientnet_b0,
    "regnetx_200mf": lambda: regnet((24, 56, 152, 368), (1, 1, 4, 7)),
    "regnety_400mf": lambda: regnet((48, 104, 208, 440), (1, 3, 6, 6), se_ratio=0.25),
    "mixnet_s": mixnet_s,
    "ghostnet_100": ghostnet_100,
    "resnet18": resnet18,
    "deit_tiny": VisionTransformer,
}


def with_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics (a fresh layer's mean 0 and variance 1 would hide a folding error), drawn
    from torch's seeded generator."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


def build(name: str, seed: int = 0) -> nn.Module:
    """The backbone `name` in eval mode, its weights seeded and its BatchNorm statistics non-trivial."""
    torch.manual_seed(seed)
    return with_batchnorm_statistics(BACKBONES[name]().eval())


def export(name: str, path: Path) -> Path:
    """Export as a user does: torch.onnx.export's default (dynamo) exporter, batch 1, 224x224."""
    exporter_log = logging.getLogger("torch.onnx")  # "torchvision is not installed" lines: none of ours
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(build(name), (torch.randn(IMAGE),), str(path), dynamo=True, external_data=False,
                              verbose=False, input_names=["input"], output_names=["logits"])
        finally:
            exporter_log.setLevel(level)
    return path
