"""Dataflow patterns (tvm.relax.dpl) for the DC-AC block of AttendNeXt, used by fusion mode "dcac".

After ONNX import, DecomposeOpsForInference and FoldConstant, one DC-AC reads (shapes of the small test
config; biases are a constant `add`, or `add(reshape(const))` if the reshape was not folded):

    q  = max_pool2d(v)                                    # (1, C, H/2, W/2), shared by both branches
    e  = conv2d(q, W3, groups=g) + b3;  e = e * sigmoid(e)    (or relu)     # grouped 3x3, act
    k  = conv2d(e, W1) + b1                                # 1x1 back to C        } x2: attention, features
    ra = resize2d(k_att, nearest, asymmetric, x2);  rf = resize2d(k_feat, ...)
    out = rf * sigmoid(ra) * s + v                         # s a scalar constant

The whole block is tried first (one kernel that writes only the block's output); where it is rejected, the
epilogue and the branches are fused separately (max_pool2d stays its own kernel, being shared).
TABLE is the single list of fusion patterns, in priority order, as `(name, pattern, annotations, check)`. Each check is
a pure function `PatternCheckContext -> reason or None` (None = accept); `as_fusion_patterns` wraps it for
FuseOpsByPattern (which wants a bool) and appends each rejection reason to the caller's list, if one is given.
"""
from __future__ import annotations

from typing import Callable, Optional

from tvm.relax.dpl import is_const, is_op, wildcard

RESIZE = "relax.image.resize2d"



# ---------------------------------------------------------------------------------------------- builders
def _commutative(op: str, a, b):
    return is_op(op)(a, b) | is_op(op)(b, a)


def make_bias_pattern(out):
    """conv + bias, the bias a constant, possibly reshaped to (1, C, 1, 1)."""
    bias = is_const() | is_op("relax.reshape")(is_const(), wildcard())
    return _commutative("relax.add", out, bias)


def make_activation_pattern(x):
    """SiLU as the importer writes it (x * sigmoid(x)), or ReLU."""
    silu = _commutative("relax.multiply", x, is_op("relax.sigmoid")(x))
    return silu | is_op("relax.nn.silu")(x) | is_op("relax.nn.relu")(x)


def make_branch_pattern(with_pool: bool, src=None, annotations=None, prefix=""):
    """[max_pool2d ->] grouped conv2d + bias -> act -> 1x1 conv2d + bias: one condensed branch at low res."""
    annotations = {} if annotations is None else annotations
    src = wildcard() if src is None else src
    if with_pool:
        src = annotations["pool"] = is_op("relax.nn.max_pool2d")(src)
    local = annotations[prefix + "local"] = is_op("relax.nn.conv2d")(src, is_const())
    act = make_activation_pattern(make_bias_pattern(local))
    cross = annotations[prefix + "cross"] = is_op("relax.nn.conv2d")(act, is_const())
    return make_bias_pattern(cross), annotations


def make_epilogue_pattern(feat_low=None, att_low=None, residual=None, annotations=None):
    """resize(F_low) * sigmoid(resize(A_low)) * s + V at full resolution."""
    annotations = {} if annotations is None else annotations
    feat = annotations["resize_f"] = is_op(RESIZE)(feat_low or wildcard(), wildcard())
    att = annotations["resize_a"] = is_op(RESIZE)(att_low or wildcard(), wildcard())
    gated = _commutative("relax.multiply", feat, is_op("relax.sigmoid")(att))
    scale = annotations["scale"] = is_const()
    scaled = _commutative("relax.multiply", gated, scale)
    residual = annotations["residual"] = residual or wildcard()
    out = annotations["out"] = _commutative("relax.add", scaled, residual)
    return out, annotations


def make_block_pattern():
    """The whole DC-AC: V -> max_pool2d -> two branches (sharing the pooling) -> epilogue with + V.

    Reusing one pattern object for V and for the pooling makes the matcher demand the same Relax node."""
    annotations = {}
    v = wildcard()
    pool = annotations["pool"] = is_op("relax.nn.max_pool2d")(v)
    feat, _ = make_branch_pattern(False, pool, annotations, "f_")
    att, _ = make_branch_pattern(False, pool, annotations, "a_")
    return make_epilogue_pattern(feat, att, v, annotations)


# ---------------------------------------------------------------------------------------------- checks
def _shape(expr) -> list:
    return [int(d) for d in expr.ty.shape]


def why_not_nearest_x2(resize) -> Optional[str]:
    """A fusable expansion: nearest, asymmetric (floor(i / 2)), exactly 2x in H and W, NCHW."""
    attrs = resize.attrs
    if str(attrs.method) != "nearest_neighbor":
        return f"resize method is {attrs.method}, not nearest_neighbor"
    if str(attrs.coordinate_transformation_mode) != "asymmetric":
        return f"resize coordinate mode is {attrs.coordinate_transformation_mode}, not asymmetric"
    if str(attrs.layout) != "NCHW":
        return f"resize layout is {attrs.layout}, not NCHW"
    n, c, h, w = _shape(resize.args[0])
    out = _shape(resize)
    if out != [n, c, 2 * h, 2 * w]:
        return f"resize {[n, c, h, w]} -> {out} is not an exact x2 upsampling"
    return None


def why_not_epilogue(ctx) -> Optional[str]:
    ann = ctx.annotated_expr
    for key in ("resize_f", "resize_a"):
        reason = why_not_nearest_x2(ann[key])
        if reason:
            return reason
    if _shape(ann["scale"]) not in ([], [1]):
        return f"scale s has shape {_shape(ann['scale'])}, not a scalar"
    if _shape(ann["residual"]) != _shape(ann["out"]):
        return "residual V does not have the output's shape (it would broadcast)"
    if _shape(ann["resize_f"]) != _shape(ann["out"]):
        return "upsampled features do not have the output's shape"
    return None


def _why_not_conv(conv, grouped: bool) -> Optional[str]:
    attrs = conv.attrs
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
        return f"conv2d layout {attrs.data_layout}/{attrs.kernel_layout}, not NCHW/OIHW"
    if any(int(s) != 1 for s in attrs.strides):
        return "conv2d is strided"
    kh, kw = _shape(conv.args[1])[2:]
    if not grouped and (kh, kw) != (1, 1):
        return f"cross-channel conv2d is {kh}x{kw}, not 1x1"
    return None


def _producer(ctx, var):
    """The value bound to `var`, from the function's bindings before the match (None for parameters)."""
    for value, bound in ctx.value_to_bound_var.items():
        if bound.same_as(var):
            return value
    return None


def why_not_branch(ctx) -> Optional[str]:
    """A DC-AC embedding: it reads a max_pool2d condensation (a MergedBlock body has the same conv chain)."""
    ann = ctx.annotated_expr
    local = ann["local"]
    if "pool" not in ann:
        src = _producer(ctx, local.args[0])
        if src is None or getattr(getattr(src, "op", None), "name", "") != "relax.nn.max_pool2d":
            return "grouped conv2d does not read a max_pool2d condensation (not a condenser branch)"
    return _why_not_conv(local, grouped=True) or _why_not_conv(ann["cross"], grouped=False)


def why_not_block(ctx) -> Optional[str]:
    ann = ctx.annotated_expr
    for prefix in ("f_", "a_"):
        reason = (_why_not_conv(ann[prefix + "local"], grouped=True)
                  or _why_not_conv(ann[prefix + "cross"], grouped=False))
        if reason:
            return reason
    return why_not_epilogue(ctx)


def why_not_pool_branch(ctx) -> Optional[str]:
    """With the pooling inside, its output must feed this branch alone (a DC-AC's two branches share it)."""
    pool = ctx.annotated_expr["pool"]
    pooled = ctx.value_to_bound_var.get(pool)
    users = len(ctx.var_usages.get(pooled, [])) if pooled is not None else 0
    if users > 1:
        return (f"max_pool2d output is shared by {users} branches; fusing it into one would force it to be "
                "an output anyway")
    return why_not_branch(ctx)


# ---------------------------------------------------------------------------------------------- the table
_BLOCK, _BLOCK_ANN = make_block_pattern()
_EPILOGUE, _EPILOGUE_ANN = make_epilogue_pattern()
_POOL_BRANCH, _POOL_BRANCH_ANN = make_branch_pattern(with_pool=True)
_BRANCH, _BRANCH_ANN = make_branch_pattern(with_pool=False)

# (name, pattern, annotations, check): earlier entries win when matches overlap.
TABLE: list[tuple[str, object, dict, Callable]] = [
    ("dcac.max_pool2d_2x_conv2d_add_act_conv2d_add_resize2d_sigmoid_multiply_multiply_add", _BLOCK, _BLOCK_ANN,
     why_not_block),
    ("dcac.resize2d_resize2d_sigmoid_multiply_multiply_add", _EPILOGUE, _EPILOGUE_ANN, why_not_epilogue),
    ("dcac.max_pool2d_conv2d_add_act_conv2d_add", _POOL_BRANCH, _POOL_BRANCH_ANN, why_not_pool_branch),
    ("dcac.conv2d_add_act_conv2d_add", _BRANCH, _BRANCH_ANN, why_not_branch),
]


def _recording(name: str, why_not: Callable, rejections: Optional[list]) -> Callable:
    def check(ctx) -> bool:
        reason = why_not(ctx)
        if reason is not None and rejections is not None:
            rejections.append((name, reason))
        return reason is None
    return check


def as_fusion_patterns(rejections: Optional[list] = None) -> list:
    """The table as FuseOpsByPattern's (name, pattern, annotations, check) tuples; each rejected match
    appends (pattern name, reason) to `rejections` when a list is given."""
    return [(name, pattern, annotations, _recording(name, why_not, rejections))
            for name, pattern, annotations, why_not in TABLE]
