"""The cycle estimate checked against measured time, on the one kind of CPU where both exist: this x86-64 host.

    .venv/bin/python bench/cycle_check.py --json bench/results/cycle-check-<cpu>.json

Every build is made for an AVX2 CPU (LLVM's znver3), so its machine code is the same natively and under
qemu-x86_64 (qemu 7.2 emulates AVX2, not AVX-512). Each model has a reference build (its default schedules);
every other build of the model makes a pair with it, and for each pair the results file gives:
  * the predicted ratio: the estimate's cycles per inference (compiler/device/cycle_estimate.py: a block
    profile under qemu-x86_64, llvm-mca's model of this CPU, the simulated caches times published latencies),
    computed exactly as for the Pi, with this CPU's model in place of the Pi's;
  * the measured ratio: single-thread wall time on this machine, the builds of a model timed in interleaved
    blocks with a pause before each block (never run by run: thread pools spin after a run);
  * the instruction count's ratio, the proxy the estimate replaces.
The error of a pair is |predicted / measured - 1|. Builds and estimates are kept in --work, so an interrupted
run resumes where it stopped.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import atomic  # noqa: E402
from compiler.errors import UserError, guarded  # noqa: E402

AVX2_PRESET = {"description": "An AVX2 x86-64 CPU (LLVM's znver3): code that runs the same natively and under "
                              "qemu-x86_64, which emulates AVX2 but not AVX-512",
               "target": {"kind": "llvm", "mcpu": "znver3", "num-cores": 1}, "cross_triple": None, "rpc_key": "host"}
REFERENCE = "default schedules"
BARE = ("bare loop nests", {"default_schedules": False})
INT8 = ("int8, no VNNI", {"quantize": "int8"})


def tuned(model):
    return ("tuned (znver3 database)", {"database": f"tuning_logs/host/znver3/{model}-prepack", "layout": "prepack"})


# model -> the builds paired with its reference (the default schedules, no database)
BUILDS = {
    "attendnext": [BARE, tuned("attendnext"), INT8],
    "mobilenetv3_large": [BARE, tuned("mobilenetv3_large"), INT8],
    "fbnet_c": [tuned("fbnet_c"), INT8],
    "mobileone_s1": [BARE, tuned("mobileone_s1")],
    "kernel:conv3x3": [BARE],
    "kernel:depthwise5x5": [BARE],
    "kernel:dense": [BARE],
}

# single-kernel models: (op, input shape, weight shape, attributes)
KERNELS = {
    "conv3x3": ("Conv", (1, 64, 56, 56), (64, 64, 3, 3), {"pads": [1, 1, 1, 1], "group": 1}),
    "depthwise5x5": ("Conv", (1, 96, 28, 28), (96, 1, 5, 5), {"pads": [2, 2, 2, 2], "group": 96}),
    "dense": ("Gemm", (1, 1024), (1000, 1024), {"transB": 1}),
}


def kernel_onnx(name: str, path: Path) -> Path:
    """A one-operator ONNX model with seeded weights."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    op, x_shape, w_shape, attrs = KERNELS[name]
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal(w_shape) * 0.05).astype("float32"), "w")
    b = numpy_helper.from_array(rng.standard_normal(w_shape[0]).astype("float32"), "b")
    node = helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)
    if op == "Conv":
        out_shape = (1, w_shape[0], x_shape[2], x_shape[3])
    else:
        out_shape = (1, w_shape[0])
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with atomic.staged_file(path) as staged:
        staged.write_bytes(model.SerializeToString())
    return path


def build_all(models: dict, work: Path) -> dict:
    """model -> {label: library path}; each build made once into --work."""
    from compiler.driver import CompileOptions, compile_model

    # named "host": a database records the preset it was tuned for, and the znver3 ones were tuned as "host"
    preset = work / "avx2" / "host.json"
    atomic.write_text(preset, json.dumps(AVX2_PRESET, indent=2) + "\n")
    libraries = {}
    for model, pairs in models.items():
        source = str(kernel_onnx(model.split(":", 1)[1], work / f"{model.split(':', 1)[1]}.onnx")) \
            if model.startswith("kernel:") else model
        libraries[model] = {}
        for label, extra in [(REFERENCE, {})] + pairs:
            out = work / "builds" / model.replace(":", "-") / label.split(" ")[0].replace(",", "")
            options = {"database": "none", **extra}
            done = out / "done.json"
            if not (done.is_file() and json.loads(done.read_text()) == options):
                compile_model(CompileOptions(target=str(preset), model=source, out=str(out), **options))
                atomic.write_text(done, json.dumps(options))
            libraries[model][label] = next(p for p in out.glob("*.so"))
    return libraries


def time_builds(libraries: dict, blocks: int, block_seconds: float) -> dict:
    """Median single-thread milliseconds per inference of each build (label -> ms), the builds of one model
    timed in interleaved blocks of runs, a pause before each block."""
    import numpy as np

    from compiler.artifact.runtime import Model

    models = {label: Model(str(lib), threads=1) for label, lib in libraries.items()}
    inputs = {label: np.random.default_rng(0).standard_normal(m.inputs[0]["shape"]).astype("float32")
              for label, m in models.items()}
    runs = {}
    for label, model in models.items():        # warm up, and size a block to about block_seconds
        model.run(inputs[label])
        started = time.perf_counter()
        model.run(inputs[label])
        runs[label] = max(1, int(block_seconds / max(time.perf_counter() - started, 1e-6)))
    times = {label: [] for label in models}
    for _ in range(blocks):
        for label, model in models.items():
            time.sleep(0.5)
            started = time.perf_counter()
            for _ in range(runs[label]):
                model.run(inputs[label])
            times[label].append(1e3 * (time.perf_counter() - started) / runs[label])
    return {label: {"median_ms": statistics.median(t), "blocks_ms": t, "runs_per_block": runs[label]}
            for label, t in times.items()}


def estimate_all(libraries: dict, cpu: str, work: Path) -> dict:
    """model -> label -> the estimate per inference. The qemu runs' results (the pipeline's cycles and the
    simulated misses) are kept in work/estimates.json by the library's sha256; the memory term is computed
    from them with the current core model on every run."""
    from compiler.artifact.runtime import sha256_file
    from compiler.device import cores, cycle_estimate

    store = work / "estimates.json"
    known = json.loads(store.read_text()) if store.is_file() else {}
    core = cores.lookup(cpu)
    out = {}
    for model, builds in libraries.items():
        out[model] = {}
        for label, lib in builds.items():
            key = f"{cpu}:{sha256_file(lib)}"
            if key not in known:
                print(f"estimating {model} / {label} under qemu-x86_64", flush=True)
                result = cycle_estimate.measure("tvm", lib, cpu, cache=True, n=1, warmup=1)
                known[key] = {"core": {k: v for k, v in result["per_inference"].items()
                                       if k in ("core_cycles", "insns", "unmodelled_insns", "blocks", "top_blocks")},
                              "misses": result["per_inference"]["misses"], "seconds": result["seconds"]}
                atomic.write_json(store, known)
            out[model][label] = cycle_estimate.estimate(known[key]["core"], known[key]["misses"], core)
    return out


def pairs_of(estimates: dict, timings: dict) -> list:
    rows = []
    for model, builds in estimates.items():
        ref, ref_time = builds[REFERENCE], timings[model][REFERENCE]["median_ms"]
        for label, est in builds.items():
            if label == REFERENCE:
                continue
            measured = timings[model][label]["median_ms"] / ref_time
            predicted = est["cycles"] / ref["cycles"]
            core_only = est["core_cycles"] / ref["core_cycles"]
            serial = (est["core_cycles"] + est["serial_memory_cycles"]) / (ref["core_cycles"] + ref["serial_memory_cycles"])
            insns = est["insns"] / ref["insns"]
            rows.append({"model": model, "build": label, "reference": REFERENCE, "measured": measured,
                         "predicted": predicted, "insns": insns, "core_only": core_only, "serial_misses": serial,
                         "error": abs(predicted / measured - 1), "insns_error": abs(insns / measured - 1),
                         "core_only_error": abs(core_only / measured - 1),
                         "serial_misses_error": abs(serial / measured - 1)})
    return rows


def summary(rows: list) -> dict:
    def stats(key):
        values = [r[key] for r in rows]
        return {"median": statistics.median(values), "worst": max(values)}
    return {"pairs": len(rows), "cycles": stats("error"), "insns": stats("insns_error"),
            "core_only": stats("core_only_error"), "serial_misses": stats("serial_misses_error")}


def render(report: dict) -> str:
    s = report["summary"]
    lines = [f"**Cycle estimate against measured time, {report['device']}.** Each pair is a build against its model's "
             f"reference build ({REFERENCE}, no database), all built for an AVX2 CPU (LLVM znver3) so the code is the "
             "same natively and under qemu-x86_64. Predicted: the estimate's cycles per inference (one thread; "
             f"llvm-mca {report['model']['llvm']} model `{report['model']['mca_cpu']}`, simulated caches x published "
             "latencies). Measured: single-thread wall time, interleaved blocks. Error: |predicted / measured - 1|.",
             "", f"Command: `{report['command']}` (commit {report['commit']}).", "",
             f"Over {s['pairs']} pairs: the estimate's error median {100 * s['cycles']['median']:.1f}%, worst "
             f"{100 * s['cycles']['worst']:.1f}%; the instruction count's median {100 * s['insns']['median']:.1f}%, worst "
             f"{100 * s['insns']['worst']:.1f}%; the pipeline alone (no cache misses) median "
             f"{100 * s['core_only']['median']:.1f}%, worst {100 * s['core_only']['worst']:.1f}%; every miss charged its "
             f"whole latency (no overlap) median {100 * s['serial_misses']['median']:.1f}%, worst "
             f"{100 * s['serial_misses']['worst']:.1f}%.", "",
             "| model | build | measured ratio | estimate ratio | error | instructions ratio | error | pipeline-only ratio | error | misses at whole latency | error |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(report["pairs"], key=lambda r: -r["error"]):
        lines.append(f"| {r['model']} | {r['build']} | {r['measured']:.2f}x | {r['predicted']:.2f}x | "
                     f"{100 * r['error']:.0f}% | {r['insns']:.2f}x | {100 * r['insns_error']:.0f}% | "
                     f"{r['core_only']:.2f}x | {100 * r['core_only_error']:.0f}% | {r['serial_misses']:.2f}x | "
                     f"{100 * r['serial_misses_error']:.0f}% |")
    lines += ["", "Per build (the estimate per inference; time is this machine's single-thread median):", "",
              "| model | build | ms | estimated cycles | of which memory | instructions | unmodelled instructions |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for model, builds in report["estimates"].items():
        for label, est in builds.items():
            lines.append(f"| {model} | {label} | {report['timings'][model][label]['median_ms']:.3f} | "
                         f"{est['cycles'] / 1e6:,.2f} M | {100 * (est['memory_cycles'] or 0) / est['cycles']:.0f}% | "
                         f"{est['insns'] / 1e6:,.2f} M | {100 * est['unmodelled_insns'] / est['insns']:.2f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated subset of {', '.join(BUILDS)}")
    parser.add_argument("--work", default="build/cycle-check", help="builds and estimates kept here (resumable)")
    parser.add_argument("--blocks", type=int, default=9, help="timed blocks per build")
    parser.add_argument("--block-seconds", type=float, default=0.5)
    parser.add_argument("--json")
    args = parser.parse_args()

    import subprocess

    from tvm.target import codegen

    from compiler.bench.measure import machine, publish
    from compiler.device import cores

    names = [n.strip() for n in args.models.split(",")] if args.models else list(BUILDS)
    unknown = [n for n in names if n not in BUILDS]
    if unknown:
        raise UserError(f"--models: unknown {', '.join(unknown)}; give some of {', '.join(BUILDS)}")
    cpu = codegen.llvm_get_system_cpu()
    core = cores.lookup(cpu)
    if core.arch != "x86_64":
        raise UserError(f"this check runs on an x86-64 host; this machine's CPU is {cpu}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    libraries = build_all({n: BUILDS[n] for n in names}, work)
    timings = {model: time_builds(builds, args.blocks, args.block_seconds) for model, builds in libraries.items()}
    estimates = estimate_all(libraries, cpu, work)
    rows = pairs_of(estimates, timings)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    host = machine()
    command = "bench/cycle_check.py" + (f" --models {args.models}" if args.models else "") + \
        (f" --json {args.json}" if args.json else "")
    any_estimate = next(iter(next(iter(estimates.values())).values()))
    report = {"kind": "cycle estimate validation (x86-64, time measured natively)",
              "device": f"{host['cpu_model']} ({host['llvm_cpu']})", "machine": host, "command": command,
              "commit": commit, "model": any_estimate["model"], "summary": summary(rows), "pairs": rows,
              "timings": timings, "estimates": {m: {l: {k: v for k, v in e.items() if k != "top_blocks"}
                                                    for l, e in b.items()} for m, b in estimates.items()},
              "top_blocks": {m: {l: e.get("top_blocks") for l, e in b.items()} for m, b in estimates.items()}}
    publish(report, args.json, render=render)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
