"""int8 quality against the float model: the pass rule, the inputs, and a measurement that can fail."""
import numpy as np
import pytest

import onnx_models
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

    first, second = quality.quality_inputs(Spec, None), quality.quality_inputs(Spec, None)
    assert len(first) == quality.QUALITY_INPUTS == 128
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], first[1])


@pytest.fixture(scope="module")
def tiny_int8(tiny_cnn_onnx, tmp_path_factory):
    """tiny_cnn quantized and built for the host (uint8 activations) with its QDQ model."""
    from compiler.driver import CompileOptions, compile_model
    from compiler.frontend import onnx_model, quantize
    from compiler import paths

    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    result = compile_model(CompileOptions(target="host", model=str(tiny_cnn_onnx), out=str(out), quantize="int8"))
    qdq = onnx_model.load(paths.quantized_onnx("tiny_cnn", "uint8"))
    return result.library, qdq


def test_the_host_library_lands_where_onnxruntime_int8_lands(tiny_int8, tiny_cnn_onnx):
    from compiler import targets

    library, qdq = tiny_int8
    measured = quality.measure(library, tiny_cnn_onnx, qdq, targets.load("host"), count=32)
    assert measured.inputs == 32 and measured.passed()
    assert measured.tvm_sqnr_db == pytest.approx(measured.onnxruntime_sqnr_db, abs=0.05)


def test_a_library_far_from_the_float_model_fails(tiny_int8, tiny_cnn_onnx, onnx_dir, tmp_path):
    """A library of other weights (tiny_cnn exported with seed 1) judged as the int8 build of tiny_cnn: its SQNR
    against the float model collapses while ONNX Runtime int8's stays, and the rule fails."""
    from compiler import targets
    from compiler.driver import CompileOptions, compile_model

    _, qdq = tiny_int8
    other = onnx_models.export("tiny_cnn", onnx_dir / "tiny_cnn-seed1.onnx", seed=1)
    library = compile_model(CompileOptions(target="host", model=str(other), out=str(tmp_path / "other"))).library
    measured = quality.measure(library, tiny_cnn_onnx, qdq, targets.load("host"), count=32)
    assert measured.onnxruntime_sqnr_db > 20 and measured.tvm_sqnr_db < 10
    assert not measured.passed() and "FAILED" in measured.describe()
