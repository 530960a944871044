"""QDQ -> integer kernels: a quantized model's products run on its int8 values and give ONNX Runtime's outputs."""
import re

import numpy as np

from compiler.driver import QUANTIZED_TOLERANCE
from compiler.frontend import onnx_model
from compiler.passes import integer_kernels, pipeline


def weighted_products(proto) -> int:
    """Conv and Gemm nodes whose weight is a DequantizeLinear of an initializer (what must become integer)."""
    initializers = {init.name for init in proto.graph.initializer}
    dequantized_constants = {node.output[0] for node in proto.graph.node
                             if node.op_type == "DequantizeLinear" and node.input[0] in initializers}
    return sum(1 for node in proto.graph.node
               if node.op_type in ("Conv", "Gemm") and node.input[1] in dequantized_constants)


def test_every_weighted_product_becomes_an_int8_kernel(kernel_classes_qdq):
    kernel_classes_qdq, activation = kernel_classes_qdq
    mod, integer, left = integer_kernels.rewrite(pipeline.import_onnx(kernel_classes_qdq, integer=False))
    # every Conv and Gemm with int8 weights, and the attention's two activation x activation MatMuls
    assert (integer, left) == (weighted_products(kernel_classes_qdq.proto) + 2, 0)
    script = mod.script(show_meta=False)
    convolutions = re.findall(r'(\w+): R\.Tensor\([^)]*\), dtype="(\w+)"\) = R\.nn\.conv2d\((\w+), ', script)
    assert convolutions and all(dtype == "int32" for _, dtype, _ in convolutions), convolutions
    dtypes = dict(re.findall(r'(\w+): R\.Tensor\([^)]*\), dtype="(\w+)"\) =', script))
    for _, _, data in convolutions:  # int8 x int8 -> int32: the data is the model's 8-bit activation
        assert dtypes.get(data) == activation, (data, dtypes.get(data))
    matmuls = re.findall(r'dtype="(\w+)"\) = R\.matmul\(', script)
    assert matmuls == ["int32"] * 3, matmuls  # the attention's two and the classifier


def test_a_float_model_is_left_as_it_was(tiny_cnn_onnx):
    model = onnx_model.load(tiny_cnn_onnx)
    mod = pipeline.import_onnx(model, integer=False)
    rewritten, integer, left = integer_kernels.rewrite(mod)
    assert (integer, left) == (0, 0) and rewritten.script() == mod.script()


def test_int8_kernels_give_onnxruntimes_outputs_on_the_host(kernel_classes_qdq, tmp_path):
    """Built with the default schedules; the outputs of ONNX Runtime's run of the same QDQ model: with uint8
    activations, which ONNX Runtime on x86 runs through its fused 8-bit kernels, equal to them (the products'
    requantization, the additions, products and softmax take its arithmetic); with int8 ones, which it runs
    partly in float, within one step of the output's int8 scale. On a CPU with AVX-512 VNNI the uint8 build
    goes through compiler/passes/dot_products.py (NHWC convolutions, tensorized products)."""
    import onnxruntime

    from compiler.artifact.runtime import Model
    from compiler.driver import CompileOptions, compile_model

    kernel_classes_qdq, activations = kernel_classes_qdq

    library = compile_model(CompileOptions(target="host", model=str(kernel_classes_qdq.path),
                                           out=str(tmp_path / "out"))).library
    spec = kernel_classes_qdq.inputs[0]
    x = np.random.default_rng(3).standard_normal(spec.shape).astype("float32")
    expected = onnxruntime.InferenceSession(str(kernel_classes_qdq.path),
                                            providers=["CPUExecutionProvider"]).run(None, {spec.name: x})[0]
    got = Model(str(library)).run(x)[0]
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error == 0 if activations == "uint8" else error <= QUANTIZED_TOLERANCE, error
