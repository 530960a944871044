"""`python -m compiler bench --quantize int8`: int8 against float, TVM against ONNX Runtime, in one run.

Every model is built twice as `compile.py` builds it (float, and `--quantize int8`: ONNX Runtime's quantizer,
then integer kernels), each with its own database if one applies, else the default schedules. ONNX Runtime
runs the float ONNX file and the very QDQ model the int8 library was built from. The four engines of every
model are timed in interleaved rounds on the host, same thread count; the figures that compare are the
ratios within one run: TVM int8 / ONNX Runtime int8, and int8 / float for each engine.
"""
import tempfile
from pathlib import Path

from compiler import paths, zoo
from compiler.artifact.runtime import Model, use_threads
from compiler.bench.models import REFERENCE, model_names
from compiler.bench.measure import (
    bench_image,
    database_summary,
    interleaving,
    machine,
    measure,
    onnxruntime_timer,
    publish,
    tvm_timer,
)
from compiler.device import quality
from compiler.device.verify import verify
from compiler.driver import QUANTIZED_TOLERANCE, CompileOptions, compile_model
from compiler.errors import UserError
from compiler.frontend import onnx_model, quantize
from compiler.output import say

ENGINES = ("TVM float", "TVM int8", "ONNX Runtime float", "ONNX Runtime int8")


def build_pair(preset, name: str, work: Path) -> dict:
    """{"float": CompileResult, "int8": CompileResult, "qdq": QDQ model path} for one registered model."""
    built = {precision: compile_model(CompileOptions(target=preset.name, model=name, out=str(work / f"{name}-{precision}"),
                                                     quantize="int8" if precision == "int8" else None))
             for precision in ("float", "int8")}
    built["qdq"] = paths.quantized_onnx(name, quantize.activation_type(preset))
    return built


def run(preset, args) -> dict:
    if not preset.is_host:
        raise UserError("--quantize int8 times on this machine: use --target host, or --count-instructions for an "
                        "aarch64 preset's proxy")
    threads = preset.num_cores
    names = model_names(args.models or REFERENCE)
    work = Path(tempfile.mkdtemp(prefix="dcac-bench-int8-"))
    builds = {}
    for index, name in enumerate(names, 1):
        say(f"[{index}/{len(names)}] building {name} for {preset.name}, float and int8")
        builds[name] = build_pair(preset, name, work)
    use_threads(threads)
    agreement = {name: onnxruntime_agreement(name, built, preset) for name, built in builds.items()}
    timers = {}
    for name, built in builds.items():
        image = bench_image(zoo.lookup(name).input_shape)
        timers[name, "TVM float"] = tvm_timer(Model(built["float"].library))
        timers[name, "TVM int8"] = tvm_timer(Model(built["int8"].library))
        timers[name, "ONNX Runtime float"] = onnxruntime_timer(paths.exported_onnx(name), threads, image)
        timers[name, "ONNX Runtime int8"] = onnxruntime_timer(built["qdq"], threads, image)
    rounds, per_round = interleaving(args.runs)
    say(f"measuring {len(timers)} engines, {rounds} interleaved rounds of {per_round} runs")
    times = measure(timers, rounds, per_round)
    host = machine()
    command = (f"python -m compiler bench --target {preset.name} --quantize int8 --models {','.join(names)} "
               f"--runs {args.runs}" + (f" --json {args.json}" if args.json else ""))
    return {"target": preset.name, "device": f"{host['cpu_model']} ({host['llvm_cpu']})", "machine": host,
            "threads": threads, "runs_per_engine": rounds * per_round, "command": command,
            "models": {name: {**_row(built, {e: times[name, e] for e in ENGINES}), "onnxruntime_agreement": agreement[name]}
                       for name, built in builds.items()}}


def onnxruntime_agreement(name: str, built: dict, preset) -> dict:
    """--verify's checks, on the host: the int8 library against ONNX Runtime's run of its QDQ model, and both
    against the float model over 128 seeded inputs (compiler/device/quality.py)."""
    qdq = onnx_model.load(built["qdq"])
    comparisons = verify(built["int8"].library, qdq, preset)
    judged = quality.measure(built["int8"].library, paths.exported_onnx(name), qdq, preset)
    return {"relative_error": max(c.rel_error for c in comparisons), "tolerance": QUANTIZED_TOLERANCE,
            "quality": judged.as_dict()}


def _row(built: dict, times: dict) -> dict:
    import numpy as np

    medians = {engine: float(np.median(samples)) for engine, samples in times.items()}
    return {"median_ms": medians,
            "ratios": {"TVM int8 / ONNX Runtime int8": medians["TVM int8"] / medians["ONNX Runtime int8"],
                       "TVM int8 / TVM float": medians["TVM int8"] / medians["TVM float"],
                       "ONNX Runtime int8 / ONNX Runtime float":
                           medians["ONNX Runtime int8"] / medians["ONNX Runtime float"],
                       "TVM float / ONNX Runtime float": medians["TVM float"] / medians["ONNX Runtime float"]},
            "agreement": built["int8"].sidecar["quantization"],
            "databases": {precision: database_summary(built[precision]) for precision in ("float", "int8")}}


def render(report: dict) -> str:
    ratio_names = list(next(iter(report["models"].values()))["ratios"])
    lines = [f"int8 against float, batch 1 on {report['device']}, {report['threads']} threads, "
             f"{report['runs_per_engine']} runs per engine, interleaved ({report['command']})", "",
             "| model | " + " | ".join(f"{e} (ms)" for e in ENGINES) + " | " + " | ".join(ratio_names)
             + " | TVM int8 vs float (SQNR, top-1) | ONNX Runtime int8 vs float (SQNR, top-1) | quality rule"
             " | TVM int8 vs ONNX Runtime int8 (relative error) | TVM databases (float / int8) |",
             "| --- | " + " | ".join("---:" for _ in ENGINES) + " | " + " | ".join("---:" for _ in ratio_names)
             + " | --- | --- | --- | ---: | --- |"]
    for name, row in report["models"].items():
        judged = row["onnxruntime_agreement"]["quality"]
        databases = " / ".join(_database_label(row["databases"][p]) for p in ("float", "int8"))
        lines.append(f"| {name} | " + " | ".join(f"{row['median_ms'][e]:.2f}" for e in ENGINES) + " | "
                     + " | ".join(f"{row['ratios'][r]:.2f}x" for r in ratio_names)
                     + f" | {_quality(judged['tvm_sqnr_db'], judged['tvm_top1'])}"
                     f" | {_quality(judged['onnxruntime_sqnr_db'], judged['onnxruntime_top1'])}"
                     f" | {'passes' if judged['passed'] else 'fails'}"
                     f" | {row['onnxruntime_agreement']['relative_error']:.2g} | {databases} |")
    judged = next(iter(report["models"].values()))["onnxruntime_agreement"]["quality"]
    lines += ["", f"Quality: each int8 model's first output against the float model's over {judged['inputs']} "
              f"inputs ({judged['source']}), TVM's int8 library and ONNX Runtime's int8 run of the same QDQ file; "
              f"the rule: TVM's SQNR at least ONNX Runtime's minus {judged['sqnr_margin_db']} dB and its top-1 "
              f"agreement at least ONNX Runtime's minus {100 * judged['top1_margin']:.0f} points (docs/int8.md). The "
              "registered models carry seeded, untrained weights, so these say how much the network amplifies "
              "quantization noise, not a trained model's accuracy. TVM int8 vs ONNX Runtime int8: the largest "
              "difference of the outputs on the seeded input over the largest output value (uint8 activations: "
              f"`--verify` passes within {QUANTIZED_TOLERANCE:g})."]
    return "\n".join(lines) + "\n"


def _quality(sqnr_db, top1) -> str:
    sqnr = "exact" if sqnr_db is None else f"{sqnr_db:.1f} dB"
    return sqnr + ("" if top1 is None else f", {top1:.0%}")


def _database_label(summary: dict) -> str:
    if not summary["path"]:
        return "none (default schedules)"
    return f"{summary['kernels_tuned']}/{summary['kernels_total']} tuned ({summary['cpu']})"


def publish_report(report: dict, json_path=None) -> None:
    publish(report, json_path, render=render)
