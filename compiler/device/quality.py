"""int8 quality judged against the float model, beside ONNX Runtime's int8 run of the same QDQ file.

What a user of a quantizer checks is how far the int8 model lands from the float model, and whether an
implementation lands as close as the reference one does. Matching ONNX Runtime's int8 outputs to the last
rounding tie is not that: its own optimised and unoptimised runs of one QDQ file differ by more than one int8
step on some models (docs/int8.md). So a model quantized by `--quantize int8` with int8 activations passes
`--verify` when, over the same inputs (at least 128 seeded ones, or the calibration set), the TVM library on its
device has an SQNR against the float model of at least ONNX Runtime int8's minus SQNR_MARGIN_DB, and a top-1
agreement with it of at least ONNX Runtime int8's minus TOP1_MARGIN. Fewer inputs would make top-1 noise: the
registered models' seeded weights leave small logit margins.

The float model and ONNX Runtime run on the host; the TVM library runs on its device (host, board or emulated Pi).
"""
import math
from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np

from compiler.artifact.runtime import Model
from compiler.device import verify
from compiler.device.session import SESSION_TIMEOUT, open_session

QUALITY_INPUTS = 128
SQNR_MARGIN_DB = 0.5
TOP1_MARGIN = 0.05
INPUTS_PER_SESSION_TIMEOUT = 16  # a session's time limit (device/session.py) is granted per so many inputs


@dataclass
class Quality:
    """The first output of the int8 model against the float model's, for TVM and for ONNX Runtime int8."""

    inputs: int
    source: str  # SEEDED or the calibration folder
    tvm_sqnr_db: float
    onnxruntime_sqnr_db: float
    tvm_top1: Optional[float]  # None: the output has no class axis
    onnxruntime_top1: Optional[float]

    def passed(self) -> bool:
        sqnr = self.tvm_sqnr_db >= self.onnxruntime_sqnr_db - SQNR_MARGIN_DB
        top1 = self.tvm_top1 is None or self.tvm_top1 >= self.onnxruntime_top1 - TOP1_MARGIN
        return sqnr and top1

    def describe(self) -> str:
        def side(sqnr, top1):
            return f"SQNR {sqnr:.1f} dB" + ("" if top1 is None else f", top-1 {top1:.1%}")

        verdict = "ok" if self.passed() else "FAILED"
        return (f"int8 against float over {self.inputs} inputs ({self.source}): TVM {side(self.tvm_sqnr_db, self.tvm_top1)}"
                f"; ONNX Runtime int8 {side(self.onnxruntime_sqnr_db, self.onnxruntime_top1)} {verdict} (rule: SQNR "
                f"at least ONNX Runtime's - {SQNR_MARGIN_DB} dB, top-1 at least ONNX Runtime's - {100 * TOP1_MARGIN:.0f} points)")

    def as_dict(self) -> dict:
        finite = {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}
        return {**finite, "passed": self.passed(), "sqnr_margin_db": SQNR_MARGIN_DB, "top1_margin": TOP1_MARGIN}


def seeded_inputs(spec, count: int = QUALITY_INPUTS, seed: int = 0) -> List[np.ndarray]:
    """`count` seeded standard-normal inputs (the kind `--verify` feeds), for when no calibration set is given."""
    return verify.seeded_inputs([spec] * count, seed)


SEEDED = "seeded standard-normal, seed 0"


def measure(library_path, float_path, qdq_model, preset, tracker: Optional[str] = None, inputs=None,
            source: str = SEEDED) -> Quality:
    """TVM's int8 library on its device and ONNX Runtime's int8 run, each against the float model, over `inputs`
    (default: QUALITY_INPUTS seeded ones)."""
    spec = qdq_model.inputs[0]
    inputs = inputs if inputs is not None else seeded_inputs(spec)
    reference = verify.first_outputs(float_path, spec.name, inputs)
    onnxruntime_int8 = verify.first_outputs(qdq_model.path, spec.name, inputs)
    # one session runs every input: on the emulated Pi an int8 MobileViT takes seconds per inference
    timeout = SESSION_TIMEOUT * math.ceil(len(inputs) / INPUTS_PER_SESSION_TIMEOUT)
    with open_session(preset, tracker, timeout=timeout) as session:
        model = Model(library_path, session=session)
        tvm_int8 = np.stack([model.run(x)[0] for x in inputs])
    return Quality(len(inputs), source, sqnr_db(reference, tvm_int8), sqnr_db(reference, onnxruntime_int8),
                   top1_agreement(reference, tvm_int8), top1_agreement(reference, onnxruntime_int8))


def sqnr_db(reference: np.ndarray, quantized: np.ndarray) -> float:
    """10 log10(signal power / error power); infinite when they are equal."""
    noise = float(np.sum((reference.astype("float64") - quantized) ** 2))
    signal = float(np.sum(reference.astype("float64") ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def top1_agreement(reference: np.ndarray, quantized: np.ndarray) -> Optional[float]:
    """Share of inputs whose arg-max over the last axis agrees, for outputs shaped (..., batch, classes)."""
    if reference.ndim < 2 or reference.shape[-1] < 2:
        return None
    return float(np.mean(reference.argmax(axis=-1) == quantized.argmax(axis=-1)))

