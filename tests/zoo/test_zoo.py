"""The model zoo: AttendNeXt's four baselines at their papers' sizes, exported to ONNX, built for the host
and for the Raspberry Pi 4 (run on the emulated Pi) and verified against ONNX Runtime; `compile.py --model
NAME` and `--list-models`."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from compiler import zoo
from compiler.frontend.onnx_export import export_model, op_histogram
from compiler.zoo.mobileone import MobileOneBlock
from compiler.zoo.size import count_params_and_macs
from test_cli import assert_user_error, run_cli
from test_e2e import assert_verified

# Parameter counts the papers (and the AttendNeXt paper's comparison) give, at 1000 classes.
PAPER_PARAMS = {"mobilenetv3_large": 5.4e6, "mobileone_s1": 4.8e6, "fbnet_c": 5.5e6, "mobilevit_xs": 2.3e6}
BASELINES = list(PAPER_PARAMS)


def test_registry_names_and_papers():
    assert list(zoo.MODELS) == ["attendnext", *BASELINES]
    for entry in zoo.MODELS.values():
        assert "arXiv:" in entry.paper and callable(entry.build)


@pytest.mark.parametrize("name", BASELINES)
def test_parameter_count_within_2_percent_of_the_paper(name):
    entry = zoo.MODELS[name]
    params, macs = count_params_and_macs(entry.build(seed=None), entry.input_shape)
    assert abs(params / PAPER_PARAMS[name] - 1) <= 0.02, f"{name}: {params} parameters"
    assert 0.1e9 < macs < 1.5e9


@pytest.mark.parametrize("in_ch,out_ch,kernel,stride,groups", [
    (8, 8, 3, 1, 8), (8, 8, 3, 2, 8), (8, 8, 1, 1, 1), (8, 12, 1, 1, 1), (3, 8, 3, 2, 1)])
def test_mobileone_reparameterisation_computes_the_same(in_ch, out_ch, kernel, stride, groups):
    block = MobileOneBlock(in_ch, out_ch, kernel, stride, groups)
    for bn in (m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    block.eval()
    x = torch.randn(2, in_ch, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(block.reparameterized()(x), block(x), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (the seeded model, its ONNX file)."""
    folder = tmp_path_factory.mktemp("zoo")
    models = {name: zoo.MODELS[name].build(seed=0) for name in BASELINES}
    return {name: (model, export_model(model, folder / f"{name}.onnx", zoo.MODELS[name].input_shape, name)["path"])
            for name, model in models.items()}


def test_seeded_build_is_deterministic_and_not_degenerate(exported):
    first, again = exported["fbnet_c"][0], zoo.MODELS["fbnet_c"].build(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    images = torch.nn.functional.interpolate(torch.randn(2, 3, 14, 14, generator=torch.Generator().manual_seed(1)),
                                             size=(224, 224), mode="bilinear")
    with torch.no_grad():
        logits = first(images).numpy()
    spread = logits.std(axis=1).min()
    assert np.isfinite(logits).all() and spread > 1e-2
    assert np.abs(logits[0] - logits[1]).max() > 0.1 * spread  # different images, different logits


@pytest.mark.parametrize("name,ops", [("mobilenetv3_large", {"HardSwish", "HardSigmoid"}),
                                      ("mobileone_s1", {"Conv", "Relu"}), ("fbnet_c", {"Conv", "Relu"}),
                                      ("mobilevit_xs", {"MatMul", "Softmax", "LayerNormalization"})])
def test_onnx_export_matches_pytorch(name, ops, exported):
    """Folded BatchNorms, no Pad (export_onnx refuses both), the paper's operators, PyTorch's numerics."""
    model, path = exported[name]
    histogram = op_histogram(path)
    assert ops <= set(histogram) and "Identity" not in histogram  # no two initialisers alike, as if trained
    entry = zoo.MODELS[name]
    # the counted architecture (unseeded) is the one that ships: MobileOne's is made by re-parameterisation
    assert count_params_and_macs(model, entry.input_shape) == count_params_and_macs(entry.build(seed=None),
                                                                                   entry.input_shape)
    image = np.random.default_rng(0).standard_normal(entry.input_shape).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(image)).numpy()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": image})
    assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name != "mobileone_s1" else name
                                  for name in BASELINES])  # slow: over 30 s each; MobileOne-S1 builds in ~20 s
def test_host_build_matches_onnxruntime(name, tmp_path):
    """compile.py --model NAME: exported to build/NAME.onnx, built untuned for the host, verified."""
    out = tmp_path / f"{name}-host"
    result = run_cli("--model", name, "--target", "host", "--database", "none", "--out", out, "--verify")
    assert_verified(result, out, name, "host")
    assert json.loads((out / f"{name}.json").read_text())["tuning"]["kernels_tuned"] == 0


@pytest.fixture(scope="module")
def emulated_pi():
    """One emulated Raspberry Pi 4 behind a local tracker, shared by every model (one farm, not one per run)."""
    from compiler.device.farm import LocalFarm

    with LocalFarm(key="rpi4", servers=1) as farm:
        yield farm.tracker


@pytest.mark.slow
@pytest.mark.emulated
@pytest.mark.parametrize("name", BASELINES)
def test_rpi4_build_matches_onnxruntime_on_the_emulated_pi(name, emulated_pi, tmp_path):
    """compile.py --model NAME --target rpi4 --verify: cross-built with default schedules (no
    database), run on the emulated Pi (aarch64)."""
    out = tmp_path / f"{name}-rpi4"
    result = run_cli("--model", name, "--target", "rpi4", "--database", "none", "--out", out, "--verify",
                     "--tracker", emulated_pi)
    assert_verified(result, out, name, "rpi4")
    assert (out / f"{name}.so").read_bytes()[18] == 183  # EM_AARCH64
    print(result.stdout.strip().splitlines()[-1])  # the verify line, for the record (pytest -rP)


def test_list_models():
    result = run_cli("--list-models")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(zoo.MODELS)
    assert all("M params" in line and "GMACs" in line and "arXiv:" in line for line in lines)


def test_unknown_model_name_lists_the_known_ones():
    assert_user_error(run_cli("--model", "resnet50", "--target", "host"), "unknown model 'resnet50'", *zoo.MODELS)


def test_weights_are_for_attendnext_only(tmp_path):
    assert_user_error(run_cli("--model", "fbnet_c", "--weights", tmp_path / "w.pt", "--target", "host"),
                      "--weights loads AttendNeXt weights")
