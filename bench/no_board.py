"""Does a database tuned with no board pay? Its build against the default schedules and ONNX Runtime, by the
cycle estimate on the preset's core, and its outputs against ONNX Runtime's, all in one run.

    .venv/bin/python bench/no_board.py --target rpi4 --json bench/results/no-board-rpi4.json

Three engines, each one thread in the emulated Pi under the same estimate (compiler/device/cycle_estimate.py:
a block profile weighed by llvm-mca's model of the core, plus simulated misses at published latencies):
  * AttendNeXt on the default schedules (`--database none`),
  * AttendNeXt with the board-less database (tuning_logs/<target>/<cpu>/<model>-no-board, `--tune --no-board`),
  * ONNX Runtime's aarch64 build on the same ONNX file.
The board-less build is also run through `--verify` (the emulated Pi against ONNX Runtime on this host).
Estimated cycles are a model, not a board's latency: docs/cycle-estimate.md says what it ignores. The
verdict (does the database beat the default schedules by the estimate?) goes into the database's
provenance.json as its "check", so the database itself says whether it pays.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import paths, targets  # noqa: E402
from compiler.bench.measure import machine, publish, source_commit  # noqa: E402
from compiler.errors import UserError, guarded  # noqa: E402

SHIPS_BELOW = 0.85   # the database ships when its build estimates at most this fraction of the default schedules'


def estimate(engine: str, model, mcpu: str) -> dict:
    from compiler.device import cycle_estimate

    result = cycle_estimate.measure(engine, model, mcpu, cache=True)
    est = result["per_inference"]
    return {"cycles": est["cycles"], "core_cycles": est["core_cycles"], "memory_cycles": est["memory_cycles"],
            "insns": est["insns"], "misses": est["misses"], "version": result["guest"]["version"]}


def _judged(database: dict) -> str:
    lost = database.get("kernels_default_over_record") or []
    return (f"; {len(lost)} kernels keep their default schedule, their record not cheaper in the model "
            "(kernel_choices.json)") if lost else ""


def render(report: dict) -> str:
    e, r = report["engines"], report["ratios"]
    lines = [f"**Tuned with no board, {report['model']} on {report['target']} ({report['mcpu']}).** Estimated cycles per "
             "inference, one thread, in the emulated Pi (a model: llvm-mca's scheduling model of the core plus simulated "
             "misses at published latencies; not a latency of any board). "
             f"Command: `{report['command']}` on {report['machine']['cpu_model']} ({report['machine']['llvm_cpu']}), "
             f"commit {report['commit']}. Database: `{report['database']['path']}`, {report['database']['trials']} trials"
             f"{_judged(report['database'])}.",
             "", "| build | estimated cycles | of which memory | instructions |", "| --- | ---: | ---: | ---: |"]
    for label, row in e.items():
        lines.append(f"| {label} | {row['cycles'] / 1e6:,.1f} M | {100 * row['memory_cycles'] / row['cycles']:.0f}% | "
                     f"{row['insns'] / 1e6:,.1f} M |")
    lines += ["", f"Board-less database / default schedules: {r['no_board_vs_default']:.2f}x estimated cycles "
              f"({r['insns_no_board_vs_default']:.2f}x instructions). Against ONNX Runtime: board-less "
              f"{r['no_board_vs_ort']:.2f}x, default schedules {r['default_vs_ort']:.2f}x estimated cycles"
              + (f"; board-less {r['insns_no_board_vs_ort']:.2f}x instructions." if "insns_no_board_vs_ort" in r else "."),
              f"Outputs of the board-less build against ONNX Runtime (`--verify`, emulated Pi): relative error "
              f"{report['verify_rel_error']:.3g}.", "",
              f"Verdict: {report['verdict']}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    from compiler.driver import CompileOptions, compile_model
    from compiler.tuning import database as tuning_db, guard

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="rpi4")
    parser.add_argument("--model", default="attendnext")
    parser.add_argument("--json")
    args = parser.parse_args()
    preset = targets.load(args.target)
    if preset.is_host:
        raise UserError(f"--target {args.target}: a board-less database is for an ARM preset, e.g. --target rpi4")
    mcpu = str(preset.target.get("mcpu"))
    work = Path(tempfile.mkdtemp(prefix="dcac-no-board-"))
    default = compile_model(CompileOptions(target=preset.name, model=args.model, database="none",
                                           out=str(work / "default")))
    key = tuning_db.DatabaseKey(preset, args.model, "stock", default.sidecar["layout"])
    database = tuning_db.TuningDatabase(key.board_less_folder())
    if not database.exists():
        raise UserError(f"no board-less database in {paths.shown(database.path)}: tune one first, e.g. python compile.py "
                        f"--target {preset.name} --model {args.model} --tune --no-board --trials 1000")
    tuned = compile_model(CompileOptions(target=preset.name, model=args.model, database=str(database.path),
                                         verify=True, out=str(work / "no-board")))
    engines = {"default schedules": estimate("tvm", default.library, mcpu),
               "board-less database": estimate("tvm", tuned.library, mcpu),
               "ONNX Runtime": estimate("ort", paths.exported_onnx(args.model), mcpu)}
    d, t, o = (engines[k] for k in ("default schedules", "board-less database", "ONNX Runtime"))
    ratios = {"no_board_vs_default": t["cycles"] / d["cycles"], "insns_no_board_vs_default": t["insns"] / d["insns"],
              "no_board_vs_ort": t["cycles"] / o["cycles"], "default_vs_ort": d["cycles"] / o["cycles"],
              "insns_no_board_vs_ort": t["insns"] / o["insns"]}
    rel_error = max(c.rel_error for c in tuned.comparisons)
    ships = ratios["no_board_vs_default"] <= SHIPS_BELOW and tuned.verified
    verdict = (f"{'ships' if ships else 'does not ship'}: {ratios['no_board_vs_default']:.2f}x the default schedules' "
               f"estimated cycles (ships at {SHIPS_BELOW:.2f}x or less), outputs "
               f"{'within' if tuned.verified else 'outside'} the tolerance of ONNX Runtime's")
    command = f"bench/no_board.py --target {args.target}" + (f" --model {args.model}" if args.model != "attendnext"
                                                             else "") + (f" --json {args.json}" if args.json else "")
    provenance = database.provenance
    report = {"target": preset.name, "mcpu": mcpu, "model": args.model, "machine": machine(), "command": command,
              "commit": source_commit(), "engines": engines, "ratios": ratios, "verify_rel_error": rel_error,
              "verified": tuned.verified, "ships": ships, "verdict": verdict,
              "database": {"path": paths.shown(database.path), "trials": database.record_count(),
                           "note": provenance.get("note"), "runs": len(provenance.get("runs") or []),
                           "kernels_default_over_record": sorted(tuned.sidecar["tuning"]["default_over_record"])},
              "estimate_model": {"llvm_mca_cpu": preset.target.get("mcpu")}}
    with database.writing():
        database.write_provenance({**database.provenance, "check": {
            "verdict": verdict, "ships": ships, "no_board_vs_default": ratios["no_board_vs_default"],
            "no_board_vs_onnxruntime": ratios["no_board_vs_ort"], "verify_rel_error": rel_error,
            "trials": database.record_count(), "kernel_choices_trials": guard.read(database.path).get("trials"),
            "results": args.json, "command": command,
            "commit": report["commit"]}})
    publish(report, args.json, render=render)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
