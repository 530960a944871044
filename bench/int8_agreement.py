"""How close each int8 build lands to the float model beside ONNX Runtime int8 (the quality rule of `--verify`:
SQNR and top-1 agreement over 128 seeded inputs, compiler/device/quality.py), and how closely it agrees with ONNX
Runtime's run of its QDQ model, next to how closely ONNX Runtime's own optimised and unoptimised runs of that file
agree with each other (the reference's own spread).

    .venv/bin/python bench/int8_agreement.py --target rpi4 --json bench/results/int8-agreement-rpi4.json

Each model is quantized and built as `compile.py --model NAME --target T --quantize int8 --verify` does and run
on its device (the emulated Pi for an aarch64 preset), against ONNX Runtime on this host with the seeded input
of `--verify`. An aarch64 preset quantizes with int8 activations; ONNX Runtime on x86 fuses only part of such
a model into its integer kernels and computes the rest in float, so its two runs can differ.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import paths, targets  # noqa: E402
from compiler.bench.measure import machine, publish, source_commit  # noqa: E402
from compiler.bench.models import model_names  # noqa: E402
from compiler.device.verify import compare, seeded_inputs  # noqa: E402
from compiler.driver import QUANTIZED_TOLERANCE, CompileOptions, compile_model  # noqa: E402
from compiler.frontend import onnx_model  # noqa: E402


def reference_spread(qdq) -> float:
    """Largest relative difference between ONNX Runtime's optimised (default) and unoptimised runs of `qdq`."""
    import onnxruntime as ort

    arrays = seeded_inputs(qdq.inputs)
    feeds = {spec.name: array for spec, array in zip(qdq.inputs, arrays)}
    runs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        runs.append(ort.InferenceSession(str(qdq.path), options, providers=["CPUExecutionProvider"]).run(None, feeds))
    return max(c.rel_error for c in compare(qdq.output_names, runs[1], runs[0]))


def render(report: dict) -> str:
    lines = [f"int8 builds for {report['target']} on {report['device_note']}, against ONNX Runtime {report['onnxruntime']} "
             f"on {report['machine']['cpu_model']} ({report['machine']['llvm_cpu']}), seeded input of --verify "
             f"({report['command']}, commit {report['commit']})", "",
             "| model | activations | TVM int8 vs float (SQNR, top-1) | ONNX Runtime int8 vs float (SQNR, top-1) | "
             "quality rule | TVM int8 vs ONNX Runtime int8 (relative error) | ONNX Runtime optimised vs unoptimised run "
             "| within the tolerance |",
             "| --- | --- | --- | --- | --- | ---: | ---: | --- |"]
    for name, row in report["models"].items():
        q = row["quality"]
        lines.append(f"| {name} | {row['activations']} | {_side(q['tvm_sqnr_db'], q['tvm_top1'])} | "
                     f"{_side(q['onnxruntime_sqnr_db'], q['onnxruntime_top1'])} | {'passes' if q['passed'] else 'fails'} | "
                     f"{row['relative_error']:.3g} | {row['reference_spread']:.3g} | "
                     f"{'yes' if row['relative_error'] <= report['tolerance'] else 'no'} |")
    q = next(iter(report["models"].values()))["quality"]
    lines += ["", f"Quality: the first output against the float model's over {q['inputs']} inputs ({q['source']}), the "
              f"TVM library on its device and ONNX Runtime int8 on this host; the rule (`--verify` for int8 activations): "
              f"TVM's SQNR at least ONNX Runtime's minus {q['sqnr_margin_db']} dB, its top-1 agreement at least ONNX "
              f"Runtime's minus {100 * q['top1_margin']:.0f} points. Relative error: the largest difference of the "
              f"outputs over the largest output value on --verify's seeded input (tolerance {report['tolerance']:g}, "
              "one step of an int8 output's scale: `--verify`'s rule for uint8 activations)."]
    return "\n".join(lines) + "\n"


def _side(sqnr_db, top1) -> str:
    return ("exact" if sqnr_db is None else f"{sqnr_db:.1f} dB") + ("" if top1 is None else f", {top1:.0%}")


def main() -> int:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="rpi4")
    parser.add_argument("--models", help="comma-separated registered models (default: all, the five registered models)")
    parser.add_argument("--json")
    args = parser.parse_args()
    preset = targets.load(args.target)
    work = Path(tempfile.mkdtemp(prefix="dcac-int8-agreement-"))
    rows = {}
    for name in model_names(args.models or "all"):
        result = compile_model(CompileOptions(target=preset.name, model=name, quantize="int8", verify=True,
                                              out=str(work / name)))
        activations = result.sidecar["quantization"]["activation_type"]
        qdq = onnx_model.load(paths.quantized_onnx(name, activations))  # the file --verify ran ONNX Runtime on
        rows[name] = {"activations": activations,
                      "relative_error": max(c.rel_error for c in result.comparisons),
                      "reference_spread": reference_spread(qdq), "quality": result.quality.as_dict()}
    command = f"bench/int8_agreement.py --target {args.target}" + (f" --models {args.models}" if args.models else "") + (
        f" --json {args.json}" if args.json else "")
    commit = source_commit()
    report = {"target": preset.name, "device_note": "its device (the emulated Pi for an aarch64 preset)",
              "machine": machine(), "onnxruntime": onnxruntime.__version__, "command": command, "commit": commit,
              "tolerance": QUANTIZED_TOLERANCE, "models": rows}
    publish(report, args.json, render=render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
