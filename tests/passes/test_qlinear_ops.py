"""Quantized additions and softmaxes compute what ONNX Runtime's QLinearAdd and QLinearSoftmax compute, bit for bit."""
import numpy as np
import pytest

from compiler.passes import qlinear_ops

# (first operand's shape, second operand's shape): a residual, a bias along the innermost axis, a per-channel
# term, a scalar, and a broadcast first operand (ONNX Runtime passes it second)
SHAPES = [((1, 16, 24, 24), (1, 16, 24, 24)), ((1, 96, 64), (64,)), ((1, 16, 24, 24), (16, 1, 1)),
          ((1, 96, 64), (1,)), ((16, 1, 1), (1, 16, 24, 24))]


def binary(a_shape, b_shape, dtype, params, op="add"):
    """A module main(a, b) = quantize(op(dequantize(a), dequantize(b))), every scale and zero point per tensor."""
    import tvm
    from tvm import relax

    (sa, za), (sb, zb), (sc, zc) = params

    def const(value, kind):
        return relax.const(np.array(value, dtype=kind))

    a = relax.Var("a", relax.TensorType(a_shape, dtype))
    b = relax.Var("b", relax.TensorType(b_shape, dtype))
    builder = relax.BlockBuilder()
    with builder.function("main", [a, b]):
        with builder.dataflow():
            total = builder.emit(getattr(relax.op, op)(relax.op.dequantize(a, const(sa, "float32"), const(za, dtype)),
                                              relax.op.dequantize(b, const(sb, "float32"), const(zb, dtype))))
            out = builder.emit_output(relax.op.quantize(total, const(sc, "float32"), const(zc, dtype), out_dtype=dtype))
        builder.emit_func_output(out)
    return tvm.IRModule({"main": builder.get()["main"]})


def onnxruntime_contrib_op(op, inputs, params, dtype, **attributes):
    """Run ONNX Runtime's `op` (com.microsoft) on 8-bit `inputs`; its operands are each input with its
    (scale, zero point) from `params`, then the output's (scale, zero point)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    kind = TensorProto.UINT8 if dtype == "uint8" else TensorProto.INT8
    names = [f"x{k}" for k in range(len(inputs))] + ["y"]
    operands, inits = [], []
    for name, (scale, zero_point) in zip(names, params):
        inits += [helper.make_tensor(f"{name}_scale", TensorProto.FLOAT, [], [scale]),
                  helper.make_tensor(f"{name}_zero", kind, [], [zero_point])]
        operands.append([name, f"{name}_scale", f"{name}_zero"] if name != "y" else [f"{name}_scale", f"{name}_zero"])
    node = helper.make_node(op, [n for group in operands for n in group], ["y"], domain="com.microsoft", **attributes)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info(n, kind, x.shape) for n, x in zip(names, inputs)],
                              [helper.make_tensor_value_info("y", kind, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {n: x for n, x in zip(names, inputs)})[0]


def softmax(shape, dtype, params):
    """main(x) = quantize(softmax(dequantize(x)) along the innermost axis)."""
    import tvm
    from tvm import relax

    (sx, zx), (sy, zy) = params
    x = relax.Var("x", relax.TensorType(shape, dtype))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            f = relax.op.dequantize(x, relax.const(np.float32(sx)), relax.const(np.array(zx, dtype)))
            out = builder.emit_output(relax.op.quantize(relax.op.nn.softmax(f, axis=-1), relax.const(np.float32(sy)),
                                                        relax.const(np.array(zy, dtype)), out_dtype=dtype))
        builder.emit_func_output(out)
    return tvm.IRModule({"main": builder.get()["main"]})


def run(mod, *inputs):
    import tvm

    machine = tvm.runtime.vm.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return machine["main"](*[tvm.runtime.tensor(x) for x in inputs]).numpy()


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("a_shape,b_shape", SHAPES)
def test_additions_match_onnxruntimes_qlinear_add_exactly(a_shape, b_shape, dtype):
    rng = np.random.default_rng(sum(a_shape) + len(b_shape))
    info = np.iinfo(dtype)
    mismatches_of_the_float_graph = 0
    for trial in range(6):
        params = [(float(np.float32(rng.uniform(0.002, 0.08))), int(rng.integers(info.min, info.max))) for _ in range(3)]
        a = rng.integers(info.min, info.max + 1, a_shape).astype(dtype)
        b = rng.integers(info.min, info.max + 1, b_shape).astype(dtype)
        rewritten, count = qlinear_ops.rewrite(binary(a_shape, b_shape, dtype, params))
        assert count == {"add": 1, "multiply": 0, "softmax": 0} and "cls.quantized_add" in rewritten.script(show_meta=False)
        got, want = run(rewritten, a, b), onnxruntime_contrib_op("QLinearAdd", [a, b], params, dtype)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(qlinear_ops.add_reference(a, b, *params[0], *params[1], *params[2], dtype), want)
        assert len(np.unique(got)) > 16  # many output levels, not a saturated block: the comparison sees the arithmetic
        mismatches_of_the_float_graph += int((run(binary(a_shape, b_shape, dtype, params), a, b) != want).sum())
    print(f"the float graph's rounding differs from QLinearAdd on {mismatches_of_the_float_graph} elements")


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("a_shape,b_shape", SHAPES)
def test_products_match_onnxruntimes_qlinear_mul_exactly(a_shape, b_shape, dtype):
    """The DC-AC's gates and an attention's scaling: rounded after the product by the ratio and again after the
    zero point is added (a fused multiply-add would round once, and differ on ties)."""
    rng = np.random.default_rng(sum(a_shape) * 3 + len(b_shape))
    info = np.iinfo(dtype)
    for trial in range(6):
        params = [(float(np.float32(rng.uniform(0.002, 0.08))), int(rng.integers(info.min, info.max))) for _ in range(2)]
        params.append((params[0][0] * params[1][0] * float(rng.uniform(8, 80)), int(rng.integers(info.min, info.max))))
        a = rng.integers(info.min, info.max + 1, a_shape).astype(dtype)
        b = rng.integers(info.min, info.max + 1, b_shape).astype(dtype)
        rewritten, count = qlinear_ops.rewrite(binary(a_shape, b_shape, dtype, params, op="multiply"))
        assert count == {"add": 0, "multiply": 1, "softmax": 0}
        got = run(rewritten, a, b)
        np.testing.assert_array_equal(got, onnxruntime_contrib_op("QLinearMul", [a, b], params, dtype))
        assert len(np.unique(got)) > 16


def test_a_sum_used_elsewhere_stays_float():
    """ONNX Runtime fuses an addition only when the quantize is its sum's one consumer; so does the pass."""
    import tvm
    from tvm import relax

    x = relax.Var("x", relax.TensorType((1, 8), "uint8"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            f = builder.emit(relax.op.dequantize(x, relax.const(np.float32(0.1)), relax.const(np.uint8(3))))
            total = builder.emit(relax.op.add(f, f))
            q = builder.emit(relax.op.quantize(total, relax.const(np.float32(0.2)), relax.const(np.uint8(4)),
                                               out_dtype="uint8"))
            out = builder.emit_output(relax.Tuple([q, total]))
        builder.emit_func_output(out)
    _, count = qlinear_ops.rewrite(tvm.IRModule({"main": builder.get()["main"]}))
    assert count == {"add": 0, "multiply": 0, "softmax": 0}


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_softmaxes_match_onnxruntimes_qlinear_softmax(dtype):
    """The exponentials come from the same table and the sum is a float32 sum: only its order may differ from
    ONNX Runtime's sequential one, so a quotient on a rounding tie could land one step apart (none here)."""
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    shape = (2, 4, 64, 64)  # an attention's heads x queries x keys
    for scale_x in (0.05, 0.13, 0.31):
        params = [(scale_x, int(rng.integers(info.min, info.max))), (1 / 255 * 1.07, int(info.min))]
        x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        rewritten, count = qlinear_ops.rewrite(softmax(shape, dtype, params))
        assert count == {"add": 0, "multiply": 0, "softmax": 1} and "R.nn.softmax" not in rewritten.script(show_meta=False)
        got = run(rewritten, x)
        want = onnxruntime_contrib_op("QLinearSoftmax", [x], params, dtype, opset=13, axis=-1)
        np.testing.assert_array_equal(got, want)
        assert len(np.unique(got)) > 16
        float_graph = run(softmax(shape, dtype, params), x)
        assert (float_graph != want).any()  # floor(1 / s_y): ONNX Runtime's softmax is not the float graph's


def test_a_qdq_models_additions_and_softmax_become_8_bit_kernels(kernel_classes_qdq):
    from compiler.passes import pipeline

    model, _ = kernel_classes_qdq
    script = pipeline.import_onnx(model).script(show_meta=False)
    assert "cls.quantized_add" in script and "cls.quantized_softmax" in script and "R.nn.softmax" not in script
    float_script = pipeline.import_onnx(model, integer=False).script(show_meta=False)
    assert "R.nn.softmax" in float_script and "quantized_add" not in float_script
