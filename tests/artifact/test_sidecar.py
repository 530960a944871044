"""Artifacts: the sidecar says what the library is, and an interrupted build never looks complete."""
import json

import pytest

from compiler.artifact import sidecar as artifact
from compiler.artifact import linker
from compiler.errors import UserError


def test_sidecar_describes_the_library(tiny_artifact, tiny_cnn_onnx):
    import tvm

    from compiler.frontend.onnx_model import sha256_file

    sidecar = json.loads(tiny_artifact.with_suffix(".json").read_text())
    assert sidecar["schema_version"] == 1 and sidecar["model"] == "tiny_cnn"
    assert sidecar["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert sidecar["outputs"] == [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]
    assert sidecar["library_sha256"] == sha256_file(tiny_artifact)
    assert sidecar["onnx_sha256"] == sha256_file(tiny_cnn_onnx)
    assert sidecar["tvm_version"] == tvm.__version__ and sidecar["target_name"] == "host"
    assert sidecar["tuning"]["database"] is None and sidecar["tuning"]["kernels_tuned"] == 0
    assert sidecar["tuning"]["kernels_total"] >= 3 and sidecar["build_seconds"] > 0
    assert (tiny_artifact.parent / "runtime.py").is_file()


class ExplodingExecutable:
    """Writes half a library, then is interrupted, as a Ctrl-C during linking would."""

    def export_library(self, path, fcompile=None):
        with open(path, "wb") as handle:
            handle.write(b"\x7fELF half")
        raise KeyboardInterrupt


FIELDS = dict(model="m", onnx_sha256="0" * 64, inputs=[], outputs=[], target_name="host", target={},
              fusion="stock", layout="plain", tvm_version="x", tuning=artifact.TuningInfo(None, False, 0, 0), build_seconds=1.0)


def test_interrupted_build_leaves_nothing(tmp_path):
    out = tmp_path / "m-host"
    with pytest.raises(KeyboardInterrupt):
        artifact.write(out, ExplodingExecutable(), linker.find_linker(None), FIELDS)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rebuild_keeps_the_previous_artifact(tiny_artifact, tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    for path in tiny_artifact.parent.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        artifact.write(out, ExplodingExecutable(), linker.find_linker(None), dict(FIELDS, model="tiny_cnn"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_refuses_to_replace_a_folder_that_is_not_an_artifact(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no previous artifact"):
        artifact.check_output_dir(tmp_path)
    artifact.check_output_dir(tmp_path / "new")  # a new folder is fine
