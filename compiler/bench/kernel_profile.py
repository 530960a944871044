"""Where one inference's time goes: TVM per kernel next to ONNX Runtime per operator, from the same run.

TVM: the Relax VM calls an instrument function before and after every call (`vm.set_instrument`); the
time between the two is that call's time, summed per kernel. ONNX Runtime: its own profiler
(`SessionOptions.enable_profiling`) writes one event per node run into a temporary folder, summed per
operator type. Both run `runs` inferences, interleaved, on the same input and thread count. The
instrumented VM adds a little per call (a Python callback), so the TVM table's total is above the
benchmark's median: read the shares.
"""
import collections
import json
import tempfile
from pathlib import Path

from compiler.device.kernel_times import tvm_kernel_times


def onnxruntime_op_times(onnx_path: Path, image, threads: int, runs: int) -> dict:
    """{operator type: [calls, total ms]} from ONNX Runtime's profiler (ORT_ENABLE_ALL, `threads`)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="dcac-ort-profile-") as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: image})  # warm-up (its events are dropped below with the first run's)
        session.end_profiling()
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, {name: image})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals = collections.defaultdict(lambda: [0, 0.0])
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            entry = totals[event.get("args", {}).get("op_name", "?")]
            entry[0] += 1
            entry[1] += event["dur"] / 1e3  # microseconds
    # ORT times its first run after load with lazy initialisation included; dropping it is not possible
    # per event, so the warm-up session above absorbs process-level start-up and `runs` is the count.
    return dict(totals)


def rows(totals: dict, runs: int) -> list:
    """Per-inference rows sorted by time: name, calls, ms, share."""
    whole = sum(ms for _, ms in totals.values()) or 1.0
    ordered = sorted(totals.items(), key=lambda item: -item[1][1])
    return [{"name": name, "calls": calls // runs, "ms": ms / runs, "share": ms / whole}
            for name, (calls, ms) in ordered]


def profile(library: Path, onnx_path: Path, image, threads: int, runs: int = 20) -> dict:
    """The `profile` key of the bench JSON: both tables, per inference."""
    return {"runs": runs,
            "tvm": rows(tvm_kernel_times(library, image, runs), runs),
            "onnxruntime": rows(onnxruntime_op_times(onnx_path, image, threads, runs), runs)}


def render(report: dict, top: int = 25) -> str:
    """Markdown: the two tables, the top `top` rows of each, with totals."""
    lines = []
    for key, title, column in (("tvm", "TVM, per kernel (VM instrument)", "kernel"),
                               ("onnxruntime", "ONNX Runtime, per operator (its profiler)", "operator")):
        table = report[key]
        total = sum(r["ms"] for r in table)
        lines += ["", f"{title}: {total:.2f} ms per inference over {report['runs']} runs", "",
                  f"| {column} | calls | ms | share |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {r['name']} | {r['calls']} | {r['ms']:.3f} | {100 * r['share']:.1f}% |" for r in table[:top]]
        if len(table) > top:
            rest = table[top:]
            lines.append(f"| ({len(rest)} more) | {sum(r['calls'] for r in rest)} | "
                         f"{sum(r['ms'] for r in rest):.3f} | {100 * sum(r['share'] for r in rest):.1f}% |")
    return "\n".join(lines) + "\n"
