"""Single layers and small blocks over the kernel classes the default schedules cover, one tiny ONNX model per
cell (compiler/bench/shape_cells.py), each built with `--database none` (the default schedules,
schedules/defaults.py) and timed beside ONNX Runtime on this machine in one run (interleaved blocks, the
preset's threads): where a backbone's ratio to ONNX Runtime comes from, one kernel class and shape at a time.

    .venv/bin/python bench/shape_sweep.py --json bench/results/shape-sweep-<cpu>.json
    .venv/bin/python bench/shape_sweep.py --cells depthwise,norm --runs 100
    .venv/bin/python bench/shape_sweep.py --list

The cells: convolutions of 1x1 to 9x9 windows, stride 1 and 2, dense, depthwise and grouped, on channel counts
on and off multiples of 4, 8 and 16 and on odd maps; linear layers and attention products at 1 to 197 tokens;
pools, means, element-wise epilogues, channel splits and concatenations, layer norms, softmaxes: 59 in all, each
built in seconds; at the default 50 runs the pauses before blocks add 3 s per cell. `--cells` takes kinds or
parts of cell names. Every build is verified against ONNX Runtime; a cell that fails is flagged in the table,
not left out.
"""
import argparse
from statistics import geometric_mean
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import targets  # noqa: E402
from compiler.artifact.runtime import Model, use_threads  # noqa: E402
from compiler.bench import shape_cells  # noqa: E402
from compiler.bench.measure import (BLOCK_PAUSE_S, bench_image, interleaving, machine, measure,  # noqa: E402
                                    onnxruntime_timer, publish, table, tvm_timer)
from compiler.driver import CompileOptions, compile_model  # noqa: E402
from compiler.errors import UserError, guarded  # noqa: E402
from compiler.output import say  # noqa: E402

SLOW = 2.0  # a cell over this many times ONNX Runtime's time is named in the summary
TARGETS = ("host", "rpi4")


def summarise(cells: dict) -> dict:
    """Cells over SLOW, the geometric mean of the ratios per kind, and the worst cell."""
    ratio = {name: row["ratio_vs_onnxruntime"] for name, row in cells.items()}
    kinds = dict.fromkeys(row["kind"] for row in cells.values())
    worst = max(ratio, key=ratio.get)
    return {"slow_threshold": SLOW, "over_threshold": sorted((n for n in ratio if ratio[n] > SLOW), key=ratio.get,
                                                             reverse=True),
            "geomean_by_kind": {kind: geometric_mean([ratio[n] for n, row in cells.items() if row["kind"] == kind])
                                for kind in kinds},
            "geomean": geometric_mean(list(ratio.values())), "worst": {"cell": worst, "ratio_vs_onnxruntime": ratio[worst]}}


def render(report: dict) -> str:
    cells, summary = report["cells"], report["summary"]
    lines = [f"Single layers and small blocks, `--database none` (default schedules), batch 1 on {report['device']}, "
             f"{report['threads']} threads ({report['command']}, commit {report['machine']['commit']}); worst ratio "
             "first", "",
             "| kind | cell | ONNX Runtime (ms) | TVM (ms) | TVM / ORT | kernels with a default schedule | "
             "build (s) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in sorted(cells.items(), key=lambda item: -item[1]["ratio_vs_onnxruntime"]):
        flag = "" if row["verified"] else " (FAILED --verify)"
        lines.append(f"| {row['kind']} | {name}{flag} | {row['onnxruntime']['median_ms']:.3f} | "
                     f"{row['tvm']['median_ms']:.3f} | {row['ratio_vs_onnxruntime']:.2f}x | "
                     f"{row['kernels_default']} of {row['kernels_total']} | {row['build_seconds']:.1f} |")
    over = summary["over_threshold"]
    lines += ["", f"{len(over)} of {len(cells)} cells over {summary['slow_threshold']}x ONNX Runtime's time"
              + (f" ({', '.join(over)})" if over else "") + "; geometric mean of TVM / ONNX Runtime per kind: "
              + ", ".join(f"{kind} {value:.2f}x" for kind, value in summary["geomean_by_kind"].items())
              + f", all cells {summary['geomean']:.2f}x; worst: {summary['worst']['cell']} "
              f"({summary['worst']['ratio_vs_onnxruntime']:.2f}x)."]
    failed = [name for name, row in cells.items() if not row["verified"]]
    lines += ["", f"Each engine timed in interleaved blocks of {report['runs_per_block']} runs with a "
              f"{report['pause_before_block_s']} s pause before each block, {report['runs_per_engine']} runs in all; "
              f"machine: {report['machine']['cpu_model']} ({report['machine']['llvm_cpu']}). "
              + (f"FAILED `--verify` against ONNX Runtime: {', '.join(failed)}." if failed
                 else "Every build passed `--verify` against ONNX Runtime.")]
    return "\n".join(lines) + "\n"


def list_cells() -> int:
    for cell in shape_cells.CELLS:
        print(f"{cell.kind:13} {cell.name}")
    return 0


def run(args) -> int:
    if args.list:
        return list_cells()
    if args.runs < 1:
        raise UserError(f"--runs {args.runs}: give at least 1")
    if args.target not in TARGETS:
        raise UserError(f"--target {args.target}: give one of {', '.join(TARGETS)}")
    if args.target == "rpi4":
        raise UserError("--target rpi4: counting single-layer ONNX files in the emulated Pi is not available yet "
                        "(compiler/bench/instructions.py counts registered models only); sweep with --target host")
    cells = shape_cells.select(args.cells)
    preset = targets.load(args.target)
    use_threads(preset.num_cores)
    work = Path(tempfile.mkdtemp(prefix="dcac-shapes-"))
    paths, builds = {}, {}
    for k, cell in enumerate(cells):
        paths[cell.name] = shape_cells.build(cell, work / f"cell{k}.onnx")
        say(f"[{k + 1}/{len(cells)}] {cell.kind} {cell.name}: building with the default schedules")
        started = time.time()
        builds[cell.name] = compile_model(CompileOptions(target=preset.name, model=str(paths[cell.name]),
                                                         database="none", verify=True, out=str(work / f"cell{k}")))
        say(f"{cell.name}: built and verified in {time.time() - started:.1f} s")
    timers = {}
    for cell in cells:
        timers[cell.name, "TVM"] = tvm_timer(Model(builds[cell.name].library))
        timers[cell.name, "ONNX Runtime"] = onnxruntime_timer(paths[cell.name], preset.num_cores, bench_image(cell.shape))
    rounds, per_round = interleaving(args.runs, per_round=10)
    say(f"measuring {len(cells)} cells, {rounds} interleaved rounds of a block of {per_round} runs per engine")
    times = measure(timers, rounds, per_round)
    rows = {}
    for cell in cells:
        engines = table({engine: times[cell.name, engine] for engine in ("ONNX Runtime", "TVM")})
        sidecar = builds[cell.name].sidecar
        rows[cell.name] = {"kind": cell.kind, "input": list(cell.shape), "onnxruntime": engines["ONNX Runtime"],
                           "tvm": engines["TVM"], "ratio_vs_onnxruntime": engines["TVM"]["ratio_vs_onnxruntime"],
                           "verified": bool(builds[cell.name].verified), "build_seconds": sidecar["build_seconds"],
                           "kernels_default": sidecar["tuning"]["kernels_default"],
                           "kernels_total": sidecar["tuning"]["kernels_total"]}
    host = machine()
    command = (f"bench/shape_sweep.py --target {args.target} --runs {args.runs}"
               + (f" --cells {args.cells}" if args.cells else "") + (f" --json {args.json}" if args.json else ""))
    report = {"target": preset.name, "device": f"{host['cpu_model']} ({host['llvm_cpu']})", "machine": host,
              "threads": preset.num_cores, "command": command, "cells": rows, "summary": summarise(rows),
              "runs_per_engine": rounds * per_round, "runs_per_block": per_round, "pause_before_block_s": BLOCK_PAUSE_S}
    publish(report, args.json, render=render)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", help="kinds (" + ", ".join(shape_cells.KINDS) + ") or parts of cell names, a "
                                        "comma list (default: every cell)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per engine and cell")
    parser.add_argument("--target", default="host", help="host (timed); rpi4 (instruction counts in the emulated "
                                                         "Pi) is not available yet")
    parser.add_argument("--list", action="store_true", help="print the cells, their kinds and names, and stop")
    parser.add_argument("--json", help="write the report here (and Markdown beside it)")
    args = parser.parse_args()
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
