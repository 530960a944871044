"""int8 products in the layout of the CPU's multiply-add instructions, so that a tensor intrinsic computes them.

AVX-512 VNNI's `vpdpbusd` multiplies 4 consecutive uint8 activations by 4 consecutive int8 weights of each
of 16 output channels and adds the sums to 16 int32 lanes; Arm's `sdot` does the same on int8 activations
for 4 channels. MetaSchedule tensorizes a block with them (schedules/intrinsics.py) only when the block
reads both operands along the reduction axis, contiguously:

    C[..., n] = sum_k A[..., k] * B[n // 16, k // 4, n % 16, k % 4]    A 8-bit [..., K], B int8 constant, C int32

An Arm CPU without `sdot` (Cortex-A72) multiplies 16 int8 activations by 16 int8 weights of one channel with
`smull`, `smlal2` and `sadalp` into 4 int32 partial sums (schedules/intrinsics.py's PAIR_SUMS), added up once
per output after the whole reduction (schedules/pair_sums.py schedules it):

    P[..., n, j] = sum_{k // 16, r} A[..., k] * W[n, k]    k = 16 (k // 16) + pair_byte(j, r);  C = sum_j P

The form each target takes is a row of FORMS. An NCHW 1x1 convolution reads its activation along the pixels
instead, and Relax's matmul reads its weight as [K, N]: neither is tensorized, and LLVM widens them to 16-bit
or 32-bit products. On a target with a form, for a module with 8-bit convolutions, this pass
  1. converts the convolutions to NHWC (Relax's ConvertLayout: the element-wise requantization steps
     between them follow, and transposes remain only where an operator keeps NCHW), so that a 1x1
     convolution reads its channels contiguously; not when a convolution is grouped (`_nhwc_pays`);
  2. writes every 1x1 stride-1 convolution and every matrix product with a constant weight, on the
     target's activation type x int8, in the target's form: weights packed at compile time (VNNI and sdot:
     16 x 4 tiles of 64 contiguous bytes, an aligned 4 x 4 part of one being sdot's 16 contiguous bytes;
     pair sums: rows of K bytes), zero-padded to whole groups (the activation's channels padded to the
     form's k_group, the result sliced to N). In a model that kept NCHW, a 1x1 convolution runs on the
     NHWC view of its input, the element-wise steps after it (its requantization) on that view too, and
     the result goes back to NCHW once, where an operator other than these reads it;
  3. in the VNNI and pair-sums forms, also writes an NCHW convolution with a window (3x3, strided, grouped;
     not depthwise) as the product of its windows: its input copied into rows of Cg x KH x KW bytes per group
     (`_windows`, im2col, a kernel of its own), times each group's weights (VNNI: each group's channels
     padded to a tile of 16); the rows of group g are [G, H, W, C/G], whose requantization runs on them
     before the result goes back to NCHW.
Elsewhere the products stay as integer_kernels wrote them.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from compiler.passes import lookup_tables
from compiler.passes.integer_kernels import constant_value

K_GROUP, N_GROUP = 4, 16  # the dot-product intrinsics' reduction group and output lanes
OUT_ELEMWISE_FUSABLE, OPAQUE = 4, 8  # tvm.relax's OpPatternKind.kOutEWiseFusable and kOpaque


@dataclass(frozen=True)
class ProductForm:
    """How one family of instructions wants an 8-bit product written."""

    name: str  # the product's block (and kernel) name
    activation: str  # the activation type the instruction multiplies
    k_group: int  # activation channels are zero-padded to a multiple of this
    n_group: int  # output channels the packed weight is padded to a multiple of
    weight_min: int  # the smallest weight the instruction sums exactly (pair sums: two products in 16 bits)
    windows: bool  # whether convolutions with a window (3x3, strided, grouped) are written as products of windows


FORMS = {
    "vnni": ProductForm("dot_product", "uint8", K_GROUP, N_GROUP, -128, windows=True),
    "sdot": ProductForm("dot_product", "int8", K_GROUP, N_GROUP, -128, windows=False),
    "pair_sums": ProductForm("pair_sums", "int8", 16, 1, -127, windows=True),
}
MIN_WINDOW_BYTES = 24  # a shorter window would be mostly padding (depthwise convolutions are left out anyway)


def product_form(target) -> Optional[ProductForm]:
    """The form of `target`'s 8-bit products, or None (an x86 CPU without AVX-512 VNNI: LLVM's own
    `vpmaddwd` products stay): VNNI's `vpdpbusd` on uint8 activations, `sdot` on int8 with the Arm dot
    product extension (A76, Neoverse N1/V1, Orin), NEON pair sums on int8 on any other aarch64 CPU (A72)."""
    import tvm

    try:
        features = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(target)}
    except Exception:  # noqa: BLE001 - not an LLVM CPU target
        return None
    triple = str(target.attrs.get("mtriple", "") or tvm.target.codegen.llvm_get_system_triple())
    if triple.startswith("aarch64"):
        return FORMS["sdot" if "dotprod" in features else "pair_sums"]
    return FORMS["vnni"] if "avx512vnni" in features else None


def activation_type(target) -> Optional[str]:
    """The 8-bit activation type whose products `target`'s form computes, or None."""
    form = product_form(target)
    return form.activation if form is not None else None


def passes(target) -> list:
    """The pass for `target`, or none."""
    form = None if target is None else product_form(target)
    if form is None:
        return []
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="DotProductLayout")
    def dot_product_layout(mod, _ctx):
        return rewrite(mod, form)[0]
    return [dot_product_layout]


def _nt_product(a, b):
    """C[..., n] = sum_k int32(A[..., k]) * int32(B[n // 16, k // 4, n % 16, k % 4]), B packed [N/16, K/4, 16, 4]:
    the block the intrinsic's description matches, reading each 16 x 4 weight tile as 64 contiguous bytes. A
    keeps its leading axes (pixels, tokens): a reshape to rows between the product and its fused requantization
    makes index expressions whose constants overflow int32 in scheduling. A weight of rank 5 is per group:
    B[g, ...] for the rows A[g, ...]."""
    from tvm import te

    k = te.reduce_axis((0, a.shape[-1]), "k")

    def element(*index):
        *rows, n = index
        group = (rows[0],) if len(b.shape) == 5 else ()
        weight = b[(*group, n // N_GROUP, k // K_GROUP, n % N_GROUP, k % K_GROUP)]
        return te.sum(a[(*rows, k)].astype("int32") * weight.astype("int32"), axis=k)
    return te.compute((*a.shape[:-1], b.shape[-4] * N_GROUP), element, name="dot_product")


def _pair_product(a, w):
    """C[..., n] = sum_k int32(A[..., k]) * int32(W[n, k]), K a multiple of 16: 4 partial sums per output in
    the lanes the pair-sums intrinsic adds each 16 bytes into (schedules/intrinsics.py), then their total.
    A weight of rank 3 is per group: W[g, n, k] for the rows A[g, ...]."""
    from tvm import te

    from schedules.intrinsics import PAIR_BYTES, PAIR_LANES, pair_byte

    kb = te.reduce_axis((0, a.shape[-1] // PAIR_BYTES), "kb")
    r = te.reduce_axis((0, PAIR_LANES), "r")

    def partial(*index):
        *rows, n, j = index
        k = kb * PAIR_BYTES + pair_byte(j, r)
        weight = w[rows[0], n, k] if len(w.shape) == 3 else w[n, k]
        return te.sum(a[(*rows, k)].astype("int32") * weight.astype("int32"), axis=[kb, r])
    sums = te.compute((*a.shape[:-1], w.shape[-2], PAIR_LANES), partial, name="pair_sums")
    lane = te.reduce_axis((0, PAIR_LANES), "lane")
    return te.compute(sums.shape[:-1], lambda *index: te.sum(sums[(*index, lane)], axis=lane), name="pair_total")


def _windows(x, groups: int, kernel, strides, depth: int, rows: bool = False):
    """im2col: windows[g, y, x, k] = X[0, g Cg + c, y sy + ky, x sx + kx] for k = (c KH + ky) KW + kx (the order
    of an OIHW weight's row), zero from Cg KH KW to `depth`; the input is already padded (integer_kernels).
    With `rows`, X is held as rows [G', H, W, C/G'] (a product's output, padded as rows): channel ch is
    X[ch // (C/G'), ..., ch % (C/G')]."""
    from tvm import te, tirx

    from schedules.pair_sums import WINDOW, WINDOWS

    if rows:
        row_groups, h, w, per_row = (int(d) for d in x.shape)
        c = row_groups * per_row

        def read(ch, yy, xx):
            return x[ch // per_row, yy, xx, ch % per_row]
    else:
        _, c, h, w = (int(d) for d in x.shape)

        def read(ch, yy, xx):
            return x[0, ch, yy, xx]
    per_group, (kh, kw), (sy, sx) = c // groups, kernel, strides
    taps = kh * kw

    def element(g, y, col, k):
        channel = tirx.min(k // taps, per_group - 1)  # in bounds where the zero is taken
        value = read(g * per_group + channel, y * sy + k % taps // kw, col * sx + k % kw)
        if depth == per_group * taps:  # no zero tail (a strided 1x1 convolution's rows, say)
            return value
        return tirx.if_then_else(k < per_group * taps, value, tirx.const(0, x.dtype))
    return te.compute((groups, (h - kh) // sy + 1, (w - kw) // sx + 1, depth), element, name=WINDOWS,
                      attrs={WINDOW: [per_group, kh, kw]})


def rewrite(mod, form: ProductForm):
    """(module, products rewritten): the products whose activations are `form`'s type, in `form`."""
    from tvm import relax

    if _nhwc_pays(mod):
        mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
        mod = relax.transform.FoldConstant()(mod)  # the weights' layout transforms, on the constants
    mutator = _make_mutator()(mod, form)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get()), mutator.rewritten


def _nhwc_pays(mod) -> bool:
    """Whether the module has 8-bit convolutions and none of them is grouped with several channels per group.
    TVM's NHWC grouped convolution (AttendNeXt's 21-channel groups) runs several times slower under the
    default schedules than its NCHW one (docs/int8.md), which outweighs the products: such a model keeps
    NCHW, and only its matrix products take the intrinsic."""
    import tvm
    from tvm import relax

    conv2d, convolutions = tvm.ir.Op.get("relax.nn.conv2d"), []

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op == conv2d and str(expr.args[0].ty.dtype) in ("uint8", "int8"):
            channels = int(expr.args[0].ty.shape[1 if expr.attrs.data_layout == "NCHW" else 3])
            convolutions.append((int(expr.attrs.groups), channels))
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(convolutions) and all(groups in (1, channels) for groups, channels in convolutions)


def _packed(w: np.ndarray, form: ProductForm = FORMS["vnni"]) -> np.ndarray:
    """[N, K] int8 weights (or [G, N, K], a grouped convolution's), zero-padded to whole groups: as
    [N/16, K/4, 16, 4] tiles of 64 bytes for the dot products, as [N, K] rows for the pair sums."""
    lead = [(0, 0)] * (w.ndim - 2)
    if form.name == "pair_sums":
        return np.ascontiguousarray(np.pad(w, lead + [(0, 0), (0, -w.shape[-1] % form.k_group)]).astype("int8"))
    n, k = w.shape[-2:]
    w = np.pad(w, lead + [(0, -n % N_GROUP), (0, -k % K_GROUP)]).astype("int8")
    tiles = w.reshape(*w.shape[:-2], w.shape[-2] // N_GROUP, N_GROUP, w.shape[-1] // K_GROUP, K_GROUP)
    return np.ascontiguousarray(np.moveaxis(tiles, -3, -2))


def _packed_depth(packed: np.ndarray, form: ProductForm) -> int:
    """The reduction length (K, padded) of a packed weight: the depth its rows must have."""
    return packed.shape[-1] if form.name == "pair_sums" else packed.shape[-3] * K_GROUP


def _packed_channels(packed: np.ndarray, form: ProductForm) -> int:
    """The output channels (N, padded) of a packed weight (per group)."""
    return packed.shape[-2] if form.name == "pair_sums" else packed.shape[-4] * N_GROUP


def _make_mutator():
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv2d, matmul = tvm.ir.Op.get("relax.nn.conv2d"), tvm.ir.Op.get("relax.matmul")
    pad = tvm.ir.Op.get("relax.nn.pad")
    elementwise = {tvm.ir.Op.get(f"relax.{name}") for name in ("add", "subtract", "multiply", "maximum", "minimum",
                                                                "round", "astype", "clip")}

    @mutator
    class DotProducts(PyExprMutator):
        def __init__(self, mod, form: ProductForm):
            super().__init__(mod)
            self.form = form
            self.rewritten = 0
            # NCHW var -> the same values in NHWC, channels innermost: an NCHW 1x1 convolution's product
            # and the element-wise steps after it (its requantization) run in that layout, contiguous along
            # the channels, and the result is transposed to NCHW once, where something else reads it
            self.rows_of = {}
            self.groups_of = {}  # rows var -> groups, for the [G, H, W, C/G] rows of a grouped convolution

        def visit_var_binding_(self, binding):
            value = self.visit_expr(binding.value)
            rows, groups = None, 1
            if isinstance(value, relax.Call) and value.op == conv2d:
                rows = self.nchw_conv2d(value)
                if rows is None:
                    rows, groups = self.windowed_conv2d(value), int(value.attrs.groups)
                product = None if rows is not None else self.conv2d(value)
                value = value if product is None else product
            elif isinstance(value, relax.Call) and value.op == matmul:
                product = self.matmul(value)
                value = value if product is None else product
            elif isinstance(value, relax.Call) and value.op in elementwise:
                rows = self.elementwise(value)
                groups = max([self.groups_of.get(self.held(arg), 1) for arg in value.args])
            elif lookup_tables.is_lookup(self.builder_.get(), value):
                rows, groups = self.table_read(value)
            if rows is not None:
                if not isinstance(rows, relax.Var):  # an alias binding would stop the fusion of what follows
                    rows = self.builder_.emit(rows, "rows")
                value = relax.op.permute_dims(rows, [0, 3, 1, 2])
                if groups > 1:  # [G, H, W, C/G] rows of a grouped convolution: [G, C/G, H, W] is NCHW's order
                    self.groups_of[rows] = groups
                    _, height, width, per_group = (int(d) for d in rows.ty.shape)
                    value = relax.op.reshape(self.builder_.emit(value, "nchw"), [1, groups * per_group, height, width])
            emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
            new_var = emit(value, binding.var.name)
            self.set_var_remap(binding.var, new_var)
            if rows is not None:
                self.rows_of[new_var] = rows

        def held(self, expr, grouped: bool = True):
            """The rows form of `expr`, or None (constants compare as expressions: only vars are looked up);
            with grouped=False only plain NHWC rows (a grouped convolution's rows hold one group each)."""
            rows = self.rows_of.get(expr) if isinstance(expr, relax.Var) else None
            return None if rows is None or (not grouped and rows in self.groups_of) else rows

        def elementwise(self, call):
            """An element-wise step on one value held as rows, with scalar or per-channel [1, C, 1, 1] constants:
            the same step on the rows, the constants as [C] (as [G, 1, 1, C/G] on a grouped convolution's rows);
            None for anything else."""
            held = [self.held(arg) for arg in call.args if self.held(arg) is not None]
            if len(held) != 1:
                return None
            groups = self.groups_of.get(held[0], 1)
            args = []
            for arg in call.args:
                rows, c = self.held(arg), constant_value(arg)
                if rows is not None:
                    args.append(rows)
                elif c is not None and not hasattr(arg.value, "numpy"):  # a scalar immediate (a clip's bound)
                    args.append(arg)
                elif c is not None and c.ndim == 4 and c.shape[0] == 1 and c.shape[2:] == (1, 1):
                    shape = (-1,) if groups == 1 else (groups, 1, 1, -1)
                    args.append(relax.const(c.reshape(shape), str(c.dtype)))
                elif c is not None and c.size == 1:
                    args.append(relax.const(c.reshape(()), str(c.dtype)))
                else:
                    return None
            return relax.Call(call.op, args, call.attrs, call.ty_args)

        def table_read(self, call):
            """A table read on a value held as rows: the same read on the rows (it is element-wise), and their
            groups; (None, 1) otherwise."""
            held = self.held(call.args[1][0])
            if held is None:
                return None, 1
            return lookup_tables.lookup(self.builder_, held, call.args[1][1]), self.groups_of.get(held, 1)

        def nchw_conv2d(self, call):
            """A 1x1 stride-1 NCHW convolution: the product over the channels of its NHWC view (int32 [B, H, W, O]),
            or None."""
            w, attrs = self.operands(call), call.attrs
            if (w is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or w.shape[2:] != (1, 1)
                    or int(attrs.groups) != 1 or any(int(s) != 1 for s in attrs.strides)
                    or any(int(p) for p in attrs.padding)):
                return None
            rows = self.held(call.args[0], grouped=False)  # the producer's rows when it was one of these: no transpose
            return self.product(relax.op.permute_dims(call.args[0], [0, 2, 3, 1]) if rows is None else rows,
                                w[:, :, 0, 0])

        def operands(self, call) -> Optional[np.ndarray]:
            """The constant int8 weight of an activation x int8 -> int32 product the form sums exactly, or None."""
            data, weight = call.args
            w = constant_value(weight)
            if (w is None or str(w.dtype) != "int8" or str(data.ty.dtype) != self.form.activation
                    or str(call.attrs.out_dtype) != "int32" or w.min(initial=0) < self.form.weight_min):
                return None
            return w

        def product(self, rows, weight: np.ndarray):
            """rows: 8-bit [..., K]; weight: int8 [N, K] -> int32 [..., N]."""
            if not isinstance(rows, relax.Var):
                rows = self.builder_.emit(rows, "rows")
            rank, k, form = len(rows.ty.shape), int(rows.ty.shape[-1]), self.form
            if -k % form.k_group:
                rows = self.builder_.emit(relax.op.nn.pad(rows, [0] * (2 * rank - 1) + [-k % form.k_group],
                                                          pad_value=0.0), "rows")
            self.rewritten += 1
            return self.sliced_product(rows, _packed(weight, form), weight.shape[0])

        def sliced_product(self, rows, packed: np.ndarray, channels: int):
            """The product of `rows` and a packed weight, sliced back to `channels` when packing padded them."""
            out = self.fused_product(rows, packed)
            if _packed_channels(packed, self.form) == channels:
                return out
            return relax.op.strided_slice(self.builder_.emit(out, self.form.name), axes=[len(rows.ty.shape) - 1],
                                          begin=[0], end=[channels])

        def conv2d(self, call):
            """A 1x1 stride-1 NHWC convolution: the product over its channels."""
            w, attrs = self.operands(call), call.attrs
            if (w is None or attrs.data_layout != "NHWC" or attrs.kernel_layout != "OHWI" or w.shape[1:3] != (1, 1)
                    or int(attrs.groups) != 1 or any(int(s) != 1 for s in attrs.strides)
                    or any(int(p) for p in attrs.padding) or str(attrs.out_layout) != "NHWC"):
                return None
            return self.product(call.args[0], w[:, 0, 0, :])

        def windowed_conv2d(self, call):
            """An NCHW convolution with a window, a stride or groups (not depthwise), in a form that takes them: the
            windows of its input as rows of Cg x KH x KW bytes per group (`_windows`), their product with each
            group's weights, and the result back in NCHW; None for anything else."""
            w, attrs, x = self.operands(call), call.attrs, call.args[0]
            if (w is None or not self.form.windows or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
                    or any(int(p) for p in attrs.padding) or any(int(d) != 1 for d in attrs.dilation)
                    or int(x.ty.shape[0]) != 1 or str(attrs.out_layout) != "NCHW"):
                return None
            groups, (channels, depth, kh, kw) = int(attrs.groups), w.shape
            if (depth == 1 or depth * kh * kw < MIN_WINDOW_BYTES
                    or (kh, kw) == (1, 1) and groups == 1 and all(int(s) == 1 for s in attrs.strides)):
                return None
            weight = _packed(w.reshape(groups, channels // groups, depth * kh * kw), self.form)
            padded_rows = self.padded_rows(x)
            # opaque: fused with its producers, the windows would recompute each input element (a requantized
            # sigmoid gate, say) for every window it is in
            windows = self.builder_.emit_te(_windows, x if padded_rows is None else padded_rows, groups, (kh, kw),
                                            [int(s) for s in attrs.strides], _packed_depth(weight, self.form),
                                            padded_rows is not None, primfunc_name_hint="windows",
                                            primfunc_attrs={"op_pattern": OPAQUE})
            self.rewritten += 1
            return self.sliced_product(windows, weight, channels // groups)

        def padded_rows(self, x):
            """When `x` is the spatial padding of a value held as rows: the rows padded the same way (a copy along
            contiguous channels, where the NCHW value would be transposed first), else None."""
            bound = self.lookup_binding(x) if isinstance(x, relax.Var) else None
            if not isinstance(bound, relax.Call) or bound.op != pad or self.held(bound.args[0]) is None:
                return None
            before_n, after_n, before_c, after_c, top, bottom, left, right = (int(p) for p in bound.attrs.pad_width)
            if before_n or after_n or before_c or after_c:
                return None
            return self.builder_.emit(relax.op.nn.pad(self.held(bound.args[0]), [0, 0, top, bottom, left, right, 0, 0],
                                                      pad_value=float(bound.attrs.pad_value)), "padded_rows")

        def fused_product(self, rows, packed: np.ndarray):
            """The form's product of `rows` and the packed weight, as a call (a var bound again would be an alias,
            which stops fusion). Its pattern is OutEWiseFusable, as a legalized conv2d's: the requantization fuses
            into it (TVM's pattern analysis calls the packed weight's index opaque)."""
            compute = _pair_product if self.form.name == "pair_sums" else _nt_product
            return self.builder_.call_te(compute, rows, relax.const(packed), primfunc_name_hint=self.form.name,
                                         primfunc_attrs={"op_pattern": OUT_ELEMWISE_FUSABLE})

        def matmul(self, call):
            """A product with a constant [K, N] weight."""
            w = self.operands(call)
            if w is None or w.ndim != 2:
                return None
            return self.product(call.args[0], np.ascontiguousarray(w.T))

    return DotProducts
