"""ONNX validation: each bad input is one clear UserError that says what to do."""
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.frontend import onnx_model
from compiler.errors import UserError


def make_model(path, ops=("Relu",), dims=(1, 3, 8, 8)):
    """A chain of single-input ops on one input called `x`; symbolic dims where `dims` holds strings."""
    nodes, previous = [], "x"
    for index, op in enumerate(ops):
        nodes.append(helper.make_node(op, [previous], [f"t{index}"]))
        previous = f"t{index}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_valid_model_loads_with_specs(tmp_path):
    model = onnx_model.load(make_model(tmp_path / "m.onnx"))
    assert [(s.name, s.shape, s.dtype) for s in model.inputs] == [("x", (1, 3, 8, 8), "float32")]
    assert model.output_names == ["t0"] and len(model.sha256) == 64 and model.name == "m"


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"model file .*nope.onnx not found"):
        onnx_model.load(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    bad = tmp_path / "photo.onnx"
    bad.write_bytes(b"\x89PNG this is not a protobuf \xff\xfe")
    with pytest.raises(UserError, match="is not an ONNX model"):
        onnx_model.load(bad)


def test_unsupported_operators_are_all_named(tmp_path):
    path = make_model(tmp_path / "m.onnx", ops=("Relu", "FancyOp", "Relu", "OtherOp"))
    with pytest.raises(UserError) as err:
        onnx_model.load(path)
    assert "FancyOp, OtherOp" in str(err.value) and "Relu" not in str(err.value)


def test_dynamic_dimensions_need_input_shape(tmp_path):
    path = make_model(tmp_path / "m.onnx", dims=("batch", 3, 8, 8))
    with pytest.raises(UserError, match=r"input x has dynamic dimensions: .*--input-shape x="):
        onnx_model.load(path)
    model = onnx_model.load(path, {"x": (2, 3, 8, 8)})
    assert model.inputs[0].shape == (2, 3, 8, 8)


def test_wrong_input_name(tmp_path):
    path = make_model(tmp_path / "m.onnx")
    with pytest.raises(UserError, match=r"--input-shape names image, but the model's inputs are x"):
        onnx_model.load(path, {"image": (1, 3, 8, 8)})


@pytest.mark.parametrize("spec", ["x", "x=", "=1,2", "x=1,a", "x=1,0,3"])
def test_malformed_input_shape(spec):
    with pytest.raises(UserError, match="is not NAME=D1,D2"):
        onnx_model.parse_input_shapes([spec])


def test_input_shape_parsing():
    assert onnx_model.parse_input_shapes(["a=1,3,224,224", "b=7"]) == {"a": (1, 3, 224, 224), "b": (7,)}
