"""`python -m compiler.bench`: AttendNeXt batch 1, TVM (shipped tuning database) against ONNX Runtime,
PyTorch eager and untuned TVM, measured side by side in one run.

Engines are measured in interleaved rounds (a few runs of each, again and again) so that load from other
processes on a shared machine falls on all of them alike; every engine gets the same thread count. The
figures that matter are the ratios to ONNX Runtime. On the emulated Pi the command only proves it works:
its output is labelled as emulated and is not a performance figure.
"""
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import atomic, targets, tuning_db
from .api import ROOT, CompileOptions, compile_model, say
from .pipeline import DEFAULT_LAYOUT, LAYOUTS
from .errors import DeviceError, UserError


def _summary(times_ms) -> dict:
    ordered = sorted(times_ms)
    return {"median_ms": statistics.median(ordered), "p90_ms": ordered[math.ceil(0.9 * len(ordered)) - 1],
            "min_ms": ordered[0], "runs": len(ordered)}


def table(times: dict) -> dict:
    """Per-engine median/p90 rows, each with its ratio to ONNX Runtime's median."""
    rows = {name: _summary(t) for name, t in times.items()}
    baseline = rows["ONNX Runtime"]["median_ms"]
    for row in rows.values():
        row["ratio_vs_onnxruntime"] = row["median_ms"] / baseline
    return rows


def onnxruntime_timer(onnx_path, threads, image):
    """ONNX Runtime on this machine: its best graph optimisation level, `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _wall_clock_timer(lambda: session.run(None, {name: image}))


def torch_timer(threads, image, model_name="attendnext"):
    """PyTorch eager on the registered model (compiler.zoo), seeded as its ONNX export is."""
    import torch

    from . import zoo

    torch.set_num_threads(threads)
    model = zoo.lookup(model_name).build(seed=0)
    tensor = torch.from_numpy(image)

    def run():
        with torch.inference_mode():
            model(tensor)
    return _wall_clock_timer(run)


def onnx_path(model_name: str) -> Path:
    """Where compile_model exported a registered model (compiler/api.py prepare_onnx)."""
    return ROOT / "build" / f"{model_name}.onnx"


def host_engines(threads, image, model_name="attendnext") -> dict:
    """The comparison engines on the host: ONNX Runtime and PyTorch eager, same thread count."""
    return {"ONNX Runtime": onnxruntime_timer(onnx_path(model_name), threads, image),
            "PyTorch eager": torch_timer(threads, image, model_name)}


def tvm_timer(model):
    """A runtime.Model (local or over RPC), timed by the device's own time_evaluator."""
    return lambda count: model.benchmark(repeat=count, warmup=0)["times_ms"]


def device_onnxruntime_timer(session, onnx_path: Path, threads: int):
    """ONNX Runtime on the board itself, through device_server.py's `dcac.onnxruntime_benchmark`."""
    try:
        remote = session.get_function("dcac.onnxruntime_benchmark")
    except Exception:
        raise DeviceError("the device's RPC server has no dcac.onnxruntime_benchmark: run compiler/device_server.py "
                          "on the board (not the plain tvm rpc_server) and `pip install onnxruntime` there") from None
    session.upload(str(onnx_path))

    def timer(count):
        result = json.loads(remote(onnx_path.name, threads, count))
        if "error" in result:
            raise DeviceError(f"ONNX Runtime on the device: {result['error']}")
        return result["times_ms"]
    return timer


def _wall_clock_timer(run):
    def timer(count):
        times = []
        for _ in range(count):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3)
        return times
    return timer


def measure(timers: dict, rounds: int, per_round: int, warmup: int = 3) -> dict:
    """Interleaved rounds of `per_round` runs of every engine; a timer maps a run count to times in ms."""
    for timer in timers.values():
        timer(warmup)
    times = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].extend(timer(per_round))
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


EXAMPLES = [
    "python -m compiler bench --target host --json bench/results/host-$(cpu).json   # AttendNeXt, this CPU's database",
    "python -m compiler bench --target host --profile                             # ... and where the time goes",
    "python -m compiler bench --target host --models all --json bench/results/models-host.json",
    "python -m compiler bench --target rpi4 --models all --tracker 10.0.0.5:9190  # your boards",
]


def add_arguments(parser) -> None:
    parser.add_argument("--target", default="host")
    parser.add_argument("--tracker", help="HOST:PORT of a tracker with a real board (aarch64 presets); "
                                          "without it an aarch64 preset runs on the emulated Pi (not a performance figure)")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per engine (median of these)")
    parser.add_argument("--json", help="write the table as JSON here (and Markdown beside it)")
    parser.add_argument("--fusion", default="stock", choices=["stock", "dcac"],
                        help="fusion mode of the TVM builds (its database: tuning_logs/<target>/attendnext[-dcac])")
    parser.add_argument("--layout", choices=list(LAYOUTS),
                        help=f"weight layout of the TVM builds (default: as compile.py, the layout of this CPU's "
                             f"database, else {DEFAULT_LAYOUT})")
    parser.add_argument("--database", help="apply this tuning database folder on purpose (default: this CPU's)")
    parser.add_argument("--skip-untuned", action="store_true", help="leave out TVM with default schedules")
    parser.add_argument("--models", help="compare registered models instead of AttendNeXt alone: 'all' (AttendNeXt "
                                         "and its paper's four baselines) or a comma list (compiler/bench_models.py)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where the time goes: TVM per kernel beside ONNX Runtime per operator "
                             "(host only; JSON key 'profile')")


def run(args) -> int:
    """Measure, print the table; with --json also write the results file (and Markdown, PNG) beside it."""
    if args.runs < 1:
        raise UserError(f"--runs {args.runs}: give at least 1 run per engine (50 or more for a median worth quoting)")
    preset = targets.load(args.target)
    if preset.is_host and args.tracker:
        raise UserError("--tracker measures on a board: use it with an aarch64 preset, e.g. --target rpi4")
    if args.profile and not preset.is_host:
        raise UserError("--profile instruments the library in this process: use it with --target host")
    if args.models:
        from . import bench_models

        if args.profile or args.database or args.fusion != "stock":
            raise UserError("--models builds each model with its own database and stock fusion: leave out "
                            "--profile, --database and --fusion")
        bench_models.publish(bench_models.run(preset, args), args.json)
    else:
        publish(run_host(preset, args) if preset.is_host else run_device(preset, args), args.json)
    return 0


def publish(report: dict, json_path=None, render=render_markdown) -> None:
    """Print the report as Markdown (`render`, with its profile, if any); with `json_path`, also write the
    JSON there and the Markdown beside it (atomically): how every benchmark script leaves its results file."""
    markdown = render(report)
    if report.get("profile"):
        from .profile import render

        markdown += render(report["profile"])
    print(markdown)
    if json_path:
        atomic.write_json(json_path, report)
        atomic.write_text(Path(json_path).with_suffix(".md"), markdown)


def _builds(preset, args) -> dict:
    """The TVM artifacts to measure: this CPU's database (and untuned unless skipped), in a scratch folder.
    Each row's label names the CPU its database was tuned for."""
    work = Path(tempfile.mkdtemp(prefix="dcac-bench-"))
    shipped = compile_model(CompileOptions(target=preset.name, fusion=args.fusion, layout=args.layout,
                                           database=args.database, out=str(work / "tuned")))
    common = dict(target=preset.name, fusion=args.fusion, layout=shipped.sidecar["layout"])
    tuning = shipped.sidecar["tuning"]
    label = (f"database tuned for {tuning['cpu']}" if tuning["database"]
             else f"no database for {preset.name}/{tuning_db.cpu_of(preset)}")
    builds = {f"TVM {args.fusion} fusion, {shipped.sidecar['layout']} weights ({label})": shipped}
    if not args.skip_untuned and tuning["database"]:
        builds["TVM (untuned)"] = compile_model(CompileOptions(**common, out=str(work / "untuned"), database="none"))
    return builds


def database_summary(build) -> dict:
    """What the bench JSON records of the applied database: path, CPU, coverage, trials."""
    coverage = build.sidecar["tuning"]
    if not coverage["database"]:
        return {"path": None, "cpu": None, "kernels_tuned": 0, "kernels_total": coverage["kernels_total"]}
    path = Path(coverage["database"])
    database = tuning_db.TuningDatabase(path)
    return {"path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), "cpu": coverage["cpu"],
            "trials": database.record_count(), "budget": (database.provenance.get("runs") or [{}])[-1].get("budget"),
            "pipeline": coverage["pipeline"],
            "kernels_tuned": coverage["kernels_tuned"], "kernels_total": coverage["kernels_total"],
            "emulated": coverage.get("emulated", False)}


def _coverage_note(build, runs_on: str) -> str:
    summary = database_summary(build)
    if not summary["path"]:
        return (f"No tuning database for this target and CPU ({runs_on}): its TVM row runs default (untuned) "
                "schedules.")
    emulated = " (measured under emulation)" if summary["emulated"] else ""
    return (f"Tuned kernels: {summary['kernels_tuned']} of {summary['kernels_total']} from {summary['path']} "
            f"({summary['trials']} trials, tuned for CPU {summary['cpu']}{emulated}; this run's CPU: {runs_on}).")


def interleaving(runs: int, per_round: int = 5) -> tuple:
    """(rounds, runs per round) giving each engine at least `runs` timed runs."""
    per_round = min(per_round, runs)
    return -(-runs // per_round), per_round


def _command(preset, args) -> str:
    return " ".join(["python -m compiler.bench", f"--target {preset.name}", f"--fusion {args.fusion}",
                     *([f"--layout {args.layout}"] if args.layout else []),
                     *([f"--database {args.database}"] if args.database else []),
                     *(["--profile"] if args.profile else []),
                     *([f"--tracker {args.tracker}"] if args.tracker else []), f"--runs {args.runs}",
                     *(["--skip-untuned"] if args.skip_untuned else [])])


def machine() -> dict:
    """The host as every results file records it: CPU model, LLVM cpu, vector features."""
    from .device import host_description

    device = host_description()
    return {"cpu_model": device["cpu_model"], "llvm_cpu": device["llvm_cpu"],
            "cpu_features": device["cpu_features"], "cores": len(os.sched_getaffinity(0))}


def bench_image(shape=(1, 3, 224, 224)):
    """The seeded input every host measurement uses (AttendNeXt's shape unless told)."""
    return np.random.default_rng(0).standard_normal(shape).astype("float32")


def side_by_side(builds: dict, threads: int, runs: int, command: str) -> dict:
    """TVM builds (label -> CompileResult) with ONNX Runtime and PyTorch eager on the host, interleaved in
    one run, same thread count: the report every host benchmark writes (JSON-ready)."""
    from .runtime import Model

    os.environ["TVM_NUM_THREADS"] = str(threads)  # read by TVM's thread pool on first use
    image = bench_image()
    timers = {name: tvm_timer(Model(build.library)) for name, build in builds.items()}
    timers.update(host_engines(threads, image))
    rounds, per_round = interleaving(runs)
    say(f"measuring {len(timers)} engines, {rounds} interleaved rounds of {per_round} runs")
    times = measure(timers, rounds, per_round)
    host = machine()
    return {"model": "attendnext", "target": "host", "device": f"{host['cpu_model']} ({host['llvm_cpu']})",
            "machine": host, "threads": threads, "runs_per_engine": rounds * per_round, "emulated": False,
            "command": command, "engines": table(times),
            "databases": {name: database_summary(build) for name, build in builds.items()},
            "notes": [f"{name}: {_coverage_note(build, host['llvm_cpu'])}" for name, build in builds.items()]}


def run_host(preset, args) -> dict:
    threads = preset.num_cores
    builds = _builds(preset, args)
    report = side_by_side(builds, threads, args.runs, _command(preset, args))
    first = next(iter(builds.values()))
    report["database"] = database_summary(first)
    if args.profile:
        from .profile import profile

        say("profiling the tuned build: TVM per kernel and ONNX Runtime per operator, 20 runs each")
        report["profile"] = profile(first.library, onnx_path("attendnext"), bench_image(), threads)
    return report


NO_TORCH_ON_DEVICE = "PyTorch eager is measured on the host benchmark only (it is not installed on the device)."


def announce_emulation(tracker) -> None:
    """Without --tracker an aarch64 preset runs on the emulated Pi: say, before measuring, what that proves."""
    if tracker is None:
        say("no --tracker: measuring on the emulated Pi (qemu) to prove the command works; "
            "the timings are NOT a performance figure of any ARM board")


def device_label(device: dict, tracker) -> tuple:
    """(emulated, name) of a measuring board as every device report shows it; qemu-user shows the host's
    /proc/cpuinfo, so an emulated board is named after the host it runs on."""
    emulated = tracker is None or bool(device.get("emulated"))
    name = device.get("cpu_model", "unknown")
    return emulated, f"emulated aarch64 (qemu-user on {name})" if emulated else name


def run_device(preset, args) -> dict:
    """On a board behind --tracker, or on the emulated Pi: TVM and ONNX Runtime both run on the device."""
    from .runtime import Model
    from .device import describe_device, open_session

    threads = preset.num_cores
    builds = _builds(preset, args)
    announce_emulation(args.tracker)
    with open_session(preset, args.tracker) as session:
        device = describe_device(session)
        timers = {name: tvm_timer(Model(build.library, session=session)) for name, build in builds.items()}
        timers["ONNX Runtime"] = device_onnxruntime_timer(session, onnx_path("attendnext"), threads)
        rounds, per_round = interleaving(args.runs)
        say(f"measuring {len(timers)} engines on {device.get('cpu_model', 'the device')}, "
            f"{rounds} interleaved rounds of {per_round} runs")
        times = measure(timers, rounds, per_round, warmup=1)
    notes = [_coverage_note(next(iter(builds.values())), tuning_db.cpu_of(preset)), NO_TORCH_ON_DEVICE]
    emulated, name = device_label(device, args.tracker)
    return {"model": "attendnext", "target": preset.name, "device": name,
            "threads": threads, "runs_per_engine": rounds * per_round, "emulated": emulated,
            "command": _command(preset, args), "engines": table(times), "notes": notes}


if __name__ == "__main__":
    from .cli import run_command

    sys.exit(run_command("bench", prog="python -m compiler.bench"))
