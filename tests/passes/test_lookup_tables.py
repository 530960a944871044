"""Quantized sigmoid and SiLU chains become 256-entry tables that give exactly what the float chain gives."""
import numpy as np

from compiler.passes import lookup_tables, pipeline

SHAPE = (1, 4, 16, 16)


def quantized_chains():
    """A module on two int8 tensors x, y: a SiLU of x, a ReLU of x (no transcendental step: stays float), and
    x * sigmoid(y) (two sources: only the sigmoid of y is a table), each quantized to int8."""
    import tvm
    from tvm import relax

    def const(value, dtype):
        return relax.const(np.array(value, dtype=dtype))

    def dequantize(q, scale, zero):
        return relax.op.dequantize(q, const(scale, "float32"), const(zero, "int8"), axis=1)

    def quantize(f, scale, zero):
        return relax.op.quantize(f, const(scale, "float32"), const(zero, "int8"), axis=1, out_dtype="int8")

    x = relax.Var("x", relax.TensorType(SHAPE, "int8"))
    y = relax.Var("y", relax.TensorType(SHAPE, "int8"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x, y]):
        with builder.dataflow():
            fx = builder.emit(dequantize(x, 0.07, -3))
            gate = builder.emit(quantize(relax.op.sigmoid(fx), 1 / 255, -128))
            silu = builder.emit(quantize(relax.op.multiply(fx, dequantize(gate, 1 / 255, -128)), 0.035, -120))
            relu = builder.emit(quantize(relax.op.nn.relu(fx), 0.03, -128))
            gate_y = builder.emit(quantize(relax.op.sigmoid(dequantize(y, 0.05, 4)), 1 / 255, -128))
            gated = builder.emit(quantize(relax.op.multiply(fx, dequantize(gate_y, 1 / 255, -128)), 0.04, 2))
            out = builder.emit_output(relax.Tuple([silu, relu, gated]))
        builder.emit_func_output(out)
    return tvm.IRModule({"main": builder.get()["main"]})


def run(mod, *inputs):
    import tvm

    machine = tvm.runtime.vm.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return [out.numpy() for out in machine["main"](*[tvm.runtime.tensor(x) for x in inputs])]


def test_only_single_source_chains_with_a_transcendental_step_become_tables():
    rewritten, replaced = lookup_tables.rewrite(quantized_chains())
    script = rewritten.script(show_meta=False)
    assert replaced == 2, script  # the SiLU of x and the sigmoid of y
    assert "R.sigmoid" not in script and script.count("R.call_tir(cls.lookup") == 2
    assert "R.nn.relu" in script and script.count("R.multiply(") == 1  # the ReLU, and x * sigmoid(y), stay float


def test_tables_give_the_float_chains_values_for_every_input():
    original = quantized_chains()
    rewritten, _ = lookup_tables.rewrite(quantized_chains())
    every = np.arange(-128, 128, dtype="int8")
    x = np.resize(every, SHAPE)
    y = np.resize(np.roll(every, 77), SHAPE)  # every pair of values meets somewhere else than on the diagonal
    for expected, got in zip(run(original, x, y), run(rewritten, x, y)):
        np.testing.assert_array_equal(got, expected)
        assert len(np.unique(got)) > 50  # the chains are not constant: the comparison sees the tables' values


def test_a_qdq_models_sigmoid_gate_becomes_a_table(kernel_classes_qdq):
    model, _ = kernel_classes_qdq
    script = pipeline.import_onnx(model).script(show_meta=False)
    assert "R.sigmoid" not in script and "cls.lookup" in script
    float_script = pipeline.import_onnx(model, integer=False).script(show_meta=False)
    assert "R.sigmoid" in float_script and "cls.lookup" not in float_script
