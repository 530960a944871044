"""Small ONNX vision models defined here for the tests: a MobileNetV2-style CNN, a ViT-style transformer and
a ConvNeXt-style CNN.

They exercise operators AttendNeXt does not (depthwise convolutions with Clip, LayerNorm, MatMul,
Softmax, Gelu, Transpose) so the compiler is tested on more than its reference model.
"""
import socket
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from compiler.bench.user_backbones import ConvNeXtBlock, LayerNorm2d, with_batchnorm_statistics


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand=4):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetMini(nn.Module):
    """MobileNetV2's inverted residual blocks, narrow and short."""

    def __init__(self, classes=100):
        super().__init__()
        layers = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
        for cin, cout, stride in [(16, 16, 1), (16, 24, 2), (24, 24, 1), (24, 32, 2), (32, 32, 1), (32, 64, 2)]:
            layers.append(InvertedResidual(cin, cout, stride))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.features(x))


class ViTMini(nn.Module):
    """A vision transformer: patch embedding, pre-norm encoder layers (attention + GELU MLP), mean pool."""

    def __init__(self, dim=64, depth=2, heads=4, patch=8, image=64, classes=100):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.position = nn.Parameter(torch.randn(1, (image // patch) ** 2, dim) * 0.02)
        self.heads = heads
        self.register_buffer("scale", torch.tensor((dim // heads) ** -0.5))
        self.layers = nn.ModuleList(nn.ModuleDict({
            "norm1": nn.LayerNorm(dim), "qkv": nn.Linear(dim, 3 * dim), "proj": nn.Linear(dim, dim),
            "norm2": nn.LayerNorm(dim), "mlp": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)),
        }) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def attention(self, layer, x):
        batch, tokens, dim = x.shape
        q, k, v = layer["qkv"](x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        return layer["proj"]((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.position
        for layer in self.layers:
            x = x + self.attention(layer, layer["norm1"](x))
            x = x + layer["mlp"](layer["norm2"](x))
        return self.head(self.norm(x).mean(dim=1))


class ConvNeXtMini(nn.Module):
    """ConvNeXt's stem, blocks, downsampling and head (LayerNorm2d, Flatten, Linear), two narrow stages.
    Exported by the dynamo exporter with a dynamic batch, its pooled head computes the batch size at run
    time (Shape -> Range -> Gather): the graph whose output shape TVM could not infer."""

    def __init__(self, dim=16, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), LayerNorm2d(dim))
        self.stages = nn.Sequential(ConvNeXtBlock(dim), LayerNorm2d(dim), nn.Conv2d(dim, 2 * dim, 2, 2),
                                    ConvNeXtBlock(2 * dim))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), LayerNorm2d(2 * dim), nn.Flatten(1),
                                  nn.Linear(2 * dim, classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


class KernelClasses(nn.Module):
    """One of each kernel class the default schedules cover that the other models lack: a grouped 3x3, a strided
    depthwise 5x5, max-pool, nearest upsampling, a sigmoid gate with a residual (AttendNeXt's condenser shape),
    a batched matmul, a softmax, and on a 7x7 map a 1x1 convolution over 512 input channels (vectorised along
    its output channels, its channel reduction cut into chunks that fit L1)."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(16, 16, 5, stride=2, padding=2, groups=16)
        self.pointwise = nn.Conv2d(16, 16, 1)
        self.wide = nn.Conv2d(16, 512, 1)
        self.narrow = nn.Conv2d(512, 32, 1)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        low = self.pointwise(torch.relu(self.grouped(nn.functional.max_pool2d(x, 2))))
        x = x * torch.sigmoid(nn.functional.interpolate(low, scale_factor=2.0, mode="nearest")) + x
        deep = torch.relu(self.narrow(torch.relu(self.wide(nn.functional.avg_pool2d(x, 4, stride=2)))))
        x = self.depthwise(x)                                   # (1, 16, 8, 8)
        tokens = x.flatten(2).transpose(1, 2)                   # (1, 64, 16)
        attention = torch.softmax(tokens @ tokens.transpose(1, 2) / 4.0, dim=-1)
        return self.head(torch.cat([(attention @ tokens).mean(dim=1), deep.mean(dim=(2, 3))], dim=1))


class RowReductions(nn.Module):
    """Kernels that reduce rows (schedules/row_reductions.py): a mean over a 28x28 map (rows of 784), a layer
    norm over 40 channels of 49 tokens, a softmax over rows of 24, a mean over a 7x7 map (rows of 49: partial
    sums of 7 lanes on x86, vectors of 4 and a partial one on NEON), and a softmax over rows of 197, a prime no
    partial sums divide (vectors and a partial one, each step its own loop)."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(8, 40, 1)
        self.norm = nn.LayerNorm(40)
        self.head = nn.Linear(40 + 8 + 24 + 8 + 40, 10)

    def forward(self, x):                                              # (1, 8, 28, 28)
        wide = x.mean(dim=(2, 3))                                      # rows of 784
        small = nn.functional.avg_pool2d(self.expand(x), 4)            # (1, 40, 7, 7)
        tokens = self.norm(small.flatten(2).transpose(1, 2))           # (1, 49, 40)
        scores = torch.softmax(tokens[:, :, :24] * 2.0, dim=-1)        # rows of 24
        rows = x.flatten(2)[:, :, :197]
        prime = (torch.softmax(rows, dim=-1) * rows).sum(dim=-1)       # rows of 197
        return self.head(torch.cat([tokens.mean(dim=1), wide, scores.mean(dim=1), prime, small.mean(dim=(2, 3))],
                                   dim=1))


class PaddedProducts(nn.Module):
    """Products no tile divides (schedules/tile_padding.py): a vision transformer's 197 tokens (a prime) through a
    dense layer, attention scores over 197 columns and their product with the values, on narrow widths."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(24, 3 * 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):                                              # (1, 197, 24)
        q, k, v = self.qkv(x).chunk(3, dim=-1)                         # 197 rows of 24 -> 48
        scores = torch.softmax(q @ k.transpose(1, 2) * 0.25, dim=-1)   # (1, 197, 197)
        return self.head((scores @ v).mean(dim=1))


class SiLUColumns(nn.Module):
    """AttendNeXt's columns in small: grouped 3x3 convolutions with SiLU between (int8: pair-sums products whose
    SiLU tables run on their rows, the second reading the first's rows), then a depthwise convolution (it reads
    NCHW: the rows go back through a transpose) and a SiLU-gated average."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.second = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.depthwise(nn.functional.silu(self.second(nn.functional.silu(self.first(x)))))
        return self.head(nn.functional.silu(x).mean(dim=(2, 3)))


MODELS = {
    # name: (constructor, input shape, dynamic batch axis in the ONNX file)
    "tiny_cnn": (TinyCNN, (1, 3, 32, 32), False),
    "mobilenet_mini": (MobileNetMini, (1, 3, 96, 96), False),
    "vit_mini": (ViTMini, (1, 3, 64, 64), True),
    "convnext_mini": (ConvNeXtMini, (1, 3, 32, 32), True),
    "kernel_classes": (KernelClasses, (1, 16, 16, 16), False),
    "silu_columns": (SiLUColumns, (1, 16, 16, 16), False),
    "row_reductions": (RowReductions, (1, 8, 28, 28), False),
    "padded_products": (PaddedProducts, (1, 197, 24), False),
}


def export(name, path, seed=0):
    """Export model `name` with seeded weights (and non-trivial BatchNorm statistics) to `path`."""
    constructor, shape, dynamic_batch = MODELS[name]
    torch.manual_seed(seed)
    model = with_batchnorm_statistics(constructor().eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(shape), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None)
    return path


def export_as_users_do(model, path, shape, dynamo: bool):
    """Export `model` with a dynamic batch axis and its weights in an external-data file `<path>.data`, by
    the dynamo exporter (torch.onnx.export's default in torch 2.13) or the legacy TorchScript one. No
    network is used: a connection attempt fails the export."""
    path = Path(path)
    example = torch.randn(2, *shape[1:])  # batch 2: torch.export would specialise a batch of 1
    with warnings.catch_warnings(), torch.no_grad(), _no_network():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model.eval(), (example,), str(path), dynamo=True, external_data=True, verbose=False,
                              input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
            onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, location=f"{path.name}.data",
                      size_threshold=0)
    return path


class _no_network:
    """Within it, opening a network connection raises (the exports must work offline)."""

    def __enter__(self):
        self.saved = socket.socket.connect, socket.create_connection

        def refuse(*args, **kwargs):
            raise OSError("the ONNX export tried to open a network connection")
        socket.socket.connect, socket.create_connection = refuse, refuse

    def __exit__(self, *exc):
        socket.socket.connect, socket.create_connection = self.saved
