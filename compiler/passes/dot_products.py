"""int8 products in the layout of the CPU's dot-product instruction, so that its tensor intrinsic applies.

AVX-512 VNNI's `vpdpbusd` multiplies 4 consecutive uint8 activations by 4 consecutive int8 weights of each
of 16 output channels and adds the sums to 16 int32 lanes. MetaSchedule tensorizes a block with it
(schedules/intrinsics.py) only when the block reads both operands along the reduction axis, contiguously:

    C[m, n] = sum_k A[m, k] * B[n // 16, k // 4, n % 16, k % 4]     A uint8 [M, K], B int8 (constant), C int32

An NCHW 1x1 convolution reads its activation along the pixels instead, and Relax's matmul reads its
weight as [K, N]: neither is tensorized, and LLVM widens them to 16-bit products (`vpmaddwd`). On a
target whose intrinsic builds (`dot_product_target`), for a module with 8-bit convolutions, this pass
  1. converts the convolutions to NHWC (Relax's ConvertLayout: the element-wise requantization steps
     between them follow, and transposes remain only where an operator keeps NCHW), so that a 1x1
     convolution's pixels are already rows of channels;
  2. writes every 1x1 stride-1 NHWC convolution and every matrix product with a constant weight, uint8 x
     int8, as the product above: weights packed at compile time in 16 x 4 tiles of 64 contiguous bytes,
     zero-padded to whole tiles (the activation's channels padded to 4, the result sliced to N).
Elsewhere the products stay as integer_kernels wrote them.
"""
from typing import Optional

import numpy as np

K_GROUP, N_GROUP = 4, 16  # the intrinsic's reduction group and output lanes


def dot_product_target(target) -> bool:
    """Whether `target` is an x86 CPU with AVX-512 VNNI (the intrinsic schedules/intrinsics.py registers)."""
    import tvm

    try:
        features = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(target)}
    except Exception:  # noqa: BLE001 - not an LLVM CPU target
        return False
    return "avx512vnni" in features and str(target.attrs.get("mtriple", "") or "x86_64").startswith("x86")


def passes(target) -> list:
    """The pass for `target`, or none."""
    if target is None or not dot_product_target(target):
        return []
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="DotProductLayout")
    def dot_product_layout(mod, _ctx):
        return rewrite(mod)[0]
    return [dot_product_layout]


def _nt_product(a, b):
    """C[m, n] = sum_k int32(A[m, k]) * int32(B[n, k]), B packed [N/16, K/4, 16, 4]: the block the
    intrinsic's description matches, reading each 16 x 4 weight tile as 64 contiguous bytes."""
    from tvm import te

    k = te.reduce_axis((0, a.shape[1]), "k")
    return te.compute((a.shape[0], b.shape[0] * N_GROUP),
                      lambda m, n: te.sum(a[m, k].astype("int32")
                                          * b[n // N_GROUP, k // K_GROUP, n % N_GROUP, k % K_GROUP].astype("int32"),
                                          axis=k),
                      name="dot_product")


def rewrite(mod):
    """(module, products rewritten)."""
    from tvm import relax

    if _has_eight_bit_convolution(mod):
        mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
        mod = relax.transform.FoldConstant()(mod)  # the weights' layout transforms, on the constants
    mutator = _make_mutator()(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get()), mutator.rewritten


def _has_eight_bit_convolution(mod) -> bool:
    import tvm
    from tvm import relax

    conv2d, found = tvm.ir.Op.get("relax.nn.conv2d"), []

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op == conv2d and str(expr.args[0].ty.dtype) in ("uint8", "int8"):
            found.append(expr)
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def _constant(expr) -> Optional[np.ndarray]:
    import tvm

    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


def _packed(w: np.ndarray) -> np.ndarray:
    """[N, K] int8 weights, zero-padded to whole groups, as [N/16, K/4, 16, 4] tiles of 64 bytes."""
    n, k = w.shape
    w = np.pad(w, ((0, -n % N_GROUP), (0, -k % K_GROUP))).astype("int8")
    tiles = w.reshape(w.shape[0] // N_GROUP, N_GROUP, w.shape[1] // K_GROUP, K_GROUP)
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3))


def _make_mutator():
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv2d, matmul = tvm.ir.Op.get("relax.nn.conv2d"), tvm.ir.Op.get("relax.matmul")

    @mutator
    class DotProducts(PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.rewritten = 0

        def visit_call_(self, call):
            call = super().visit_call_(call)
            rewritten = None
            if call.op == conv2d:
                rewritten = self.conv2d(call)
            elif call.op == matmul:
                rewritten = self.matmul(call)
            return call if rewritten is None else rewritten

        def operands(self, call) -> Optional[np.ndarray]:
            """The constant int8 weight of a uint8 x int8 -> int32 product, or None."""
            data, weight = call.args
            w = _constant(weight)
            if (w is None or str(w.dtype) != "int8" or str(data.ty.dtype) != "uint8"
                    or str(call.attrs.out_dtype) != "int32"):
                return None
            return w

        def product(self, rows, weight: np.ndarray):
            """rows: uint8 [M, K]; weight: int8 [N, K] -> int32 [M, N]."""
            rows = self.builder_.emit(rows, "rows")
            k = int(rows.ty.shape[1])
            if -k % K_GROUP:
                rows = relax.op.nn.pad(rows, [0, 0, 0, -k % K_GROUP], pad_value=0.0)
            packed = _packed(weight)
            out = self.builder_.emit_te(_nt_product, rows, relax.const(packed), primfunc_name_hint="dot_product")
            if packed.shape[0] * N_GROUP != weight.shape[0]:
                out = relax.op.strided_slice(out, axes=[1], begin=[0], end=[weight.shape[0]])
            self.rewritten += 1
            return out

        def conv2d(self, call):
            """A 1x1 stride-1 NHWC convolution: the product of its pixel rows, reshaped back."""
            w, attrs = self.operands(call), call.attrs
            if (w is None or attrs.data_layout != "NHWC" or attrs.kernel_layout != "OHWI" or w.shape[1:3] != (1, 1)
                    or int(attrs.groups) != 1 or any(int(s) != 1 for s in attrs.strides)
                    or any(int(p) for p in attrs.padding) or str(attrs.out_layout) != "NHWC"):
                return None
            batch, height, width, channels = (int(s) for s in call.args[0].ty.shape)
            out = self.product(relax.op.reshape(call.args[0], [batch * height * width, channels]), w[:, 0, 0, :])
            return relax.op.reshape(out, [batch, height, width, w.shape[0]])

        def matmul(self, call):
            """A product with a constant [K, N] weight, its leading axes as rows."""
            w = self.operands(call)
            if w is None or w.ndim != 2:
                return None
            shape = [int(s) for s in call.args[0].ty.shape]
            rows = relax.op.reshape(call.args[0], [int(np.prod(shape[:-1])), shape[-1]])
            out = self.product(rows, np.ascontiguousarray(w.T))
            return relax.op.reshape(out, [*shape[:-1], w.shape[1]])

    return DotProducts
