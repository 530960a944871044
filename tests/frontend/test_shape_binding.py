"""Binding --input-shape into the graph: shape arithmetic folds to constants, the rest is left as it is."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import shape_binding
from test_onnx_model import make_model


def batch_reshape_model():
    """y = reshape(x, [batch, -1]) with the batch read from x's shape at run time, as dynamo exports it."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"], start=0, end=1),
             helper.make_node("Concat", ["shape", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 12])],
                              [numpy_helper.from_array(np.array([-1], np.int64), "minus_one")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_arithmetic_folds_and_the_output_shape_follows():
    model = batch_reshape_model()
    bound = shape_binding.bind(model, {"x": (2, 3, 4)})
    assert [node.op_type for node in bound.graph.node] == ["Constant", "Constant", "Reshape"]
    assert [d.dim_value for d in bound.graph.output[0].type.tensor_type.shape.dim] == [2, 12]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(run(bound)[0], run(model)[0])
    assert [n.op_type for n in model.graph.node] == ["Shape", "Concat", "Reshape"]  # the input is not edited


def test_a_graph_without_shape_arithmetic_is_returned_as_it_is(tmp_path):
    """AttendNeXt's and every legacy static export: the same object, so kernels and tuning keys stay."""
    model = onnx.load(str(make_model(tmp_path / "m.onnx", ops=("Relu", "Sigmoid"))))
    assert shape_binding.bind(model, {"x": (1, 3, 8, 8)}) is model
