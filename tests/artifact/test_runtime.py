"""The device-side runtime wrapper: checks inputs, refuses a swapped library, runs standalone."""
import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compiler.artifact import runtime
from compiler.artifact.runtime import Model, ModelError

STDLIB = set(sys.stdlib_module_names)


def test_runs_and_matches_onnxruntime(tiny_artifact, tiny_cnn_onnx):
    import onnxruntime as ort

    image = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype("float32")
    (logits,) = Model(tiny_artifact).run(image)
    (expected,) = ort.InferenceSession(str(tiny_cnn_onnx)).run(None, {"input": image})
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    (by_name,) = Model(tiny_artifact).run(input=image)
    np.testing.assert_array_equal(by_name, logits)


@pytest.mark.parametrize("array, message", [
    (np.zeros((1, 3, 31, 32), "float32"), r"input 'input' must be float32\[1, 3, 32, 32\], got float32\[1, 3, 31, 32\]"),
    (np.zeros((1, 3, 32, 32), "float64"), r"must be float32\[1, 3, 32, 32\], got float64"),
])
def test_rejects_wrong_shape_or_dtype(tiny_artifact, array, message):
    with pytest.raises(ModelError, match=message):
        Model(tiny_artifact).run(array)


def test_rejects_wrong_input_count(tiny_artifact):
    with pytest.raises(ModelError, match=r"takes 1 input\(s\) \(input\), got 2"):
        Model(tiny_artifact).run(np.zeros((1, 3, 32, 32), "float32"), np.zeros(1, "float32"))


def copy_artifact(library, folder) -> Path:
    folder.mkdir()
    for path in Path(library).parent.iterdir():
        shutil.copy2(path, folder / path.name)
    return folder / Path(library).name


def test_refuses_a_library_whose_hash_differs(tiny_artifact, tmp_path):
    library = copy_artifact(tiny_artifact, tmp_path / "swapped")
    with open(library, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="swapped or corrupted"):
        Model(library)


def test_refuses_a_library_without_sidecar(tiny_artifact, tmp_path):
    library = copy_artifact(tiny_artifact, tmp_path / "alone")
    library.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="is missing"):
        Model(library)


def test_refuses_an_unknown_sidecar_schema(tiny_artifact, tmp_path):
    library = copy_artifact(tiny_artifact, tmp_path / "future")
    sidecar = json.loads(library.with_suffix(".json").read_text())
    sidecar["schema_version"] = 99
    library.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match="schema 99"):
        Model(library)


class TimedVM:
    """The model's VM, but its time evaluator reports `times_ms` (in this order) instead of measuring."""

    def __init__(self, vm, times_ms):
        self.vm, self.times_ms = vm, times_ms

    def __getattr__(self, name):
        return getattr(self.vm, name)

    def time_evaluator(self, name, device, number, repeat):
        return lambda function: SimpleNamespace(results=[t / 1e3 for t in self.times_ms[:repeat]])


def test_benchmark_reports_nearest_rank_percentiles(tiny_artifact):
    """Ten known times, unordered: the p90 is the 9th smallest (not the largest), the median the mean of
    the middle two."""
    model = Model(tiny_artifact)
    model.vm = TimedVM(model.vm, [7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0])
    stats = model.benchmark(repeat=10, warmup=1)
    assert (stats["median_ms"], stats["p90_ms"], stats["min_ms"], stats["runs"]) == pytest.approx((5.5, 9.0, 1.0, 10))
    measured = Model(tiny_artifact).benchmark(repeat=3, warmup=1)
    assert measured["runs"] == 3 and measured["min_ms"] > 0


def test_imports_only_tvm_numpy_and_stdlib():
    """Static check of runtime.py: copying it next to the .so must be enough on a device."""
    tree = ast.parse(Path(runtime.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import: runtime.py must not need the compiler package"
            imported.add(node.module.split(".")[0])
    assert imported - STDLIB <= {"tvm", "numpy"}, imported - STDLIB


def test_shipped_copy_runs_without_the_compiler_package(tiny_artifact, tmp_path):
    """The artifact folder alone (library, sidecar, runtime.py) runs in a fresh interpreter."""
    folder = Path(copy_artifact(tiny_artifact, tmp_path / "device")).parent
    script = ("import sys, numpy as np; sys.path.insert(0, '.'); from runtime import Model; "
              "out = Model('tiny_cnn.so').run(np.ones((1, 3, 32, 32), 'float32'))[0]; "
              "print(out.shape, 'compiler' in sys.modules, any(m.startswith('compiler.') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 10) False False"


def test_threads_default_to_the_cores_the_model_was_built_for(tiny_artifact, monkeypatch):
    """TVM's own default on x86 is half the CPUs (it assumes hyper-threads): on a 2-vCPU VM, one thread for a
    model built for two. The runtime asks for the sidecar's num-cores unless told otherwise."""
    cores = json.loads(tiny_artifact.with_suffix(".json").read_text())["target"]["num-cores"]
    monkeypatch.setenv("TVM_NUM_THREADS", "")  # recorded, so the teardown restores the session's value
    monkeypatch.delenv("TVM_NUM_THREADS")
    Model(tiny_artifact)
    assert runtime.os.environ["TVM_NUM_THREADS"] == str(cores)


def test_a_users_thread_setting_wins(tiny_artifact, monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "7")
    Model(tiny_artifact)
    assert runtime.os.environ["TVM_NUM_THREADS"] == "7"  # the environment, when no threads= is given
    Model(tiny_artifact, threads=3)
    assert runtime.os.environ["TVM_NUM_THREADS"] == "3"  # an explicit threads= over the environment
