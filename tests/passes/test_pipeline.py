"""compiler/passes/pipeline.py: phases composed from TVM's own lists; prepacked weights folded at build time."""
import json
import subprocess
import sys

import pytest

from compiler.passes import pipeline
from compiler.errors import UserError
from conftest import ROOT


def test_phases_use_tvms_cpu_lists_unchanged():
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    names = lambda passes: [p.info.name for p in passes]  # noqa: E731
    legalize = names(cpu_pipeline.legalize_passes(target))
    graph = names(pipeline.graph_passes("stock", "plain", target))
    start = graph.index(legalize[0])
    assert graph[start:start + len(legalize)] == legalize
    assert names(pipeline.lowering_passes(target)) == names(
        cpu_pipeline.dataflow_lower_passes(target) + cpu_pipeline.finalize_passes(target))
    assert "AttachAttrLayoutFreeBuffers" in names(pipeline.graph_passes("stock", "prepack", target))
    assert "AttachAttrLayoutFreeBuffers" not in graph


def test_unknown_layout_is_a_user_error():
    with pytest.raises(UserError, match="unknown weight layout 'nhwc'"):
        pipeline.graph_passes("stock", "nhwc")


@pytest.mark.slow
def test_prepacked_build_folds_weight_transforms_and_matches_onnxruntime(tiny_cnn_onnx, tmp_path):
    """Tuned with layout-free weights, the kernels read weights in a layout of their own; the build folds the
    transforms into the constants (none left in the lowered module) and the output still matches."""
    ir = tmp_path / "ir"
    result = subprocess.run([sys.executable, str(ROOT / "compile.py"), "--model", str(tiny_cnn_onnx), "--target",
                             "host", "--layout", "prepack", "--tune", "--trials", "12", "--judge-records", "off", "--database",
                             str(tmp_path / "db"), "--out", str(tmp_path / "out"), "--dump-ir", str(ir), "--verify"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "meta_schedule.layout_rewrite_preproc" in (ir / "2-tuned.py").read_text()
    for phase in ("2b-prepacked.py", "3-lower.py"):
        assert "layout_rewrite_preproc" not in (ir / phase).read_text(), phase
    assert "relative error" in result.stdout and " ok" in result.stdout
    sidecar = json.loads((tmp_path / "out" / "tiny_cnn.json").read_text())
    assert sidecar["layout"] == "prepack" and sidecar["tuning"]["kernels_tuned"] > 0
    assert sidecar["tuning"]["pipeline"] == pipeline.fingerprint("stock", "prepack")["hash"]
