"""compiler/bench/user_backbones.py: the eight backbones a user brings are the published architectures (their
parameter counts as their papers and timm give them) and export to ONNX the way users export them."""
import pytest
import torch

from compiler.bench import user_backbones

# Millions of parameters at 1000 classes, as published (timm's model cards give the same counts).
PUBLISHED = {"convnext_atto": 3.70, "efficientnet_b0": 5.29, "regnetx_200mf": 2.68, "regnety_400mf": 4.34,
             "mixnet_s": 4.13, "ghostnet_100": 5.18, "resnet18": 11.69, "deit_tiny": 5.72}


def test_eight_backbones_of_several_families():
    assert sorted(user_backbones.BACKBONES) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameters_match_the_published_architecture(name):
    model = user_backbones.build(name)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(PUBLISHED[name], abs=0.006)
    with torch.no_grad():
        assert model(torch.randn(user_backbones.IMAGE)).shape == (1, 1000)


def test_export_runs_in_onnxruntime_like_the_network(tmp_path):
    import numpy as np
    import onnxruntime as ort

    path = user_backbones.export("regnetx_200mf", tmp_path / "regnetx.onnx")
    image = np.random.default_rng(0).standard_normal(user_backbones.IMAGE).astype("float32")
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": image})[0]
    with torch.no_grad():
        want = user_backbones.build("regnetx_200mf")(torch.from_numpy(image)).numpy()
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))
