"""Stock against DC-AC fusion, both tuned with the same MetaSchedule budget on the host, with ONNX Runtime
and PyTorch eager measured in the same run (interleaved rounds, same thread count, median of the runs).

    .venv/bin/python bench/fusion.py --trials 150 --runs 60

Databases go to build/bench-fusion/<mode>/ so an interrupted run resumes; --trials is per fusion mode.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import targets  # noqa: E402
from compiler.api import ROOT, CompileOptions, compile_model  # noqa: E402
from compiler.bench import host_engines, interleaving, measure, render_markdown, table, tvm_timer  # noqa: E402
from compiler.runtime import Model  # noqa: E402
from compiler.tuning import TuneOptions, host_provenance  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=150, help="tuning budget per fusion mode")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per engine")
    args = parser.parse_args()
    preset = targets.load("host")
    os.environ["TVM_NUM_THREADS"] = str(preset.num_cores)
    work = ROOT / "build" / "bench-fusion"
    timers = {}
    for mode in ("stock", "dcac"):
        result = compile_model(CompileOptions(
            target="host", fusion=mode, database=str(work / mode / "db"), out=str(work / mode / "artifact"),
            tune=TuneOptions(trials=args.trials)))
        timers[f"TVM {mode} fusion ({args.trials} trials)"] = tvm_timer(Model(result.library))
    import numpy as np

    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    timers.update(host_engines(preset.num_cores, image))
    rounds, per_round = interleaving(args.runs)
    times = measure(timers, rounds, per_round)
    rows = table(times)
    device = host_provenance()
    print(render_markdown({"device": f"{device['cpu_model']} ({device['llvm_cpu']})", "threads": preset.num_cores,
                           "runs_per_engine": rounds * per_round, "engines": rows,
                           "command": f"bench/fusion.py --trials {args.trials} --runs {args.runs}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
