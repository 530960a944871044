"""Default schedules: every kernel without a record is scheduled, computes what ONNX Runtime computes, and on
aarch64 runs on the preset's cores with NEON vectors (switched off, the library is TVM's single-threaded loops,
with a smaller share of vector multiply-adds)."""
import json
import re
import subprocess

import pytest

import onnx_models
from test_cli import run_cli

CLASSES = ["tiny_cnn", "mobilenet_mini", "vit_mini", "convnext_mini", "kernel_classes"]


def build(tmp_path, name, target, *extra):
    """compile.py on model `name` with no database; (result, sidecar)."""
    onnx = onnx_models.export(name, tmp_path / f"{name}.onnx")
    shape = ",".join(map(str, onnx_models.MODELS[name][1]))
    out = tmp_path / f"{name}-{target}"
    result = run_cli("--model", str(onnx), "--target", target, "--input-shape", f"input={shape}", "--database",
                     "none", "--out", str(out), *extra, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((out / f"{name}.json").read_text()), out / f"{name}.so"


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSES)
def test_every_kernel_class_matches_onnxruntime_on_the_host(tmp_path, name):
    """Convolutions (dense, 1x1, grouped, depthwise, strided), matmuls, softmax, layer norms, pooling, resize and
    element-wise kernels, each with its default schedule, against ONNX Runtime (relative error <= 1e-4)."""
    result, sidecar, _ = build(tmp_path, name, "host", "--verify")
    tuning = sidecar["tuning"]
    assert tuning["kernels_tuned"] == 0 and tuning["kernels_default"] == tuning["kernels_total"] > 0
    errors = [float(e) for e in re.findall(r"relative error ([0-9.e+-]+) ok", result.stdout)]
    assert errors and max(errors) <= 1e-4, result.stdout


def vector_and_scalar_fmas(library) -> tuple:
    """(NEON `fmla v.4s`, scalar `fmadd s`) in the disassembly (binutils-aarch64-linux-gnu, which make test
    installs with g++-aarch64-linux-gnu)."""
    text = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(library)], capture_output=True, text=True,
                          check=True).stdout
    return len(re.findall(r"\tfmla\s+v\d+\.4s", text)), len(re.findall(r"\tfmadd\s+s\d+", text))


def parallel_launches(library) -> bool:
    text = subprocess.run(["nm", "-D", str(library)], capture_output=True, text=True, check=True).stdout
    return "TVMBackendParallelLaunch" in text


@pytest.mark.slow
def test_the_aarch64_library_is_parallel_and_vectorised(tmp_path):
    _, sidecar, library = build(tmp_path, "mobilenet_mini", "rpi4")
    assert sidecar["tuning"]["kernels_default"] == sidecar["tuning"]["kernels_total"]
    assert parallel_launches(library)
    vector, scalar = vector_and_scalar_fmas(library)
    assert vector > 4 * scalar, (vector, scalar)
    # Switched off: TVM's bare loop nests, one thread and mostly scalar (what the defaults are measured against).
    (tmp_path / "off").mkdir()
    _, plain, bare = build(tmp_path / "off", "mobilenet_mini", "rpi4", "--default-schedules", "off")
    assert plain["tuning"]["kernels_default"] == 0 and not parallel_launches(bare)
    bare_vector, bare_scalar = vector_and_scalar_fmas(bare)
    assert vector / (vector + scalar) > bare_vector / (bare_vector + bare_scalar), (vector, scalar, bare_vector,
                                                                                   bare_scalar)
