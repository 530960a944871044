"""MobileViT-XS: "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer",
Mehta and Rastegari (arXiv:2110.02178).

Configuration: the XS column of the paper's architecture table, at its 256x256 input: stem 3x3 conv 16
stride 2; MobileNetV2 blocks (expansion 4, SiLU) to 32, 48 (x3), 64, 80, 96 channels; MobileViT blocks
at 32x32, 16x16, 8x8 with transformer widths d = 96, 120, 144 and L = 2, 4, 3 layers; 1x1 conv to 384;
pooling; 1000 classes. Patches are 2x2, the FFN is 2d wide, layers are pre-norm (LayerNorm before
attention and FFN, one more after the last). The paper does not give the number of heads; 4 is used (the
parameter count does not depend on it). 2.32M parameters, 1.03 GMACs counting the attention products.
"""
from __future__ import annotations

import torch
from torch import nn

from compiler.zoo.layers import Classifier, InvertedResidual, conv_bn
from compiler.zoo.untrained import build_baseline

INPUT_SIZE = 256
EXPANSION = 4
PATCH = 2
HEADS = 4
# (output width, stride of the first MV2 block, MV2 blocks, transformer width d or None, transformer layers L)
STAGES = (
    (32, 1, 1, None, 0),
    (48, 2, 3, None, 0),
    (64, 2, 1, 96, 2),
    (80, 2, 1, 120, 4),
    (96, 2, 1, 144, 3),
)


class SelfAttention(nn.Module):
    """Multi-head self-attention over (sequences, tokens, dim): softmax(Q K^T / sqrt(dh)) V, then a projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.scale = (dim // heads) ** -0.5  # a Python float: one constant Mul in the graph
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        sequences, tokens = x.shape[:2]
        qkv = self.qkv(x).reshape(sequences, tokens, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        scores = (qkv[0] * self.scale) @ qkv[1].transpose(-2, -1)
        mixed = torch.softmax(scores, dim=-1) @ qkv[2]
        return self.out(mixed.transpose(1, 2).reshape(sequences, tokens, self.dim))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: x + MHA(LN(x)), then x + FFN(LN(x)) with a 2d-wide SiLU FFN."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = nn.Sequential(nn.LayerNorm(dim), SelfAttention(dim, heads))
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attention(x)
        return x + self.ffn(x)


class MobileViTBlock(nn.Module):
    """Local 3x3 + 1x1 to d -> unfold into 2x2 patches -> L transformer layers -> fold -> 1x1 back to C
    -> concatenate with the input -> 3x3 fusion (Figure 1b of the paper)."""

    def __init__(self, channels: int, dim: int, layers: int):
        super().__init__()
        self.local = nn.Sequential(conv_bn(channels, channels, 3, act=nn.SiLU), nn.Conv2d(channels, dim, 1, bias=False))
        self.transformer = nn.Sequential(*[TransformerLayer(dim, HEADS) for _ in range(layers)], nn.LayerNorm(dim))
        self.project = conv_bn(dim, channels, 1, act=nn.SiLU)
        self.fuse = conv_bn(2 * channels, channels, 3, act=nn.SiLU)

    def forward(self, x):
        y = self.local(x)
        batch, dim, height, width = y.shape
        rows, cols = height // PATCH, width // PATCH
        # unfold: the pixels at the same position of every patch form one sequence of rows * cols tokens
        tokens = y.reshape(batch, dim, rows, PATCH, cols, PATCH).permute(0, 3, 5, 2, 4, 1)
        tokens = self.transformer(tokens.reshape(batch * PATCH * PATCH, rows * cols, dim))
        y = tokens.reshape(batch, PATCH, PATCH, rows, cols, dim).permute(0, 5, 3, 1, 4, 2)
        return self.fuse(torch.cat([x, self.project(y.reshape(batch, dim, height, width))], 1))


class MobileViTXS(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [conv_bn(3, 16, 3, 2, act=nn.SiLU)]
        width = 16
        for out_ch, stride, blocks, dim, depth in STAGES:
            for index in range(blocks):
                layers.append(InvertedResidual(width, width * EXPANSION, out_ch, 3, stride if index == 0 else 1,
                                               nn.SiLU))
                width = out_ch
            if dim is not None:
                layers.append(MobileViTBlock(width, dim, depth))
        layers.append(conv_bn(width, 384, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(384, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def build(seed: int | None = 0) -> nn.Module:
    return build_baseline(MobileViTXS, seed, INPUT_SIZE)
