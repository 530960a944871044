"""QDQ -> integer kernels: a quantized model's convolutions and matrix products computed on its int8 values.

TVM's ONNX importer turns a QDQ model (what `onnxruntime.quantization.quantize_static` writes) into
quantize -> dequantize -> *float32* conv2d -> quantize: the library does the float work and the quantize
steps besides. This pass finds every conv2d / matmul whose input is `dequantize(x_q)` of an 8-bit tensor
and whose weight is `dequantize(W_q)` of a constant int8 tensor with zero zero-points (the symmetric
per-channel weights quantize_static writes) and computes it as

    acc[o] = sum(x_q * W_q)                      int8/uint8 x int8 -> int32 (padding filled with x's zero point)
    acc[o] += B_q[o] - z_x * sum(W_q[o])         int32: the bias when its scale is s_x * s_w, the zero-point term
    q[o]   = clamp(round(acc[o] * m[o]) + z_y)   m = s_x * s_w[o] / s_y in float32, when a quantize follows

An attention's activation x activation products become int32 sums with their zero-point terms as well.
The requantization is ONNX Runtime's (MLAS: a float32 multiplier, round half to even, the output type's
clamp; a ReLU or Clip between becomes a clamp of the quantized value), so that rounding ties fall as in
the reference the outputs are checked against; a fixed-point multiplier and shift would round
differently. Fusion puts it in the product's kernel. A product not followed by a quantize returns
float(acc) * s_x * s_w to the float graph. Whatever is not such a product stays float between the model's
own quantize / dequantize steps here; lookup_tables.py and qlinear_ops.py take the sigmoids, additions and
softmaxes next.

Runs on the imported module, before constant folding would turn the int8 weights into float32 constants.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

EIGHT_BIT = ("int8", "uint8")


@dataclass
class Quantized:
    """A `dequantize` of an 8-bit tensor: its integer source, scale and zero point (numpy when constant)."""

    source: object  # the int8/uint8 Relax expression
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    constant: Optional[np.ndarray]  # the integer values when the source is a constant (weights)


@dataclass
class IntegerProduct:
    """A rewritten product: its raw int32 accumulator and what turns it back into the float the graph had."""

    accumulator: object  # Relax var, int32
    offset: np.ndarray  # int32 added to the accumulator (the zero-point term, broadcast to the output)
    scale: np.ndarray  # float32 multiplier per output channel, broadcast to the output


def rewrite(mod):
    """The module with integer conv2d / matmul kernels wherever the QDQ pattern allows; returns
    (module, products rewritten, products left float)."""
    from tvm import relax

    mutator = _make_mutator()(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gvar] = mutator.visit_expr(func)
    mod = relax.transform.DeadCodeElimination()(mod)
    return mod, mutator.rewritten, mutator.left_float


def constant_value(expr) -> Optional[np.ndarray]:
    """The value of a Relax constant (a tensor, or a prim value such as a clip's bound) as numpy, or None."""
    import tvm

    value = expr.value if isinstance(expr, tvm.ir.expr.Constant) else None
    if hasattr(value, "numpy"):
        return value.numpy()
    value = getattr(value, "value", value)  # an IntImm / FloatImm, or already a Python number
    return np.array(value) if isinstance(value, (int, float)) else None


def is_scalar(expr) -> bool:
    """Whether `expr` is a constant of one element (a per-tensor scale or zero point)."""
    value = constant_value(expr)
    return value is not None and value.size == 1


def static_shape(expr) -> tuple:
    return tuple(int(d) for d in expr.ty.shape)


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _make_mutator():
    """The mutator class, made when TVM is loaded (a command refusing bad input must not load it)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    dequantize, conv2d = tvm.ir.Op.get("relax.dequantize"), tvm.ir.Op.get("relax.nn.conv2d")
    matmul, permute = tvm.ir.Op.get("relax.matmul"), tvm.ir.Op.get("relax.permute_dims")
    add, reshape = tvm.ir.Op.get("relax.add"), tvm.ir.Op.get("relax.reshape")
    quantize_op, relu, clip = (tvm.ir.Op.get("relax.quantize"), tvm.ir.Op.get("relax.nn.relu"),
                               tvm.ir.Op.get("relax.clip"))

    @mutator
    class IntegerKernels(PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.rewritten, self.left_float = 0, 0
            self.products = {}  # var of a rewritten product's float value -> IntegerProduct

        def producer(self, expr):
            """The call that binds `expr` in this function, or None."""
            if isinstance(expr, relax.Var):
                bound = self.lookup_binding(expr)
                return bound if isinstance(bound, relax.Call) else None
            return expr if isinstance(expr, relax.Call) else None

        def quantized(self, expr) -> Optional[Quantized]:
            call = self.producer(expr)
            if call is None or call.op != dequantize or _dtype(call.args[0]) not in EIGHT_BIT:
                return None
            scale, zero_point = constant_value(call.args[1]), constant_value(call.args[2])
            if scale is None or zero_point is None:
                return None
            return Quantized(call.args[0], scale.astype("float32"), zero_point.astype("int32"),
                             int(call.attrs.axis), constant_value(call.args[0]))

        def visit_var_binding_(self, binding):
            value = self.visit_expr(binding.value)
            product = None
            if isinstance(value, relax.Call) and value.op == conv2d:
                product = self.conv2d(value)
            elif isinstance(value, relax.Call) and value.op == matmul:
                product = self.matmul(value)
            elif isinstance(value, relax.Call) and value.op == add:
                product = self.bias(value)
            elif isinstance(value, relax.Call) and value.op == quantize_op:
                requantized = self.requantize(value)
                value = value if requantized is None else requantized
            if product is not None:
                value = relax.op.multiply(self.accumulated(product), relax.const(product.scale))
            if isinstance(binding.var, relax.DataflowVar):
                new_var = self.builder_.emit(value, _name(binding.var))
            else:
                new_var = self.builder_.emit_output(value, _name(binding.var))
            self.set_var_remap(binding.var, new_var)
            if product is not None:
                self.products[new_var] = product

        @staticmethod
        def accumulated(product):
            """float32(accumulator + offset): the int32 sum the epilogue scales."""
            total = (relax.op.add(product.accumulator, relax.const(product.offset)) if product.offset.any()
                     else product.accumulator)
            return relax.op.astype(total, "float32")

        def requantize(self, call):
            """quantize(product [, relu / clip]) -> one multiplier s_x * s_w / s_y on the int32 sum, computed in
            float32 in that order, then round, zero point and clamp: ONNX Runtime's requantization, so
            that rounding ties fall the same way. A ReLU or Clip between becomes a clamp of the quantized
            value (quantize is monotonic)."""
            source, clamp = call.args[0], None
            inner = self.producer(source)
            if inner is not None and inner.op == relu and inner.args[0] in self.products:
                source, clamp = inner.args[0], (0.0, None)
            elif inner is not None and inner.op == clip and inner.args[0] in self.products:
                bounds = [constant_value(a) for a in inner.args[1:]]
                if any(b is None for b in bounds):
                    return None
                source, clamp = inner.args[0], tuple(float(b) for b in bounds)
            product = self.products.get(source)
            scale, zero_point = constant_value(call.args[1]), constant_value(call.args[2])
            if product is None or scale is None or zero_point is None or scale.size != 1 or zero_point.size != 1:
                return None
            out_dtype = str(call.attrs.out_dtype)
            multiplier = (product.scale / np.float32(scale)).astype("float32")
            # round(acc * m) + z_y, clamped to the output type (or the ReLU / Clip levels) and cast; written out
            # rather than as relax.quantize with scale 1, whose lowering divides every element by that 1
            low, high = _range(out_dtype)
            for k, bound in enumerate(clamp or ()):
                if bound is not None:
                    level = int(np.clip(np.round(np.float32(bound) / np.float32(scale)) + int(zero_point), low, high))
                    low, high = (max(low, level), high) if k == 0 else (low, min(high, level))
            shifted = relax.op.add(relax.op.round(relax.op.multiply(self.accumulated(product), relax.const(multiplier))),
                                   relax.const(float(zero_point), "float32"))
            clamped = relax.op.minimum(relax.op.maximum(shifted, relax.const(float(low), "float32")),
                                       relax.const(float(high), "float32"))
            return relax.op.astype(clamped, out_dtype)

        # -- the products ------------------------------------------------------------------------------
        def conv2d(self, call) -> Optional[IntegerProduct]:
            data, weight, attrs = self.quantized(call.args[0]), self.quantized(call.args[1]), call.attrs
            if not self.integer_operands(data, weight, weight_axis=0):
                return None
            if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
                self.left_float += 1
                return None
            w = weight.constant
            source = data.source
            pad = [int(p) for p in attrs.padding]  # top, left, bottom, right
            if any(pad):
                source = relax.op.nn.pad(source, [0, 0, 0, 0, pad[0], pad[2], pad[1], pad[3]],
                                         pad_value=float(data.zero_point))
            accumulator = self.builder_.emit(relax.op.nn.conv2d(
                source, relax.const(w.astype("int8")), strides=attrs.strides, padding=0, dilation=attrs.dilation,
                groups=int(attrs.groups), out_dtype="int32"), "acc")
            offset, scale = _channel_terms(data, weight, w.reshape(w.shape[0], -1))
            self.rewritten += 1
            return IntegerProduct(accumulator, offset.reshape(1, -1, 1, 1), scale.reshape(1, -1, 1, 1))

        def matmul(self, call) -> Optional[IntegerProduct]:
            data = self.quantized(call.args[0])
            weight, transposed = self.quantized(call.args[1]), False
            if weight is None:  # Gemm with transB: permute_dims(dequantize(W[N, K]))
                inner = self.producer(call.args[1])
                if inner is not None and inner.op == permute and [int(a) for a in inner.attrs.axes] == [1, 0]:
                    weight, transposed = self.quantized(inner.args[0]), True
            if weight is not None and weight.constant is None:
                return self.activation_product(data, weight, transposed)
            if weight is None or weight.constant is None or weight.constant.ndim != 2:
                self.integer_operands(data, None, 0)  # counted as float when one operand was dequantized
                return None
            axis = 0 if transposed else 1  # the weight's output axis, N
            if not self.integer_operands(data, weight, weight_axis=axis):
                return None
            w = weight.constant.T if transposed else weight.constant  # [K, N]
            accumulator = self.builder_.emit(relax.op.matmul(data.source, relax.const(np.ascontiguousarray(w).astype("int8")),
                                                             out_dtype="int32"), "acc")
            offset, scale = _channel_terms(data, weight, w.T)
            self.rewritten += 1
            return IntegerProduct(accumulator, offset, scale)

        def activation_product(self, a, b, transposed: bool) -> Optional[IntegerProduct]:
            """An attention's activation x activation product, both 8-bit with per-tensor parameters:

                sum((a - z_a)(b - z_b)) = a.b - z_b rowsum(a) - z_a colsum(b) + K z_a z_b   (int32, exact)

            so its rounding is the integer product ONNX Runtime computes, not a float one."""
            if a is None or any(p.size != 1 for p in (a.scale, a.zero_point, b.scale, b.zero_point)):
                self.left_float += 1
                return None
            rhs = b.source
            if transposed:
                rank = len(b.source.ty.shape)
                rhs = relax.op.permute_dims(rhs, [*range(rank - 2), rank - 1, rank - 2])
            total = self.builder_.emit(relax.op.matmul(a.source, rhs, out_dtype="int32"), "acc")
            za, zb = int(a.zero_point), int(b.zero_point)
            depth = int(a.source.ty.shape[-1])
            if zb:
                total = relax.op.subtract(total, relax.op.multiply(
                    relax.op.sum(relax.op.astype(a.source, "int32"), axis=[-1], keepdims=True), relax.const(zb, "int32")))
            if za:
                total = relax.op.subtract(total, relax.op.multiply(
                    relax.op.sum(relax.op.astype(rhs, "int32"), axis=[-2], keepdims=True), relax.const(za, "int32")))
            if za and zb:
                total = relax.op.add(total, relax.const(depth * za * zb, "int32"))
            accumulator = self.builder_.emit(total, "acc") if (za or zb) else total
            self.rewritten += 1
            return IntegerProduct(accumulator, np.zeros((), dtype="int32"),
                                  np.array(np.float32(a.scale) * np.float32(b.scale), dtype="float32"))

        def integer_operands(self, data, weight, weight_axis: int) -> bool:
            """Both operands 8-bit with per-tensor activation and symmetric per-channel (or per-tensor)
            int8 weights; a product with one dequantized operand but not the other is counted as float."""
            if data is None and weight is None:
                return False
            usable = (data is not None and weight is not None and weight.constant is not None
                      and data.scale.size == 1 and data.zero_point.size == 1
                      and str(weight.constant.dtype) == "int8" and not weight.zero_point.any()
                      and (weight.scale.size == 1 or weight.axis == weight_axis))
            if not usable:
                self.left_float += 1
            return usable

        def bias(self, call) -> Optional[IntegerProduct]:
            """add(product, bias) with the bias quantized to int32 at the product's scale: into the accumulator."""
            lhs, rhs = call.args
            product = self.products.get(lhs)
            if product is None:
                return None
            shape_call = self.producer(rhs)
            source = shape_call.args[0] if shape_call is not None and shape_call.op == reshape else rhs
            call_b = self.producer(source)
            if call_b is None or call_b.op != dequantize or _dtype(call_b.args[0]) != "int32":
                return None
            values, scale, zero_point = (constant_value(a) for a in call_b.args)
            if values is None or scale is None or zero_point is None or zero_point.any():
                return None
            scale = np.broadcast_to(scale.astype("float32"), values.shape)
            if not np.allclose(scale, product.scale.reshape(-1), rtol=1e-6, atol=0):
                return None
            offset = product.offset + values.astype("int64").reshape(product.offset.shape)
            return IntegerProduct(product.accumulator, offset.astype("int32"), product.scale)

    return IntegerKernels


def _channel_terms(data: Quantized, weight: Quantized, by_channel: np.ndarray):
    """(offset, scale) per output channel of a product whose int8 weights are `by_channel` [channels, reduced]:
    the zero-point term -z_x * sum(W_q[o]) in int32 and the multiplier s_x * s_w[o] in float32."""
    channels = by_channel.shape[0]
    offset = -int(data.zero_point) * by_channel.astype("int64").sum(axis=1)
    scale = np.float32(data.scale) * np.broadcast_to(weight.scale, (channels,)).astype("float32")
    return offset.astype("int32"), scale.astype("float32")


def _range(dtype: str):
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _name(var) -> str:
    """A Relax var's name (TVM 0.27 names it `name`; older releases `name_hint`)."""
    return str(getattr(var, "name", None) or var.name_hint)
