"""Verification: run a built library on its device and compare with ONNX Runtime on the host.

The device is the host itself, a board behind an RPC tracker, or (no tracker given) the project's
emulated Raspberry Pi, started for the occasion.
"""
import contextlib
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .errors import DeviceError

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


def onnxruntime_outputs(onnx_path, specs, arrays) -> List[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
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


@contextlib.contextmanager
def device_session(preset, tracker: Optional[str], timeout: float = 600.0):
    """Yield an RPC session to a `preset.rpc_key` device, or None to run on the host itself."""
    from .farm import LocalFarm, parse_tracker, request_session

    if preset.is_host and tracker is None:
        yield None
        return
    if tracker is not None:
        host, port = parse_tracker(tracker)
        yield request_session(host, port, preset.rpc_key, timeout)
        return
    with LocalFarm(key=preset.rpc_key, servers=1) as farm:
        host, port = parse_tracker(farm.tracker)
        yield request_session(host, port, preset.rpc_key, timeout)


def verify(library_path, onnx_model, preset, tracker: Optional[str] = None, seed: int = 0):
    """Run the library on its device and ONNX Runtime on the host with the same seeded input."""
    from .runtime import Model

    arrays = seeded_inputs(onnx_model.inputs, seed)
    reference = onnxruntime_outputs(onnx_model.path, onnx_model.inputs, arrays)
    with device_session(preset, tracker) as session:
        outputs = Model(library_path, session=session).run(*arrays)
    return compare(onnx_model.output_names, outputs, reference)
