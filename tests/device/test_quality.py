"""int8 quality against the float model: the pass rule, the inputs, and a measurement that can fail."""
from pathlib import Path

import numpy as np
import pytest

from compiler.device import quality
from compiler.device.quality import Quality


def test_the_rule_compares_with_onnxruntime_int8_within_its_margins():
    base = dict(inputs=128, source="seeded")
    assert Quality(**base, tvm_sqnr_db=32.5, onnxruntime_sqnr_db=32.9, tvm_top1=0.65, onnxruntime_top1=0.69).passed()
    assert not Quality(**base, tvm_sqnr_db=32.3, onnxruntime_sqnr_db=32.9, tvm_top1=0.69,
                       onnxruntime_top1=0.69).passed()  # 0.6 dB below
    assert not Quality(**base, tvm_sqnr_db=33.0, onnxruntime_sqnr_db=32.9, tvm_top1=0.62,
                       onnxruntime_top1=0.69).passed()  # 7 points below
    assert Quality(**base, tvm_sqnr_db=20.0, onnxruntime_sqnr_db=20.0, tvm_top1=None, onnxruntime_top1=None).passed()


def test_seeded_inputs_are_128_and_repeatable():
    class Spec:
        shape, dtype = (1, 3, 8, 8), "float32"

    first, second = quality.seeded_inputs(Spec), quality.seeded_inputs(Spec)
    assert len(first) == quality.QUALITY_INPUTS == 128
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], first[1])


@pytest.fixture(scope="module")
def tiny_int8(tiny_cnn_onnx, tmp_path_factory):
    """tiny_cnn quantized and built for the host (uint8 activations) with its QDQ model."""
    from compiler.driver import CompileOptions, compile_model
    from compiler.frontend import onnx_model
    from compiler import paths

    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    result = compile_model(CompileOptions(target="host", model=str(tiny_cnn_onnx), out=str(out), quantize="int8"))
    qdq = onnx_model.load(paths.quantized_onnx("tiny_cnn", "uint8"))
    return result.library, qdq


def test_the_host_library_lands_where_onnxruntime_int8_lands(tiny_int8, tiny_cnn_onnx):
    from compiler import targets

    library, qdq = tiny_int8
    measured = quality.measure(library, tiny_cnn_onnx, qdq, targets.load("host"),
                               inputs=quality.seeded_inputs(qdq.inputs[0], 32))
    assert measured.inputs == 32 and measured.passed()
    assert measured.tvm_sqnr_db == pytest.approx(measured.onnxruntime_sqnr_db, abs=0.05)


def perturbed_requantization(qdq_path: Path, out: Path) -> Path:
    """The QDQ model with one activation's QuantizeLinear scale doubled (its DequantizeLinear left alone): one
    requantization off by a factor of two, the kind of bug the rule is there to catch."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(qdq_path))
    initializers = {init.name: init for init in proto.graph.initializer}
    quantizers = [node for node in proto.graph.node if node.op_type == "QuantizeLinear"]
    node = quantizers[len(quantizers) // 2]  # one in the middle of the network
    scale = numpy_helper.to_array(initializers[node.input[1]])
    proto.graph.initializer.append(numpy_helper.from_array(scale * 2, name="perturbed_scale"))
    node.input[1] = "perturbed_scale"
    onnx.save(proto, str(out))
    return out


def test_a_build_with_one_requantization_perturbed_fails(tiny_int8, tiny_cnn_onnx, tmp_path):
    """The int8 library built from the QDQ model with one scale doubled, judged against the float model beside
    ONNX Runtime's run of the faithful QDQ model: the rule fails (the faithful build passes, test above)."""
    from compiler import targets
    from compiler.driver import CompileOptions, compile_model

    _, qdq = tiny_int8
    perturbed = perturbed_requantization(qdq.path, tmp_path / "perturbed.onnx")
    library = compile_model(CompileOptions(target="host", model=str(perturbed), out=str(tmp_path / "p"))).library
    measured = quality.measure(library, tiny_cnn_onnx, qdq, targets.load("host"),
                               inputs=quality.seeded_inputs(qdq.inputs[0], 32))
    assert measured.tvm_sqnr_db < measured.onnxruntime_sqnr_db - 3
    assert not measured.passed() and "FAILED" in measured.describe()


def test_agreement_measures():
    reference = np.array([[[1.0, 3.0, 2.0]], [[0.0, 1.0, 0.5]]])
    assert quality.sqnr_db(reference, reference) == float("inf")
    assert quality.sqnr_db(reference, reference * 1.1) == pytest.approx(20.0)
    swapped = reference.copy()
    swapped[0, 0, :2] = swapped[0, 0, 1::-1]  # the first input's top class moves; the second's stays
    assert quality.top1_agreement(reference, swapped) == 0.5
    assert quality.top1_agreement(np.ones((4, 1)), np.ones((4, 1))) is None
