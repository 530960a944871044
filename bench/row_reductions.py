"""Kernels that reduce rows, one ONNX operator each, built with no database two ways: with the row schedule
(schedules/row_reductions.py) and with MetaSchedule's generic space as before it, timed side by side with ONNX
Runtime on this machine in one run (interleaved blocks, the preset's threads).

    .venv/bin/python bench/row_reductions.py --json bench/results/row-reductions-<cpu>.json

The shapes are those of the backbones where the generic schedule lost most: ConvNeXt's layer norms over 40 and
320 channels, a vision transformer's over 192, EfficientNet's squeeze-and-excite means over 56x56 and 7x7 pixels,
and softmaxes over 64 and over 197 tokens (a prime: the row schedule leaves it to the generic one).
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import targets  # noqa: E402
from compiler.artifact.runtime import Model, use_threads  # noqa: E402
from compiler.bench.measure import (BLOCK_PAUSE_S, interleaving, machine, measure, onnxruntime_timer,  # noqa: E402
                                    publish, table, tvm_timer)
from compiler.driver import CompileOptions, compile_model  # noqa: E402
from compiler.errors import UserError, guarded  # noqa: E402
from compiler.output import say  # noqa: E402

# name -> (ONNX operator, input shape, attributes)
CASES = {
    "layer norm, 3136 rows of 40": ("LayerNormalization", (1, 56, 56, 40), {"axis": -1, "epsilon": 1e-6}),
    "layer norm, 49 rows of 320": ("LayerNormalization", (1, 7, 7, 320), {"axis": -1, "epsilon": 1e-6}),
    "layer norm, 197 rows of 192": ("LayerNormalization", (1, 197, 192), {"axis": -1, "epsilon": 1e-6}),
    "mean, 144 rows of 56x56": ("ReduceMean", (1, 144, 56, 56), {"axes": [2, 3], "keepdims": 1}),
    "mean, 1280 rows of 7x7": ("ReduceMean", (1, 1280, 7, 7), {"axes": [2, 3], "keepdims": 1}),
    "softmax, 3x64 rows of 64": ("Softmax", (1, 3, 64, 64), {"axis": -1}),
    "softmax, 3x197 rows of 197": ("Softmax", (1, 3, 197, 197), {"axis": -1}),
}
ENGINES = {"TVM row schedule": True, "TVM generic schedule": False}


def one_operator(op: str, shape: tuple, attributes: dict, path: Path) -> Path:
    """A one-operator ONNX model (opset 17) with seeded parameters."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inputs, initializers = ["x"], []
    if op == "LayerNormalization":
        for name in ("scale", "bias"):
            initializers.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, shape[-1]).astype("float32"), name))
            inputs.append(name)
    node = helper.make_node(op, inputs, ["y"], **attributes)  # opset 17: ReduceMean's axes still an attribute
    graph = helper.make_graph([node], "kernel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def render(report: dict) -> str:
    lines = [f"Kernels that reduce rows, one ONNX operator each, `--database none`, batch 1 on {report['device']}, "
             f"{report['threads']} threads ({report['command']}, commit {report['machine']['commit']})", "",
             "| kernel | ONNX Runtime (us) | " + " | ".join(f"{e} (us, x ORT)" for e in ENGINES) + " | row schedule / "
             "generic |", "| --- | ---: | " + " | ".join("---:" for _ in ENGINES) + " | ---: |"]
    for name, row in report["kernels"].items():
        cells = [f"{1e3 * row[e]['median_ms']:.1f} ({row[e]['ratio_vs_onnxruntime']:.2f}x)" for e in ENGINES]
        gain = row["TVM row schedule"]["median_ms"] / row["TVM generic schedule"]["median_ms"]
        lines.append(f"| {name} | {1e3 * row['ONNX Runtime']['median_ms']:.1f} | " + " | ".join(cells) + f" | {gain:.2f}x |")
    lines += ["", f"Each engine timed in interleaved blocks of {report['runs_per_block']} runs with a "
              f"{report['pause_before_block_s']} s pause before each block, {report['runs_per_engine']} runs in all; "
              f"machine: {report['machine']['cpu_model']} ({report['machine']['llvm_cpu']}). Every build passed "
              "`--verify` against ONNX Runtime."]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    if args.runs < 1:
        raise UserError(f"--runs {args.runs}: give at least 1")
    preset = targets.load("host")
    use_threads(preset.num_cores)
    work = Path(tempfile.mkdtemp(prefix="dcac-rows-"))
    timers = {}
    for k, (name, (op, shape, attributes)) in enumerate(CASES.items()):
        path = one_operator(op, shape, attributes, work / f"kernel{k}.onnx")
        for engine, rows in ENGINES.items():
            say(f"{name}: building with the {engine[4:]}")
            build = compile_model(CompileOptions(target="host", model=str(path), database="none", verify=True,
                                                 row_reductions=rows, out=str(work / f"kernel{k}-{rows}")))
            timers[name, engine] = tvm_timer(Model(build.library))
        import numpy as np

        image = np.random.default_rng(0).standard_normal(shape).astype("float32")
        timers[name, "ONNX Runtime"] = onnxruntime_timer(path, preset.num_cores, image)
    rounds, per_round = interleaving(args.runs, per_round=10)
    times = measure(timers, rounds, per_round)
    kernels = {name: table({e: times[name, e] for e in ("ONNX Runtime", *ENGINES)}) for name in CASES}
    host = machine()
    command = f"bench/row_reductions.py --runs {args.runs}" + (f" --json {args.json}" if args.json else "")
    report = {"target": "host", "device": f"{host['cpu_model']} ({host['llvm_cpu']})", "machine": host,
              "threads": preset.num_cores, "command": command, "kernels": kernels, "runs_per_engine": rounds * per_round,
              "runs_per_block": per_round, "pause_before_block_s": BLOCK_PAUSE_S}
    publish(report, args.json, render=render)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per engine and kernel")
    parser.add_argument("--json", help="write the report here (and Markdown beside it)")
    args = parser.parse_args()
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
