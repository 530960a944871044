"""Quantized additions, products and softmaxes -> 8-bit kernels with ONNX Runtime's arithmetic (QLinearAdd,
QLinearMul, QLinearSoftmax).

A QDQ model's additions, element-wise products and softmaxes import as dequantize -> float op -> quantize. ONNX Runtime, whose run of
the same QDQ file the product is checked against, fuses each into an integer-in, integer-out kernel that
rounds differently from the float graph: a value on a rounding tie of the output scale lands one step apart,
and the difference then spreads through every later layer (on MobileViT-XS these two were the only sources
of disagreement, on AttendNeXt the DC-AC's products). This pass computes them as ONNX Runtime does on x86
(MLAS), on the 8-bit tensors:

    add      c = clamp(round(fma(a, s_a/s_c, fma(b, s_b/s_c, z_c - (s_a/s_c z_a + s_b/s_c z_b)))))     float32
    multiply c = clamp(round(float((a - z_a)(b - z_b)) (s_a s_b / s_c) + z_c))     float32, multiply then add
    softmax  e = E[x - max(x) + 255], E[k] = float32(exp((k - 255 + shift) s_x)), shift = max(0, ln(FLT_MAX/D) - 5)/s_x
             y = min(round((e floor(1/s_y)) / sum(e)) + z_y, 255)                                     float32

(the add's constant part is folded with a fused multiply-add, as the compiler does for ONNX Runtime; the
softmax's floor(1/s_y) is ONNX Runtime's approximation of 1/s_y). Only what ONNX Runtime fuses is rewritten:
an 8-bit quantize with per-tensor parameters of an op whose dequantized operands share the output's type,
whose float result feeds nothing else; a softmax over the innermost axis. When the add's first operand is a
single value along the innermost axis (broadcast), ONNX Runtime passes it as the second: so does this pass.
A kernel reads the 8-bit tensors, so the float tensors between are gone too. An addition fuses with the
element-wise steps after it but starts its own kernel (a reshape or transpose after it goes to the next one,
as it did after the float addition: the default schedules do not schedule the two together).

Runs on the imported module after integer_kernels and lookup_tables, while the scales are still constants.
"""
import math

import numpy as np

from compiler.passes.dot_products import OPAQUE, OUT_ELEMWISE_FUSABLE
from compiler.passes.integer_kernels import EIGHT_BIT, constant_value, is_scalar, static_shape

KERNELS = {"add": "quantized_add", "multiply": "quantized_multiply", "softmax": "quantized_softmax"}
# an addition or product fuses with the element-wise steps after it and starts its own kernel; a softmax stands alone
PATTERNS = {"add": OUT_ELEMWISE_FUSABLE, "multiply": OUT_ELEMWISE_FUSABLE, "softmax": OPAQUE}
FLOAT32_MAX = float(np.finfo(np.float32).max)


def add_constants(scale_a, zero_a, scale_b, zero_b, scale_c, zero_c):
    """(ratio_a, ratio_b, fixed): the float32 constants of ONNX Runtime's QLinearAdd, computed as it does."""
    f32 = np.float32
    ratio_a, ratio_b = f32(f32(scale_a) / f32(scale_c)), f32(f32(scale_b) / f32(scale_c))
    inner = np.float64(ratio_a) * np.float64(zero_a) + np.float64(f32(ratio_b * f32(zero_b)))  # one fma
    return ratio_a, ratio_b, f32(f32(zero_c) - f32(inner))


def add_reference(a, b, scale_a, zero_a, scale_b, zero_b, scale_c, zero_c, dtype):
    """QLinearAdd in numpy (a float64 product of an 8-bit value and a float32 ratio is exact, so one rounding to
    float32 after each multiply-add is the fused multiply-add's)."""
    ratio_a, ratio_b, fixed = add_constants(scale_a, zero_a, scale_b, zero_b, scale_c, zero_c)
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    inner = (b * np.float64(ratio_b) + np.float64(fixed)).astype(np.float32)
    value = (a * np.float64(ratio_a) + inner.astype(np.float64)).astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.rint(value), info.min, info.max).astype(dtype)


def multiply_ratio(scale_a, scale_b, scale_c) -> np.float32:
    """s_a s_b / s_c in float32, in ONNX Runtime's order."""
    return np.float32(np.float32(np.float32(scale_a) * np.float32(scale_b)) / np.float32(scale_c))


def softmax_table(scale_x, depth: int) -> np.ndarray:
    """E[k], k = x - max(x) + 255: ONNX Runtime's QLinearSoftmax exponentials (in double, stored as float32)."""
    shift = max(0.0, math.log(FLOAT32_MAX / depth) - 5) / float(np.float32(scale_x))
    return np.array([math.exp((k - 255 + shift) * float(np.float32(scale_x))) for k in range(256)], dtype=np.float32)


def softmax_factor(scale_y) -> np.float32:
    """floor(1 / s_y) in float32: the multiplier ONNX Runtime uses instead of 1 / s_y."""
    return np.float32(np.floor(np.float32(1.0) / np.float32(scale_y)))


def rewrite(mod):
    """(module, {"add": count, "multiply": count, "softmax": count} rewritten)."""
    from tvm import relax

    mutator = _make_mutator()(mod)
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mutator.find(func)
    counts = {kind: sum(1 for found in mutator.found.values() if found[0] == kind)
              for kind in KERNELS}
    if not mutator.found:
        return mod, counts
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get()), counts


def _varies_innermost(shape, out_shape) -> bool:
    """Whether an operand broadcast to `out_shape` changes along the output's innermost axis."""
    return bool(shape) and shape[-1] == out_shape[-1] > 1


def _quantized_add(a, b, ratio_a, ratio_b, fixed, dtype):
    """c[i] = clamp(round(fma(a[i], ratio_a, fma(b[i], ratio_b, fixed)))), a and b broadcast to the output."""
    import tvm
    import tvm.tirx.op
    from tvm import te

    out_shape = _broadcast_shape(a, b)
    fma, f32 = tvm.tirx.op.fma, "float32"

    def element(*index):
        value = fma(_read(a, index, f32), tvm.tirx.const(ratio_a, f32),
                    fma(_read(b, index, f32), tvm.tirx.const(ratio_b, f32), tvm.tirx.const(fixed, f32)))
        return _saturate(value, dtype)

    return te.compute(out_shape, element, name=KERNELS["add"])


def _quantized_multiply(a, b, zero_a, zero_b, ratio, zero_c, dtype):
    """c[i] = clamp(round(float32(float32(p) ratio) + z_c)), p = (a[i] - z_a)(b[i] - z_b) in int32. The product
    by the ratio is taken in float64 (exact) and rounded to float32, so that LLVM cannot contract it with the
    addition into a fused multiply-add: ONNX Runtime's kernel rounds after each."""
    import tvm
    from tvm import te

    out_shape = _broadcast_shape(a, b)
    i32, f32 = "int32", "float32"

    def element(*index):
        p = ((_read(a, index, i32) - tvm.tirx.const(zero_a, i32))
             * (_read(b, index, i32) - tvm.tirx.const(zero_b, i32)))
        scaled = (p.astype(f32).astype("float64") * tvm.tirx.const(float(ratio), "float64")).astype(f32)
        value = scaled + tvm.tirx.const(float(zero_c), f32)
        return _saturate(value, dtype)

    return te.compute(out_shape, element, name=KERNELS["multiply"])


def _saturate(value, dtype: str):
    """round(value) half to even, clamped to `dtype`'s range, as that type."""
    import tvm

    info = np.iinfo(dtype)
    return tvm.tirx.max(tvm.tirx.min(tvm.tirx.round(value), tvm.tirx.const(float(info.max), "float32")),
                        tvm.tirx.const(float(info.min), "float32")).astype(dtype)


def _broadcast_shape(a, b):
    """The shape `a` and `b` broadcast to, from the operands' own extents (int64, as the rest of the graph
    indexes): on each axis the one that is not 1."""
    rank = max(len(a.shape), len(b.shape))
    aligned_a, aligned_b = ([None] * (rank - len(t.shape)) + list(t.shape) for t in (a, b))
    return [y if x is None or (y is not None and int(x) == 1) else x for x, y in zip(aligned_a, aligned_b)]


def _read(tensor, index, dtype: str):
    """tensor[index] broadcast from the output's `index`, cast to `dtype`."""
    offset = len(index) - len(tensor.shape)
    return tensor(*[0 if int(d) == 1 else index[offset + k] for k, d in enumerate(tensor.shape)]).astype(dtype)


def _quantized_softmax(x, table, factor, zero_point, dtype):
    """ONNX Runtime's QLinearSoftmax along the innermost axis: table exponentials, a float32 sum, a division."""
    import tvm
    from tvm import te

    depth, rows = x.shape[-1], x.shape[:-1]  # int64 extents, as the rest of the graph indexes
    i32, f32 = "int32", "float32"
    k = te.reduce_axis((0, depth), name="k")
    peak = te.compute(rows, lambda *r: te.max(x[(*r, k)], axis=k), name="row_max")

    def exponential(row, value):
        return table[value.astype(i32) - peak[row].astype(i32) + 255]

    j = te.reduce_axis((0, depth), name="j")
    total = te.compute(rows, lambda *r: te.sum(exponential(r, x[(*r, j)]), axis=j), name="row_sum")

    def element(*index):
        share = (exponential(index[:-1], x[index]) * tvm.tirx.const(float(factor), f32)) / total[index[:-1]]
        level = tvm.tirx.round(share).astype(i32) + tvm.tirx.const(int(zero_point), i32)
        return tvm.tirx.min(level, tvm.tirx.const(255, i32)).astype(dtype)  # int8 wraps as ONNX Runtime's cast

    return te.compute(x.shape, element, name=KERNELS["softmax"])


def _make_mutator():
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    quantize, dequantize = tvm.ir.Op.get("relax.quantize"), tvm.ir.Op.get("relax.dequantize")
    add, multiply, softmax = (tvm.ir.Op.get("relax.add"), tvm.ir.Op.get("relax.multiply"),
                              tvm.ir.Op.get("relax.nn.softmax"))

    @mutator
    class QLinearOps(PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.bound = {}  # var -> its value, as imported
            self.found = {}  # var bound to a quantize that a kernel replaces -> (kind, te function, its arguments)

        def find(self, func):
            self.bound.update({binding.var: binding.value for block in func.body.blocks for binding in block.bindings})
            uses = {}
            for block in func.body.blocks:
                for binding in block.bindings:
                    for var in relax.analysis.free_vars(binding.value):
                        uses[var] = uses.get(var, 0) + 1
            for var in relax.analysis.free_vars(func.body.body):
                uses[var] = uses.get(var, 0) + 1
            for block in func.body.blocks:
                for binding in block.bindings:
                    found = self.match(binding.value, uses)
                    if found is not None:
                        self.found[binding.var] = found

        def dequantized(self, expr):
            """(8-bit source, scale, zero point) of a per-tensor dequantize, else None."""
            call = self.bound.get(expr) if isinstance(expr, relax.Var) else expr
            if (not isinstance(call, relax.Call) or call.op != dequantize or str(call.args[0].ty.dtype) not in EIGHT_BIT
                    or not all(is_scalar(arg) for arg in call.args[1:])):
                return None
            return call.args[0], float(constant_value(call.args[1])), int(constant_value(call.args[2]))

        def match(self, value, uses):
            """(kind, ...) when `value` quantizes an add, multiply or softmax ONNX Runtime fuses, else None."""
            if (not isinstance(value, relax.Call) or value.op != quantize or not all(is_scalar(a) for a in value.args[1:])
                    or str(value.attrs.out_dtype) not in EIGHT_BIT):
                return None
            result = value.args[0]
            call = self.bound.get(result) if isinstance(result, relax.Var) else None
            if not isinstance(call, relax.Call) or uses.get(result, 0) != 1:
                return None
            dtype = str(value.attrs.out_dtype)
            operands = [self.dequantized(arg) for arg in call.args]
            if any(o is None or str(o[0].ty.dtype) != dtype for o in operands):
                return None
            scale, zero_point = float(constant_value(value.args[1])), int(constant_value(value.args[2]))
            if call.op == add:
                first, second = operands
                out_shape = static_shape(call)
                if not _varies_innermost(static_shape(first[0]), out_shape) and _varies_innermost(static_shape(second[0]), out_shape):
                    first, second = second, first  # ONNX Runtime passes a broadcast first operand second
                constants = add_constants(first[1], first[2], second[1], second[2], scale, zero_point)
                return "add", _quantized_add, (first[0], second[0], *(float(c) for c in constants), dtype)
            if call.op == multiply:
                (a, scale_a, zero_a), (b, scale_b, zero_b) = operands
                ratio = float(multiply_ratio(scale_a, scale_b, scale))
                return "multiply", _quantized_multiply, (a, b, zero_a, zero_b, ratio, zero_point, dtype)
            rank = len(static_shape(call))
            if call.op == softmax and int(call.attrs.axis) in (-1, rank - 1):
                (x, scale_x, _), = operands
                table = relax.const(softmax_table(scale_x, static_shape(x)[-1]))
                return "softmax", _quantized_softmax, (x, table, float(softmax_factor(scale)), zero_point, dtype)
            return None

        def visit_var_binding_(self, binding):
            value = self.visit_expr(binding.value)
            found = self.found.get(binding.var)
            if found is not None:
                kind, compute, args = found
                value = self.builder_.call_te(
                    compute, *[self.visit_expr(a) if isinstance(a, relax.Expr) else a for a in args],
                    primfunc_name_hint=KERNELS[kind], primfunc_attrs={"op_pattern": PATTERNS[kind]})
            emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
            self.set_var_remap(binding.var, emit(value, str(binding.var.name)))

    return QLinearOps
