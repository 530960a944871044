"""Verification: run a built library on its device and compare with ONNX Runtime on the host.

The device is the host itself, a board behind an RPC tracker, or (no tracker given) the project's
emulated Raspberry Pi, started for the occasion.
"""
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from compiler.artifact.runtime import Model
from compiler.device.session import open_session
from compiler.errors import DeviceError

DEFAULT_TOLERANCE = 1e-4  # relative to the reference's largest magnitude; float32 across ISAs


@dataclass
class Comparison:
    name: str
    max_abs_error: float
    rel_error: float  # max |device - reference| / max |reference|

    def passed(self, tolerance: float) -> bool:
        return self.rel_error <= tolerance


def seeded_inputs(specs, seed: int = 0) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(spec.shape).astype(spec.dtype) for spec in specs]


def onnxruntime_session(onnx_path):
    """ONNX Runtime's CPU session of a file, the reference every comparison runs; quiet, since its optimiser's
    warnings about a user's graph are not the compiler's to print."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def first_outputs(onnx_path, name: str, inputs) -> np.ndarray:
    """The first output for each input of a one-input model, stacked, from one ONNX Runtime session."""
    session = onnxruntime_session(onnx_path)
    return np.stack([session.run(None, {name: x})[0] for x in inputs])


def onnxruntime_outputs(onnx_path, specs, arrays) -> List[np.ndarray]:
    session = onnxruntime_session(onnx_path)
    return session.run(None, {spec.name: array for spec, array in zip(specs, arrays)})


def compare(names, device_outputs, reference_outputs) -> List[Comparison]:
    results = []
    for name, got, want in zip(names, device_outputs, reference_outputs):
        if got.shape != want.shape:
            raise DeviceError(f"output {name} has shape {got.shape} on the device, {want.shape} in ONNX Runtime")
        diff = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        results.append(Comparison(name, diff, diff / scale if scale else diff))
    return results


def verify(library_path, onnx_model, preset, tracker: Optional[str] = None, seed: int = 0):
    """Run the library on its device and ONNX Runtime on the host with the same seeded input."""
    arrays = seeded_inputs(onnx_model.inputs, seed)
    reference = onnxruntime_outputs(onnx_model.path, onnx_model.inputs, arrays)
    with open_session(preset, tracker) as session:
        outputs = Model(library_path, session=session).run(*arrays)
    return compare(onnx_model.output_names, outputs, reference)
