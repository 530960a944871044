"""`--quantize int8`: a float ONNX model -> the QDQ model ONNX Runtime's quantizer writes, and how well it agrees.

The quantization itself is `onnxruntime.quantization.quantize_static` (QDQ format, per-channel symmetric
int8 weights), not a calibration written here. The activation type follows the target's integer
instructions: uint8 activations x int8 weights on x86 (what VNNI's vpdpbusd multiplies, and the format
ONNX Runtime's own int8 kernels are fast in there), int8 x int8 on Arm (NEON smull/sadalp and sdot are
signed). The QDQ model is an ordinary ONNX file: the build ships it beside the library so that users can
run the same model in ONNX Runtime, and compiler/passes/integer_kernels.py turns its products into
integer kernels.
"""
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from compiler import atomic
from compiler.device.quality import sqnr_db, top1_agreement
from compiler.device.verify import first_outputs
from compiler.errors import UserError

SCHEMES = ("int8",)
ARRAY_SUFFIXES = (".npy",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
RANDOM_INPUTS = 16  # seeded standard-normal inputs when no --calibration folder is given
MAX_CALIBRATION_INPUTS = 256
# Images are scaled to [0, 1] and normalised with the ImageNet mean and deviation, the preprocessing of
# every registered model; a model that wants other preprocessing takes .npy arrays.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype="float32").reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype="float32").reshape(1, 3, 1, 1)


@dataclass
class Agreement:
    """How the QDQ model's first output compares with the float model's over the calibration inputs."""

    activation_type: str  # "uint8" or "int8"
    calibration: str  # the folder, or "random (seed 0)"
    inputs: int
    sqnr_db: float  # 10 log10(signal power / error power) of the first output
    top1_agreement: Optional[float]  # share of inputs whose arg-max class is the same (None: no class axis)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        top1 = f", top-1 agreement {self.top1_agreement:.1%}" if self.top1_agreement is not None else ""
        return (f"int8 ({self.activation_type} activations) against float over {self.inputs} calibration inputs "
                f"({self.calibration}): SQNR {self.sqnr_db:.1f} dB{top1}")


def activation_type(preset) -> str:
    """uint8 on x86 (u8 x s8: vpdpbusd), int8 on Arm (s8 x s8: smull/sadalp, sdot)."""
    import platform

    triple = preset.cross_triple or platform.machine()
    return "int8" if triple.startswith(("aarch64", "arm")) else "uint8"


def calibration_inputs(spec, folder: Optional[str], seed: int = 0) -> List[np.ndarray]:
    """The calibration inputs for one model input: every .npy array (one input, or a batch of them along
    the first axis) and image in `folder`, or RANDOM_INPUTS seeded standard-normal ones."""
    shape = tuple(spec.shape)
    if folder is None:
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(shape).astype("float32") for _ in range(RANDOM_INPUTS)]
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--calibration {folder} is not a folder: give a folder of .npy arrays or images")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in ARRAY_SUFFIXES + IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--calibration {folder} holds no .npy arrays or images ({', '.join(IMAGE_SUFFIXES)}): "
                        "add some, or leave out --calibration for a seeded random set")
    inputs = []
    for path in files:
        inputs.extend(_array_inputs(path, shape) if path.suffix.lower() in ARRAY_SUFFIXES
                      else [_image_input(path, shape)])
        if len(inputs) >= MAX_CALIBRATION_INPUTS:
            break
    return inputs[:MAX_CALIBRATION_INPUTS]


def _array_inputs(path: Path, shape) -> List[np.ndarray]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"--calibration: {path.name} is not a readable .npy array ({err}): remove it or save it "
                        "with numpy.save") from None
    if tuple(array.shape) == shape:
        return [array.astype("float32")]
    if array.ndim == len(shape) and tuple(array.shape[1:]) == shape[1:]:  # a batch along the first axis
        return [array[i:i + 1].astype("float32") for i in range(array.shape[0])]
    raise UserError(f"--calibration: {path.name} has shape {tuple(array.shape)}, the model's input is {shape}: "
                    "save arrays of the input's shape (or a batch of them along the first axis)")


def _image_input(path: Path, shape) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 4 or shape[1] != 3:
        raise UserError(f"--calibration: {path.name} is an image, but the model's input {shape} is not NCHW with "
                        "3 channels: give .npy arrays of the input's shape")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((shape[3], shape[2]), Image.BILINEAR), dtype="float32")
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"--calibration: {path.name} is not a readable image ({type(err).__name__}): remove it") from None
    chw = pixels.transpose(2, 0, 1)[None] / 255.0
    return np.repeat((chw - IMAGENET_MEAN) / IMAGENET_STD, shape[0], axis=0).astype("float32")


def quantize(model, out_path: Path, activation: str, calibration: Optional[str] = None) -> Agreement:
    """Write the QDQ model of `model` (an OnnxModel with one input) to `out_path` atomically and measure
    its agreement with the float model on the calibration inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if len(model.inputs) != 1:
        raise UserError(f"--quantize calibrates models with one input; {model.path.name} has {len(model.inputs)}: "
                        "quantize it with onnxruntime.quantization.quantize_static and pass the QDQ model")
    spec = model.inputs[0]
    inputs = calibration_inputs(spec, calibration)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{spec.name: x} for x in inputs])

        def get_next(self):
            return next(self.feeds, None)

    quant_type = QuantType.QInt8 if activation == "int8" else QuantType.QUInt8
    with atomic.staged_file(out_path) as staged:
        quantize_static(str(model.path), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=quant_type, weight_type=QuantType.QInt8)
    reference = first_outputs(model.path, spec.name, inputs)
    quantized = first_outputs(out_path, spec.name, inputs)
    return Agreement(activation, calibration or "random (seed 0)", len(inputs), sqnr_db(reference, quantized),
                     top1_agreement(reference, quantized))
