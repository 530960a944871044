"""Shared fixtures: small ONNX vision models made here (no downloads), and a tiny compiled artifact."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# tests/ and its folders (they mirror compiler/): test modules share helpers by plain import
for folder in [Path(__file__).resolve().parent, *sorted(Path(__file__).resolve().parent.glob("*/"))]:
    sys.path.insert(0, str(folder))

import onnx_models  # noqa: E402  (tests/onnx_models.py)


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def tiny_cnn_onnx(onnx_dir):
    return onnx_models.export("tiny_cnn", onnx_dir / "tiny_cnn.onnx")


@pytest.fixture(scope="session")
def tiny_artifact(tiny_cnn_onnx, tmp_path_factory):
    """tiny_cnn compiled for the host: the subject of runtime and artifact tests."""
    from compiler.driver import CompileOptions, compile_model

    out = tmp_path_factory.mktemp("artifact") / "tiny_cnn-host"
    return compile_model(CompileOptions(target="host", model=str(tiny_cnn_onnx), out=str(out))).library


@pytest.fixture(scope="session", params=["uint8", "int8"])
def kernel_classes_qdq(request, tmp_path_factory):
    """The kernel-classes model (dense, depthwise and 1x1 convolutions, attention, a classifier) quantized by
    ONNX Runtime's quantizer with `activation` activations, as a user would outside the product."""
    from compiler.frontend import onnx_model, quantize

    folder = tmp_path_factory.mktemp(f"qdq-{request.param}")
    model = onnx_model.load(onnx_models.export("kernel_classes", folder / "kernel_classes.onnx"))
    path = folder / "kernel_classes-int8.onnx"
    quantize.quantize(model, path, request.param)
    return onnx_model.load(path), request.param


def pytest_collection_modifyitems(config, items):
    """The long tests (slow, emulated) first, the quick ones after. Under `--dist loadscope` pytest-xdist hands out
    whole modules, largest (most tests) first, so this orders the tests within each module; serially it orders
    the whole run."""
    items.sort(key=lambda item: not any(item.get_closest_marker(name) for name in ("slow", "emulated")))
