"""`--quantize int8`: ONNX Runtime's quantizer on the user's float model, its calibration inputs, its
agreement with float, and the QDQ model shipped beside the int8 library."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.errors import UserError
from compiler.frontend import onnx_model, quantize
from test_cli import assert_user_error, run_cli

SHAPE = (1, 3, 32, 32)  # tiny_cnn's input


class Spec:
    name, shape = "input", SHAPE


def test_calibration_takes_arrays_batches_and_images(tmp_path):
    from PIL import Image

    np.save(tmp_path / "one.npy", np.ones(SHAPE, dtype="float32"))
    np.save(tmp_path / "batch.npy", np.zeros((3, *SHAPE[1:]), dtype="float64"))
    Image.new("RGB", (50, 40), (255, 0, 128)).save(tmp_path / "photo.png")
    (tmp_path / "notes.txt").write_text("not an input")
    inputs = quantize.calibration_inputs(Spec, str(tmp_path))
    assert len(inputs) == 5 and all(x.shape == SHAPE and x.dtype == np.float32 for x in inputs)
    image = inputs[-1]  # sorted by name: batch (3), one, photo
    assert np.allclose(image[0, :, 0, 0], (np.array([1.0, 0.0, 128 / 255]) - quantize.IMAGENET_MEAN.ravel())
                       / quantize.IMAGENET_STD.ravel(), atol=1e-2)


def test_random_calibration_is_seeded():
    first, second = quantize.calibration_inputs(Spec, None), quantize.calibration_inputs(Spec, None)
    assert len(first) == quantize.RANDOM_INPUTS and all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("content, message", [
    ({}, "holds no .npy arrays or images"),
    ({"wrong.npy": np.zeros((1, 3, 8, 8), dtype="float32")}, "has shape (1, 3, 8, 8)"),
    ({"broken.npy": b"not numpy"}, "is not a readable .npy array"),
])
def test_an_unusable_calibration_folder_is_named(tmp_path, content, message):
    for name, value in content.items():
        if isinstance(value, bytes):
            (tmp_path / name).write_bytes(value)
        else:
            np.save(tmp_path / name, value)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        quantize.calibration_inputs(Spec, str(tmp_path))


def test_the_host_build_ships_int8_kernels_with_its_qdq_model(tiny_cnn_onnx, tmp_path):
    out = tmp_path / "tiny-int8"
    result = run_cli("--target", "host", "--model", tiny_cnn_onnx, "--quantize", "int8", "--verify", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "verify logits" in result.stdout and " ok" in result.stdout
    assert "integer kernels: 3 convolutions and matrix products" in result.stderr
    sidecar = json.loads((out / "tiny_cnn-int8.json").read_text())
    assert sidecar["model"] == "tiny_cnn-int8"
    agreement = sidecar["quantization"]
    assert agreement["activation_type"] == "uint8" and agreement["inputs"] == quantize.RANDOM_INPUTS
    assert agreement["sqnr_db"] > 10 and 0 <= agreement["top1_agreement"] <= 1
    shipped = onnx_model.load(out / "tiny_cnn-int8.onnx")
    assert onnx_model.is_quantized(shipped.proto) and shipped.sha256 == sidecar["onnx_sha256"]


def test_calibration_without_quantize_is_refused(tiny_cnn_onnx, tmp_path):
    assert_user_error(run_cli("--target", "host", "--model", tiny_cnn_onnx, "--calibration", tmp_path),
                      "--calibration", "--quantize int8")


def test_an_empty_calibration_folder_is_refused(tiny_cnn_onnx, tmp_path):
    assert_user_error(run_cli("--target", "host", "--model", tiny_cnn_onnx, "--quantize", "int8",
                              "--calibration", tmp_path), "holds no .npy arrays or images")


def test_a_quantized_model_is_not_quantized_again(tmp_path):
    path = tmp_path / "qdq.onnx"
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
                               helper.make_tensor("z", TensorProto.INT8, [], [0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert_user_error(run_cli("--target", "host", "--model", path, "--quantize", "int8"),
                      "already quantized", "drop --quantize")


def test_operator_format_quantized_models_are_refused_with_the_way_out(tmp_path):
    path = tmp_path / "qlinear.onnx"
    inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    graph = helper.make_graph(
        [helper.make_node("QLinearConv", inputs, ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [helper.make_tensor("xs", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("xz", TensorProto.UINT8, [], [0]),
         helper.make_tensor("w", TensorProto.INT8, [4, 3, 1, 1], [1] * 12),
         helper.make_tensor("ws", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("wz", TensorProto.INT8, [], [0]),
         helper.make_tensor("ys", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("yz", TensorProto.UINT8, [], [0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert_user_error(run_cli("--target", "host", "--model", path),
                      "QLinearConv", "QDQ format", "--quantize int8")
