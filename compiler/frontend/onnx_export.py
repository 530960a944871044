"""Export a PyTorch model to a static-shape ONNX graph that TVM's Relax ONNX importer accepts."""
from __future__ import annotations

import collections
import os
import warnings
from pathlib import Path

import onnx
import torch

from compiler import zoo
from compiler.atomic import staged_file
from compiler.zoo.attendnext import build_attendnext
from compiler.zoo.size import count_params_and_macs

# Pad: the legacy exporter emits it with dynamic pads (from F.pad), which the Relax importer rejects.
# BatchNormalization: its presence means folding into the preceding Conv did not happen.
FORBIDDEN_OPS = ("Pad", "BatchNormalization")


def export_onnx(model: torch.nn.Module, path, input_shape=(1, 3, 224, 224), input_name="input",
                output_name="logits", opset=17) -> Path:
    """Write `model` (in eval mode) as ONNX at `path`, atomically, and return the path.

    Uses the legacy TorchScript exporter (dynamo=False; still present, deprecated, in torch 2.13): it
    gives fixed shapes and, with constant folding in eval mode, folds every BatchNorm into its Conv. The
    file appears only once it is complete and has passed onnx.checker and the forbidden-op check.
    """
    path = Path(path)
    model.eval()
    with staged_file(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices are not news
            torch.onnx.export(model, (torch.zeros(input_shape),), str(tmp), dynamo=False, opset_version=opset,
                              do_constant_folding=True, input_names=[input_name], output_names=[output_name])
        onnx.checker.check_model(str(tmp))
        forbidden = sorted(set(FORBIDDEN_OPS) & set(op_histogram(str(tmp))))
        if forbidden:
            raise RuntimeError(f"exported graph contains {forbidden}: TVM's ONNX importer needs them gone")
    return path


def op_histogram(model_or_path) -> dict[str, int]:
    """How many nodes of each op type the graph has, most frequent first."""
    graph = (onnx.load(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path).graph
    return dict(collections.Counter(node.op_type for node in graph.node).most_common())


def export_model(model: torch.nn.Module, path, input_shape, title: str) -> dict:
    """Print the model's size, export it; return parameters, MACs and the path written."""
    params, macs = count_params_and_macs(model, input_shape)
    print(f"{title}: {params / 1e6:.2f}M parameters, {macs / 1e9:.2f} GMACs")
    written = export_onnx(model, path, input_shape)
    return {"params": params, "macs": macs, "path": str(written)}


def export_attendnext(path, config=None, seed=0, weights=None) -> dict:
    """Build AttendNeXt (seeded, or from a state_dict) and export it."""
    model = build_attendnext(config, seed=seed, weights=weights)
    size = model.config.input_size
    return export_model(model, path, (1, model.config.in_channels, size, size), "AttendNeXt")


def export_registered(name: str, path, seed=0) -> dict:
    """Build a model of the registry (compiler.zoo), seeded, and export it at its paper's input size."""
    entry = zoo.lookup(name)
    return export_model(entry.build(seed=seed), path, entry.input_shape, name)
