"""Models exported the way users export them, compiled through compile.py and checked against ONNX Runtime.

Each model is exported by the dynamo exporter (torch.onnx.export's default in torch 2.13) and by the
legacy TorchScript one, always with a dynamic batch axis and the weights in an external-data file, then
compiled for the host with `--input-shape` binding the batch. The dynamo ConvNeXt is the graph whose
output shape was unknown after binding (its pooled head computes the batch size at run time).
"""
import json

import onnx
import pytest

import compile as cli
import onnx_models
from compiler.zoo.attendnext import build_attendnext, config_with
from test_attendnext import SMALL

MODELS = {  # name: (build, image size, batch bound by --input-shape)
    "attendnext": (lambda: build_attendnext(config_with(**SMALL)), SMALL["input_size"], 1),
    "convnext_mini": (onnx_models.ConvNeXtMini, 32, 2),
}
CASES = [(model, exporter) for model in MODELS for exporter in ("dynamo", "legacy")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{e}" for m, e in CASES])
def exported(request, tmp_path_factory):
    name, exporter = request.param
    build, size, batch = MODELS[name]
    folder = tmp_path_factory.mktemp(f"{name}-{exporter}")
    path = onnx_models.export_as_users_do(build(), folder / f"{name}.onnx", (1, 3, size, size), exporter == "dynamo")
    return path, size, batch


def test_export_has_a_dynamic_batch_and_external_weights(exported):
    path, _, _ = exported
    proto = onnx.load(str(path), load_external_data=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is symbolic
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert path.with_name(f"{path.name}.data").stat().st_size > 0


def test_compiles_with_a_bound_batch_and_matches_onnxruntime(exported, tmp_path, capsys):
    path, size, batch = exported
    out = tmp_path / "out"
    code = cli.main(["--model", str(path), "--target", "host", "--out", str(out), "--database", "none",
                     "--input-shape", f"input={batch},3,{size},{size}", "--verify"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert "verify logits: max abs error" in captured.out and " ok" in captured.out, captured.out
    sidecar = json.loads((out / f"{path.stem}.json").read_text())
    assert sidecar["inputs"][0]["shape"] == [batch, 3, size, size]
    assert sidecar["outputs"] == [{"name": "logits", "shape": [batch, 10], "dtype": "float32"}]
