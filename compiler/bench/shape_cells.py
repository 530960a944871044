"""The cells of bench/shape_sweep.py: single layers and small blocks over the kernel classes the default
schedules cover (schedules/defaults.py), at the shapes of published backbones, so that a weak class shows as
its own row instead of hiding in a model's total.

Convolutions of every window (1x1 to 9x9), stride 1 and 2, dense, depthwise and grouped (`gw8`: 8 channels per
group, RegNet's group width), on channel counts on and off multiples of 4, 8 and 16 and on odd maps (15, 57);
dense layers at transformer token counts (1, 49, 196, 197) and batched products of two activations (attention);
pools and means over pixels or tokens; element-wise epilogues; channel splits and concatenations; layer norms;
softmaxes. A cell's name gives its input map, not its output's.

Each cell is one ONNX model: opset 17, batch 1, NCHW float32, seeded parameters, and a single input: ONNX
Runtime's timer (compiler/bench/measure.py) and the emulated Pi's counting guest (compiler/device/count_guest.py)
feed one, so a second activation (the keys of an attention product, a residual) is derived from it in the graph.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import UserError

OPSET = 17  # ReduceMean's axes still an attribute, LayerNormalization already an operator


@dataclass(frozen=True)
class Cell:
    kind: str     # the operator family: a key of BUILDERS
    name: str     # the shape, as --cells filters it (no commas)
    shape: tuple  # the input's
    params: dict = field(default_factory=dict)  # the family builder's arguments


class _Graph:
    """One cell's nodes and seeded parameters, tensors named in order of creation."""

    def __init__(self):
        self.nodes, self.initializers = [], []
        self.rng = np.random.default_rng(0)

    def constant(self, array) -> str:
        name = f"p{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, shape, fan_in: int) -> str:
        """Uniform in +-1/sqrt(fan_in): outputs stay of the input's magnitude, so --verify's relative error holds."""
        return self.constant((self.rng.uniform(-1, 1, shape) / np.sqrt(fan_in)).astype("float32"))

    def node(self, op: str, inputs: list, outputs: int = 1, **attributes):
        """The name of the node's output (a list of names when it has several)."""
        names = [f"t{len(self.nodes)}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, **attributes))
        return names[0] if outputs == 1 else names


# --------------------------------------------------------------------------------------------------------
# One builder per operator family: (graph, input name, input shape, **params) -> [(output name, shape)]


def _conv(g, x, shape, out, kernel, stride=1, groups=1):
    """Conv with a bias (batch norm folded, as exports leave it) and padding kernel // 2."""
    n, channels, height, width = shape
    fan_in = channels // groups * kernel * kernel
    y = g.node("Conv", [x, g.weight((out, channels // groups, kernel, kernel), fan_in), g.weight((out,), fan_in)],
               kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[kernel // 2] * 4, group=groups)
    size = [(d + 2 * (kernel // 2) - kernel) // stride + 1 for d in (height, width)]
    return [(y, (n, out, *size))]


def _dense(g, x, shape, out, gemm=False):
    """A linear layer as PyTorch exports it: Gemm (weight transposed, bias) on a matrix, MatMul then Add on tokens."""
    fan_in = shape[-1]
    bias = g.weight((out,), fan_in)
    if gemm:
        y = g.node("Gemm", [x, g.weight((out, fan_in), fan_in), bias], transB=1)
    else:
        y = g.node("Add", [g.node("MatMul", [x, g.weight((fan_in, out), fan_in)]), bias])
    return [(y, (*shape[:-1], out))]


def _matmul(g, x, shape, columns=None):
    """A batched product of two activations: the input times its own transpose (attention scores), or times its
    first `columns` columns (probabilities times values)."""
    *batch, rows, _ = shape
    if columns is None:
        other, columns = g.node("Transpose", [x], perm=[*range(len(batch)), len(shape) - 1, len(shape) - 2]), rows
    else:
        other = g.node("Slice", [x, g.constant([0]), g.constant([columns]), g.constant([len(shape) - 1])])
    return [(g.node("MatMul", [x, other]), (*batch, rows, columns))]


def _pool(g, x, shape, op, kernel=None, stride=1, pad=0):
    n, channels, height, width = shape
    if op == "GlobalAveragePool":
        return [(g.node(op, [x]), (n, channels, 1, 1))]
    y = g.node(op, [x], kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
    return [(y, (n, channels, *[(d + 2 * pad - kernel) // stride + 1 for d in (height, width)]))]


def _reduce(g, x, shape, axes):
    kept = tuple(1 if axis in axes else d for axis, d in enumerate(shape))
    return [(g.node("ReduceMean", [x], axes=list(axes), keepdims=1), kept)]


STEP_ATTRIBUTES = {"ReduceMean": {"axes": [2, 3], "keepdims": 1}}  # a squeeze-and-excite gate's mean


def _eltwise(g, x, shape, steps, conv=None):
    """A chain of element-wise steps after a convolution (`conv`: its parameters; the chain is its epilogue) or on
    the input. A step is (op,) on the chain so far, or (op, operand) with the operand "input" (the cell's input),
    "start" (the chain's first tensor) or "channels" (a seeded per-channel constant)."""
    start, start_shape = _conv(g, x, shape, **conv)[0] if conv else (x, shape)
    operands = {"input": x, "start": start}
    y = start
    for op, *operand in steps:
        if operand and operand[0] == "channels":
            operands["channels"] = g.weight((1, start_shape[1], 1, 1), 1)
        y = g.node(op, [y, *(operands[o] for o in operand)], **STEP_ATTRIBUTES.get(op, {}))
    return [(y, start_shape)]


def _channels(g, x, shape, parts=1, order=None):
    """Split the channels into `parts` equal parts (the outputs), or concatenate the parts in `order` (an index may
    repeat: (0, 0) is the input beside itself)."""
    n, channels, height, width = shape
    pieces = g.node("Split", [x], outputs=parts, axis=1) if parts > 1 else [x]
    if order is None:
        return [(piece, (n, channels // parts, height, width)) for piece in pieces]
    return [(g.node("Concat", [pieces[k] for k in order], axis=1), (n, channels // parts * len(order), height, width))]


def _layer_norm(g, x, shape):
    scale = g.constant(g.rng.uniform(0.5, 1.5, shape[-1]).astype("float32"))
    return [(g.node("LayerNormalization", [x, scale, g.weight((shape[-1],), 1)], axis=-1, epsilon=1e-6), shape)]


def _softmax(g, x, shape):
    return [(g.node("Softmax", [x], axis=-1), shape)]


BUILDERS = {"conv": _conv, "dense": _dense, "matmul": _matmul, "pool": _pool, "reduce": _reduce,
            "eltwise": _eltwise, "split/concat": _channels, "norm": _layer_norm, "softmax": _softmax}
KINDS = tuple(BUILDERS)


# --------------------------------------------------------------------------------------------------------
# The cells


def _conv_cell(kernel: int, channels: int, size: int, out=None, stride=1, group_width=None) -> Cell:
    """A convolution on a size x size map, named by its window, stride, grouping and channels; group_width None
    is a dense convolution, 1 a depthwise one."""
    window = f"{kernel}x{kernel}" + (f" s{stride}" if stride > 1 else "")
    name = (f"depthwise {window} {channels}" if group_width == 1 else
            f"grouped {window} gw{group_width} {channels}" if group_width else f"conv {window} {channels}->{out}")
    groups = channels // group_width if group_width else 1
    return Cell("conv", f"{name} {size}x{size}", (1, channels, size, size),
                {"out": out or channels, "kernel": kernel, "stride": stride, "groups": groups})


CELLS = [
    # pointwise: inverted residuals' expansions and projections, ShuffleNetV2's 58 (no multiple of 4), RegNet's
    # widths and strided shortcut, a classifier head's
    _conv_cell(1, 24, 56, out=144), _conv_cell(1, 144, 56, out=24), _conv_cell(1, 40, 28, out=240),
    _conv_cell(1, 58, 28, out=58), _conv_cell(1, 152, 14, out=152), _conv_cell(1, 56, 28, out=152, stride=2),
    _conv_cell(1, 368, 7, out=368), _conv_cell(1, 320, 7, out=1280),
    # dense windows: stems on 3 channels, ResNet-18's stages
    _conv_cell(3, 3, 224, out=24, stride=2), _conv_cell(7, 3, 224, out=64, stride=2), _conv_cell(3, 64, 56, out=64),
    _conv_cell(3, 64, 56, out=128, stride=2), _conv_cell(3, 128, 28, out=128), _conv_cell(3, 512, 7, out=512),
    # depthwise: MobileNets, EfficientNet (5x5), ConvNeXt (7x7), MixNet (9x9), odd maps
    _conv_cell(3, 144, 56, group_width=1), _conv_cell(3, 144, 56, stride=2, group_width=1),
    _conv_cell(3, 96, 112, stride=2, group_width=1), _conv_cell(3, 116, 15, group_width=1),
    _conv_cell(5, 240, 28, group_width=1), _conv_cell(5, 72, 57, stride=2, group_width=1),
    _conv_cell(7, 40, 56, group_width=1), _conv_cell(7, 320, 7, group_width=1), _conv_cell(9, 120, 14, group_width=1),
    # grouped 3x3: RegNetX-200MF's 8-channel groups at its four widths; ResNeXt's 4, RegNetX-400MF's 16, -600MF's 24
    _conv_cell(3, 24, 56, group_width=8), _conv_cell(3, 56, 56, stride=2, group_width=8),
    _conv_cell(3, 56, 28, group_width=8), _conv_cell(3, 152, 14, group_width=8), _conv_cell(3, 368, 7, group_width=8),
    _conv_cell(3, 128, 56, group_width=4), _conv_cell(3, 160, 14, group_width=16), _conv_cell(3, 96, 28, group_width=24),
    # a vision transformer's linear layers (DeiT-tiny: 192 wide, 197 tokens), a 7x7 window's, a classifier
    Cell("dense", "linear 197x192->576", (1, 197, 192), {"out": 576}),
    Cell("dense", "linear 197x192->768", (1, 197, 192), {"out": 768}),
    Cell("dense", "linear 197x768->192", (1, 197, 768), {"out": 192}),
    Cell("dense", "linear 196x384->384", (1, 196, 384), {"out": 384}),
    Cell("dense", "gemm 49x768->768", (49, 768), {"out": 768, "gemm": True}),
    Cell("dense", "gemm 1x1280->1000", (1, 1280), {"out": 1000, "gemm": True}),
    # attention over 197 tokens, 3 heads of 64
    Cell("matmul", "scores 3x197x64 @ 3x64x197", (1, 3, 197, 64)),
    Cell("matmul", "values 3x197x197 @ 3x197x64", (1, 3, 197, 197), {"columns": 64}),
    Cell("pool", "maxpool 3x3 s2 64 112x112", (1, 64, 112, 112), {"op": "MaxPool", "kernel": 3, "stride": 2, "pad": 1}),
    Cell("pool", "avgpool 2x2 s2 128 56x56", (1, 128, 56, 56), {"op": "AveragePool", "kernel": 2, "stride": 2}),
    Cell("pool", "global avgpool 1280 7x7", (1, 1280, 7, 7), {"op": "GlobalAveragePool"}),
    Cell("pool", "global avgpool 240 28x28", (1, 240, 28, 28), {"op": "GlobalAveragePool"}),
    Cell("reduce", "mean pixels 144 56x56", (1, 144, 56, 56), {"axes": (2, 3)}),
    Cell("reduce", "mean pixels 672 14x14", (1, 672, 14, 14), {"axes": (2, 3)}),
    Cell("reduce", "mean tokens 196x384", (1, 196, 384), {"axes": (1,)}),
    # epilogues beside their bare convolutions above (EfficientNet's SiLU, ResNet-18's residual), and alone
    Cell("eltwise", "conv 1x1 40->240 28x28 + sigmoid + mul", (1, 40, 28, 28),
         {"conv": {"out": 240, "kernel": 1}, "steps": (("Sigmoid",), ("Mul", "start"))}),
    Cell("eltwise", "conv 3x3 64->64 56x56 + add input + relu", (1, 64, 56, 56),
         {"conv": {"out": 64, "kernel": 3}, "steps": (("Add", "input"), ("Relu",))}),
    Cell("eltwise", "hardswish 120 28x28", (1, 120, 28, 28), {"steps": (("HardSwish",),)}),
    Cell("eltwise", "add bias + relu 144 56x56", (1, 144, 56, 56), {"steps": (("Add", "channels"), ("Relu",))}),
    Cell("eltwise", "se gate 240 28x28 mean + sigmoid + mul", (1, 240, 28, 28),
         {"steps": (("ReduceMean",), ("Sigmoid",), ("Mul", "start"))}),
    # ShuffleNetV2's channel split and shuffle, a dense block's concatenation
    Cell("split/concat", "split in 2 116 28x28", (1, 116, 28, 28), {"parts": 2}),
    Cell("split/concat", "split + swap + concat 116 28x28", (1, 116, 28, 28), {"parts": 2, "order": (1, 0)}),
    Cell("split/concat", "concat 2 of 40 56x56", (1, 40, 56, 56), {"order": (0, 0)}),
    # ConvNeXt-atto's first and last stages (channels last), DeiT-tiny's tokens
    Cell("norm", "layer norm 3136 rows of 40", (1, 56, 56, 40)),
    Cell("norm", "layer norm 197 rows of 192", (1, 197, 192)),
    Cell("norm", "layer norm 49 rows of 320", (1, 7, 7, 320)),
    Cell("softmax", "softmax 3x64 rows of 64", (1, 3, 64, 64)),
    Cell("softmax", "softmax 3x197 rows of 197", (1, 3, 197, 197)),
]


def model(cell: Cell) -> onnx.ModelProto:
    """The cell's ONNX model; its outputs declare the shapes the cell's parameters give."""
    g = _Graph()
    outputs = BUILDERS[cell.kind](g, "x", cell.shape, **cell.params)
    graph = helper.make_graph(g.nodes, "cell", [helper.make_tensor_value_info("x", TensorProto.FLOAT, cell.shape)],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
                              g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def build(cell: Cell, path: Path) -> Path:
    onnx.save(model(cell), str(path))
    return path


def select(spec) -> list:
    """The cells a comma list names, in table order: a term is a kind (exactly) or part of a name (any case).
    None or empty: every cell."""
    terms = [t.strip().lower() for t in (spec or "").split(",") if t.strip()]
    if not terms:
        return list(CELLS)

    def hits(term):
        return [c for c in CELLS if term == c.kind] or [c for c in CELLS if term in c.name.lower()]
    unknown = [t for t in terms if not hits(t)]
    if unknown:
        raise UserError(f"--cells {', '.join(unknown)}: matches no cell; give kinds ({', '.join(KINDS)}) or parts of "
                        "cell names (bench/shape_sweep.py --list)")
    chosen = {c.name for t in terms for c in hits(t)}
    return [c for c in CELLS if c.name in chosen]
