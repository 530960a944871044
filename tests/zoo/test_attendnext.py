"""AttendNeXt reconstruction and its ONNX export: size targets, sane outputs, a TVM-importable graph."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from compiler.zoo.attendnext import AttendNeXtConfig, AttentionCondenser, DCAC, build_attendnext, config_with
from compiler.errors import UserError
from compiler.frontend.onnx_export import export_attendnext, export_onnx, op_histogram
from compiler.zoo.size import count_params_and_macs

SMALL = dict(num_classes=10, input_size=64, column_units=(1, 1), merged_widths=(32, 48), merged_blocks=(2, 1),
             merged_groups=(4, 4), head_channels=64)


def structured_images(n, size=224, seed=1):
    """Smooth random images: unlike white noise, a random CNN tells them apart after global pooling."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(n, 3, size // 16, size // 16, generator=g), size=(size, size),
                         mode="bilinear", align_corners=False)


def run(model, x):
    with torch.no_grad():
        return model(x).numpy()


@pytest.fixture(scope="module")
def model():
    return build_attendnext()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "attendnext.onnx"
    info = export_attendnext(path)
    return info, onnx.load(path)


def test_default_size_meets_targets(model):
    params, macs = count_params_and_macs(model)
    assert 2.0e6 <= params <= 3.9e6
    assert 0.3e9 <= macs <= 0.7e9


def test_forward_shape_and_outputs_not_degenerate(model):
    logits = run(model, structured_images(2))
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
    spread = logits.std(axis=1).min()
    assert spread > 1e-2  # classes differ
    # Inputs differ by a fair share of the class spread (an untrained net may still share the top class).
    assert np.abs(logits[0] - logits[1]).max() > 0.1 * spread


@pytest.mark.parametrize("module", [AttentionCondenser, DCAC])
def test_condensers_keep_shape_and_are_residual(module):
    condenser = module(16, 8, groups=4).eval()
    v = torch.randn(1, 16, 8, 8)
    assert condenser(v).shape == v.shape
    condenser.scale.data.zero_()  # s = 0 leaves only the residual
    assert torch.equal(condenser(v), v)


def test_export_prints_size_and_writes_only_the_model(exported, tmp_path, capsys):
    info = export_attendnext(tmp_path / "m.onnx", config_with(**SMALL))
    assert capsys.readouterr().out.startswith("AttendNeXt: ")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind
    assert exported[0]["params"] > info["params"]


def test_onnx_graph_is_static_folded_and_has_the_dcac_ops(exported):
    _, graph = exported
    ops = op_histogram(graph)
    assert "Pad" not in ops and "BatchNormalization" not in ops
    assert {"Resize", "MaxPool", "Sigmoid", "Conv", "Mul", "Add"} <= set(ops)
    assert ops["Resize"] == 2 * ops["MaxPool"]  # every DC-AC: one pooling, two upsamplings
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*graph.graph.input, *graph.graph.output)]
    assert dims == [[1, 3, 224, 224], [1, 1000]]


def test_onnx_runtime_matches_pytorch(exported, model):
    import onnxruntime

    info, _ = exported
    x = structured_images(1, seed=3)
    session = onnxruntime.InferenceSession(info["path"], providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    want = run(model, x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_tvm_relax_importer_accepts_the_graph(exported):
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(exported[1], shape_dict={"input": [1, 3, 224, 224]})
    assert "main" in [gv.name_hint for gv in mod.get_global_vars()]


def test_config_changes_are_honoured(tmp_path):
    config = config_with(**SMALL, activation="relu", downsample="avgpool")
    small = build_attendnext(config, seed=3)
    assert run(small, structured_images(1, 64)).shape == (1, 10)
    path = export_onnx(small, tmp_path / "small.onnx", (1, 3, 64, 64))
    ops = op_histogram(path)
    assert "AveragePool" in ops and "Relu" in ops and "Pad" not in ops


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="activation"):
        AttendNeXtConfig(activation="gelu")
    with pytest.raises(UserError, match="even size"):
        build_attendnext(config_with(input_size=200))  # 200 -> 100 -> 50 -> 25: odd map before a DC-AC


def test_seed_is_reproducible_and_saved_weights_reload(tmp_path):
    config = config_with(**SMALL)
    x = structured_images(1, 64)
    trained = build_attendnext(config, seed=5)
    assert np.array_equal(run(trained, x), run(build_attendnext(config, seed=5), x))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    reloaded = build_attendnext(config, seed=6, weights=tmp_path / "w.pt")
    assert np.array_equal(run(reloaded, x), run(trained, x))
    assert not np.array_equal(run(build_attendnext(config, seed=6), x), run(trained, x))


def test_missing_or_mismatched_weights_are_user_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(UserError, match="nope.pt") as err:
        build_attendnext(weights=missing)
    assert "\n" not in str(err.value)
    torch.save(build_attendnext(config_with(**SMALL)).state_dict(), tmp_path / "small.pt")
    with pytest.raises(UserError, match="does not match") as err:
        build_attendnext(weights=tmp_path / "small.pt")
    assert "\n" not in str(err.value)
