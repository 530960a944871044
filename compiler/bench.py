"""`python -m compiler.bench`: AttendNeXt batch 1, TVM (shipped tuning database) against ONNX Runtime,
PyTorch eager and untuned TVM, measured side by side in one run.

Engines are measured in interleaved rounds (a few runs of each, again and again) so that load from other
processes on a shared machine falls on all of them alike; every engine gets the same thread count. The
figures that matter are the ratios to ONNX Runtime. On the emulated Pi the command only proves it works:
its output is labelled as emulated and is not a performance figure.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import atomic, targets
from .api import ROOT, CompileOptions, compile_model, say
from .errors import DeviceError, UserError


def _summary(times_ms) -> dict:
    ordered = sorted(times_ms)
    return {"median_ms": statistics.median(ordered), "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
            "min_ms": ordered[0], "runs": len(ordered)}


def table(times: dict) -> dict:
    """Per-engine median/p90 rows, each with its ratio to ONNX Runtime's median."""
    rows = {name: _summary(t) for name, t in times.items()}
    baseline = rows["ONNX Runtime"]["median_ms"]
    for row in rows.values():
        row["ratio_vs_onnxruntime"] = row["median_ms"] / baseline
    return rows


def _onnxruntime_runner(onnx_path, threads, image):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: image})


def _torch_runner(threads, image):
    import torch

    from .attendnext import build_attendnext

    torch.set_num_threads(threads)
    model = build_attendnext()
    tensor = torch.from_numpy(image)

    def run():
        with torch.inference_mode():
            model(tensor)
    return run


def _timed_runs(run, count) -> list:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure(engines: dict, tvm_models: dict, rounds: int, per_round: int, warmup: int = 3) -> dict:
    """Interleaved rounds; python engines timed around each call, TVM by its on-device time_evaluator."""
    times = {name: [] for name in [*tvm_models, *engines]}
    for name, run in engines.items():
        _timed_runs(run, warmup)
    for model in tvm_models.values():
        model.benchmark(repeat=warmup, warmup=1)
    for _ in range(rounds):
        for name, model in tvm_models.items():
            result = model.benchmark(repeat=per_round, warmup=0)
            times[name].extend(result["times_ms"])
        for name, run in engines.items():
            times[name].extend(_timed_runs(run, per_round))
    return times


def render_markdown(report: dict) -> str:
    lines = [f"AttendNeXt batch 1 on {report['device']}, {report['threads']} threads, "
             f"{report['runs_per_engine']} runs each ({report['command']})", "",
             "| engine | median (ms) | p90 (ms) | ratio vs ONNX Runtime |", "| --- | ---: | ---: | ---: |"]
    for name, row in report["engines"].items():
        lines.append(f"| {name} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} | {row['ratio_vs_onnxruntime']:.2f} |")
    if report.get("emulated"):
        lines += ["", "**EMULATED (qemu-user): these timings are not a performance figure of any ARM board.**"]
    if report.get("notes"):
        lines += ["", *report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compiler.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="host")
    parser.add_argument("--tracker", help="HOST:PORT of a tracker with a real board (aarch64 presets)")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per engine (median of these)")
    parser.add_argument("--json", help="write the table as JSON here (and Markdown beside it)")
    parser.add_argument("--fusion", default="stock", choices=["stock", "dcac"],
                        help="fusion mode of the TVM builds (its database: tuning_logs/<target>/attendnext[-dcac])")
    parser.add_argument("--skip-untuned", action="store_true", help="leave out TVM with default schedules")
    args = parser.parse_args(argv)
    try:
        preset = targets.load(args.target)
        if not preset.is_host:
            raise UserError("this benchmark measures on the host (`--target host`); on a board, run "
                            "compile.py --verify and runtime.Model.benchmark there")
        report = run_host(preset, args)
    except (UserError, DeviceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(render_markdown(report))
    if args.json:
        atomic.write_json(args.json, report)
        atomic.write_text(Path(args.json).with_suffix(".md"), render_markdown(report))
    return 0


def run_host(preset, args) -> dict:
    from .runtime import Model
    from .tuning import host_provenance

    import os

    threads = preset.num_cores
    os.environ["TVM_NUM_THREADS"] = str(threads)  # read by TVM's thread pool on first use
    work = Path(tempfile.mkdtemp(prefix="dcac-bench-"))
    tuned = compile_model(CompileOptions(target=preset.name, fusion=args.fusion, out=str(work / "tuned")))
    builds = {f"TVM {args.fusion} fusion (shipped tuning database)": tuned}
    if not args.skip_untuned:
        builds["TVM (untuned)"] = compile_model(CompileOptions(target=preset.name, fusion=args.fusion,
                                                               out=str(work / "untuned"), database="none"))
    notes = []
    coverage = tuned.sidecar["tuning"]
    if not coverage["database"]:
        notes.append("No tuning database was found for this target: the 'shipped' row is untuned.")
    else:
        notes.append(f"Tuned kernels: {coverage['kernels_tuned']} of {coverage['kernels_total']} "
                     f"from {Path(coverage['database']).relative_to(ROOT) if Path(coverage['database']).is_relative_to(ROOT) else coverage['database']}.")
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    tvm_models = {name: Model(build.library) for name, build in builds.items()}
    for model in tvm_models.values():
        model.set_inputs(image)
    engines = {"ONNX Runtime": _onnxruntime_runner(ROOT / "build" / "attendnext.onnx", threads, image),
               "PyTorch eager": _torch_runner(threads, image)}
    per_round = 5
    rounds = max(1, -(-args.runs // per_round))
    say(f"measuring {len(tvm_models) + len(engines)} engines, {rounds} interleaved rounds of {per_round} runs")
    times = measure(engines, tvm_models, rounds, per_round)
    rows = table(times)
    device = host_provenance()
    return {"model": "attendnext", "target": preset.name, "device": f"{device['cpu_model']} ({device['llvm_cpu']})",
            "threads": threads, "runs_per_engine": rounds * per_round, "emulated": False,
            "command": f"python -m compiler.bench --target {preset.name} --fusion {args.fusion}", "engines": rows,
            "notes": notes}


if __name__ == "__main__":
    sys.exit(main())
