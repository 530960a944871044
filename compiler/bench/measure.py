"""Measuring engines side by side: timers for TVM, ONNX Runtime and PyTorch, interleaved rounds, and the
results file every benchmark writes (JSON with the command and the machine, Markdown beside it).

Engines are measured in interleaved rounds (a block of a few runs of each, again and again) so that load from
other processes on a shared machine falls on all of them alike; every engine gets the same thread count. Before
each block the bench pauses: ONNX Runtime's intra-op workers, TVM's pool and PyTorch's OpenMP threads spin after
a run, and on a 2-core machine one engine's spinning workers, timed run by run, take a core from the next.
"""
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np

from compiler import atomic, paths, zoo
from compiler.artifact.runtime import Model, use_threads
from compiler.bench.kernel_profile import render as render_profile
from compiler.device.session import host_description
from compiler.errors import DeviceError
from compiler.output import say
from compiler.tuning import database as tuning_db


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

    torch.set_num_threads(threads)
    model = zoo.lookup(model_name).build(seed=0)
    tensor = torch.from_numpy(image)

    def run():
        with torch.inference_mode():
            model(tensor)
    return _wall_clock_timer(run)


def onnx_path(model_name: str) -> Path:
    """Where compile_model exported a registered model (compiler/driver.py prepare_onnx)."""
    return paths.exported_onnx(model_name)


def host_engines(threads, image, model_name="attendnext") -> dict:
    """The comparison engines on the host: ONNX Runtime and PyTorch eager, same thread count."""
    return {"ONNX Runtime": onnxruntime_timer(onnx_path(model_name), threads, image),
            "PyTorch eager": torch_timer(threads, image, model_name)}


def tvm_timer(model):
    """A runtime.Model (local or over RPC), timed by the device's own time_evaluator."""
    return lambda count: model.benchmark(repeat=count, warmup=0)["times_ms"]


def device_onnxruntime_timer(session, onnx_path: Path, threads: int):
    """ONNX Runtime on the board itself, through board_server.py's `dcac.onnxruntime_benchmark`."""
    try:
        remote = session.get_function("dcac.onnxruntime_benchmark")
    except Exception:
        raise DeviceError("the device's RPC server has no dcac.onnxruntime_benchmark: run compiler/device/board_server.py "
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


BLOCK_PAUSE_S = 0.3  # longer than any engine's spin after a run (OpenMP's default block time is 0.2 s)


def measure(timers: dict, rounds: int, per_round: int, warmup: int = 3, pause_s: float = BLOCK_PAUSE_S) -> dict:
    """Interleaved rounds of a block of `per_round` runs of every engine, with a pause of `pause_s` before each
    block; a timer maps a run count to times in ms."""
    for timer in timers.values():
        timer(warmup)
    times = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            time.sleep(pause_s)
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


def publish(report: dict, json_path=None, render=render_markdown) -> None:
    """Print the report as Markdown (`render`, with its profile, if any); with `json_path`, also write the
    JSON there and the Markdown beside it (atomically): how every benchmark script leaves its results file."""
    markdown = render(report)
    if report.get("profile"):
        markdown += render_profile(report["profile"])
    print(markdown)
    if json_path:
        atomic.write_json(json_path, report)
        atomic.write_text(Path(json_path).with_suffix(".md"), markdown)


def database_summary(build) -> dict:
    """What the bench JSON records of the applied database: path, CPU, coverage, trials."""
    coverage = build.sidecar["tuning"]
    if not coverage["database"]:
        return {"path": None, "cpu": None, "kernels_tuned": 0, "kernels_total": coverage["kernels_total"]}
    path = Path(coverage["database"])
    database = tuning_db.TuningDatabase(path)
    return {"path": paths.shown(path), "cpu": coverage["cpu"],
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


def source_commit() -> str:
    """The project's commit a results file was made at ("+changes" when the tree differed from it), so every
    figure names the code that produced it."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=paths.PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict:
    """The host as every results file records it: CPU model, LLVM cpu, vector features, and the project's commit."""
    device = host_description()
    return {"cpu_model": device["cpu_model"], "llvm_cpu": device["llvm_cpu"],
            "cpu_features": device["cpu_features"], "cores": len(os.sched_getaffinity(0)), "commit": source_commit()}


def bench_image(shape=(1, 3, 224, 224)):
    """The seeded input every host measurement uses (AttendNeXt's shape unless told)."""
    return np.random.default_rng(0).standard_normal(shape).astype("float32")


def side_by_side(builds: dict, threads: int, runs: int, command: str, model_name: str = "attendnext") -> dict:
    """TVM builds (label -> CompileResult) of one model with ONNX Runtime and PyTorch eager on the host,
    interleaved in one run, same thread count: the report every host benchmark writes (JSON-ready)."""
    use_threads(threads)
    image = bench_image(zoo.lookup(model_name).input_shape)
    timers = {name: tvm_timer(Model(build.library)) for name, build in builds.items()}
    timers.update(host_engines(threads, image, model_name))
    rounds, per_round = interleaving(runs)
    say(f"measuring {len(timers)} engines, {rounds} interleaved rounds of {per_round} runs")
    times = measure(timers, rounds, per_round)
    host = machine()
    return {"model": model_name, "target": "host", "device": f"{host['cpu_model']} ({host['llvm_cpu']})",
            "machine": host, "threads": threads, "runs_per_engine": rounds * per_round, "emulated": False,
            "command": command, "engines": table(times),
            "databases": {name: database_summary(build) for name, build in builds.items()},
            "notes": [f"{name}: {_coverage_note(build, host['llvm_cpu'])}" for name, build in builds.items()]}


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
