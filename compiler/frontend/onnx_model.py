"""Load and validate a user's ONNX file before TVM sees it, so every mistake is one clear line.

The TVM importer fails deep inside with a traceback on an unknown operator or a dynamic dimension; here
those become UserErrors that name every offender at once and say what to do.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from compiler.artifact.runtime import (
    sha256_file,  # the one sha256 helper (the runtime stays standalone: never the reverse)
)
from compiler.errors import UserError

ONNX_DOMAINS = ("", "ai.onnx")


@dataclass
class TensorSpec:
    name: str
    shape: Tuple[int, ...]
    dtype: str

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class OnnxModel:
    path: Path
    proto: object  # onnx.ModelProto
    sha256: str
    inputs: List[TensorSpec]
    output_names: List[str]

    @property
    def name(self) -> str:
        return self.path.stem


def parse_input_shapes(specs: Optional[List[str]]) -> Dict[str, Tuple[int, ...]]:
    """`["name=1,3,224,224", ...]` -> {"name": (1, 3, 224, 224)}."""
    shapes = {}
    for spec in specs or []:
        name, sep, dims = spec.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.split(","))
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise UserError(f"--input-shape '{spec}' is not NAME=D1,D2,...: write e.g. input=1,3,224,224") from None
        shapes[name] = shape
    return shapes


# Quantized operators of ONNX's operator format: TVM 0.27 imports none of them; the QDQ format of the
# same model (QuantizeLinear / DequantizeLinear around float operators) it does, and the compiler turns
# its products into integer kernels (compiler/passes/integer_kernels.py).
OPERATOR_FORMAT_QUANTIZED = ("QLinearConv", "QLinearMatMul", "ConvInteger", "QLinearAdd", "QLinearMul",
                             "QLinearSigmoid", "QLinearLeakyRelu", "QLinearGlobalAveragePool", "QLinearConcat",
                             "QLinearAveragePool", "QLinearSoftmax", "QGemm", "QAttention")


def is_quantized(proto) -> bool:
    """A QDQ model: it has QuantizeLinear or DequantizeLinear nodes."""
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in proto.graph.node)


def unsupported_operators(proto) -> List[str]:
    """Operator types the TVM Relax importer has no converter for (sorted, each once)."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    ops = {node.op_type for node in proto.graph.node if node.domain in ONNX_DOMAINS}
    foreign = {f"{node.domain}::{node.op_type}" for node in proto.graph.node if node.domain not in ONNX_DOMAINS}
    return sorted({op for op in ops if op not in known} | foreign)


def _dtype_name(elem_type: int) -> str:
    import onnx

    return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _missing_external_data(path: Path) -> Optional[Path]:
    """The first external-data file `path` refers to that does not exist (None if all exist or none used)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), None)
            if location and not (path.parent / location).is_file():
                return path.parent / location
    return None


def load(path, input_shapes: Optional[Dict[str, Tuple[int, ...]]] = None) -> OnnxModel:
    import onnx

    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.onnx"))
        raise UserError(f"--model {path} is a directory: give the .onnx file inside it"
                        + (f" (e.g. {path / found[0]})" if found else ""))
    if not path.is_file():
        raise UserError(f"model file {path} not found: check the path given to --model")
    try:
        proto = onnx.load(str(path))
    except Exception as err:  # protobuf raises DecodeError and friends; onnx a ValidationError
        missing = _missing_external_data(path)
        if missing:
            raise UserError(f"{path.name} keeps its weights in an external-data file that is missing: {missing}; "
                            f"copy it next to {path.name}, where the exporter wrote it") from None
        raise UserError(f"{path} is not an ONNX model ({type(err).__name__}): pass a .onnx file, "
                        "e.g. one written by torch.onnx.export") from None
    if not proto.graph.node:
        raise UserError(f"{path} is not an ONNX model (it has no graph nodes): pass a .onnx file")
    missing = unsupported_operators(proto)
    quantized = sorted({op.split("::")[-1] for op in missing} & set(OPERATOR_FORMAT_QUANTIZED))
    if quantized:
        raise UserError(f"{path.name} is quantized in ONNX's operator format ({', '.join(quantized)}), which TVM "
                        "cannot import: quantize it in the QDQ format (onnxruntime.quantization.quantize_static("
                        "..., quant_format=QuantFormat.QDQ)), or pass the float model with --quantize int8")
    if missing:
        raise UserError(f"{path.name} uses ONNX operators TVM cannot import: {', '.join(missing)}; "
                        "replace them in the model before export")
    input_shapes = dict(input_shapes or {})
    initializers = {init.name for init in proto.graph.initializer}
    graph_inputs = [value for value in proto.graph.input if value.name not in initializers]
    names = [value.name for value in graph_inputs]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise UserError(f"--input-shape names {', '.join(unknown)}, but the model's inputs are "
                        f"{', '.join(names)}: use one of those names")
    inputs, dynamic = [], []
    for value in graph_inputs:
        tensor = value.type.tensor_type
        if value.name in input_shapes:
            shape = input_shapes[value.name]
            declared = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
            if len(declared) != len(shape) or any(d > 0 and d != s for d, s in zip(declared, shape)):
                shown = ",".join(str(d) if d > 0 else "?" for d in declared)
                raise UserError(f"--input-shape {value.name}={','.join(map(str, shape))} does not fit the model's "
                                f"input shape ({shown}): only its dynamic (?) dimensions can be set")
        else:
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
            if any(d <= 0 for d in dims):
                dynamic.append(value.name)
                continue
            shape = tuple(dims)
        inputs.append(TensorSpec(value.name, tuple(shape), _dtype_name(tensor.elem_type)))
    if dynamic:
        raise UserError(f"input {', '.join(dynamic)} has dynamic dimensions: give static ones with "
                        f"--input-shape {dynamic[0]}=1,3,224,224 (your sizes)")
    return OnnxModel(path=path, proto=proto, sha256=sha256_file(path), inputs=inputs,
                     output_names=[out.name for out in proto.graph.output])
