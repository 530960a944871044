"""What tuning costs: end-to-end latency against trials and tuning minutes for three ways to tune AttendNeXt on
the host, against the latency of the database the product ships for this CPU, all measured in one run.

    .venv/bin/python bench/tuning_cost.py --json bench/results/tuning_cost.json

- stock:  MetaSchedule's search defaults (tune_relax's): 64-trial batches, population 512, the gradient
          scheduler alone; built with the project's builder, since MetaSchedule's LocalBuilder (30 s timeout,
          a fresh pool per batch) failed every candidate of a trial run on this loaded 2-core machine;
- empty:  this project's tuner from an empty database (small batches, population from the batch, the
          persistent builder, the budget policy);
- seeded: the same, seeded (--seed-database) from another CPU's database of the same pipeline;
- defaults: the same, starting from the default schedules (--seed-defaults on, the product's default);
  the three runs above leave them out (--seed-defaults off) to keep their meaning.

Each run tunes into its own database under --work-dir with end-to-end checkpoints (compile.py
--checkpoint-every): a killed job resumes where it stopped when run again, and a finished run is not tuned
again. Then every checkpoint library, the shipped database's build and ONNX Runtime are timed side by side in
interleaved rounds: every latency in the results file comes from that one pass, and minutes are tuning time
(checkpoints excluded) from the runs' logs. The budgets default to a quarter (stock, empty) and a tenth
(seeded) of the shipped database's trials: the goals the results are read against.
"""
import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler import atomic  # noqa: E402
from compiler.tuning import database as tuning_db
from compiler import paths  # noqa: E402
from compiler.errors import UserError, guarded  # noqa: E402

RUNS = ("stock", "empty", "seeded", "defaults")
WITHIN = 0.05  # "within 5% of the shipped database's latency"


def run_options(name: str, budget: int, every: int, seed: str, libraries: Path):
    """The TuneOptions of one run: MetaSchedule's defaults (stock) or this project's (empty, seeded)."""
    from compiler.tuning.tune import TuneOptions

    common = dict(trials=budget, checkpoint_every=every, checkpoint_libraries=str(libraries),
                  seed_defaults=name == "defaults")
    if name == "stock":  # the project's builder: MetaSchedule's timed out on every candidate under load (docs/tuning-and-farm.md)
        return TuneOptions(**common, trials_per_iter=64, search_population=512, budget_policy=None)
    return TuneOptions(**common, seed_database=seed if name == "seeded" else None)


def shipped_build(work: Path, database=None):
    """AttendNeXt built as `compile.py --target host` builds it here: with the database the product selects
    for this CPU (its own, or another CPU's with a warning), or the one named by --shipped."""
    from compiler.driver import CompileOptions, compile_model

    result = compile_model(CompileOptions(target="host", out=str(work / "shipped"), database=database))
    if not result.sidecar["tuning"]["database"]:
        raise UserError("no shipped host database applies on this machine: nothing to compare the runs with; "
                        "tune one first (python compile.py --target host --tune)")
    return result


def default_seed(shipped_cpu: str) -> str:
    """Another CPU's AttendNeXt database of the shipped pipeline: not the shipped one, not this CPU's."""
    from compiler import targets
    from compiler.passes.pipeline import DEFAULT_LAYOUT

    preset = targets.load("host")
    here = tuning_db.cpu_of(preset)
    candidates = [db for db in tuning_db.foreign_databases(tuning_db.DatabaseKey(preset, "attendnext", "stock", DEFAULT_LAYOUT))
                  if db.cpu not in (here, shipped_cpu)]
    if not candidates:
        raise UserError("no database of a third CPU to seed from: pass --seed DIR (a folder under tuning_logs/)")
    return str(candidates[0].path)


def _shown(path) -> str:
    return paths.shown(Path(path).resolve())


def tune_run(name: str, budget: int, every: int, seed: str, work: Path) -> None:
    """One run, resumable: tune into work/<name> with checkpoints (nothing to do once its budget is spent)."""
    from compiler.driver import CompileOptions, compile_model

    folder = work / name
    print(f"[{name}] budget {budget} trials, checkpoint every {every}, database {folder}", file=sys.stderr, flush=True)
    compile_model(CompileOptions(target="host", database=str(folder), out=str(work / f"{name}-final"),
                                 tune=run_options(name, budget, every, seed, folder / "libraries")))


def measure_all(work: Path, shipped, runs: int) -> tuple:
    """Every checkpoint library of every run, the shipped build and ONNX Runtime, in interleaved rounds."""
    from compiler.bench.measure import bench_image, host_engines, interleaving, measure, tvm_timer
    from compiler.output import say
    from compiler.artifact.runtime import Model
    from compiler.tuning.checkpoint import library_path, read_log

    timers, points = {"shipped": tvm_timer(Model(shipped.library))}, {}
    for name in RUNS:
        for checkpoint in read_log(work / name)["checkpoints"]:
            label = f"{name}@{checkpoint['trials']}"
            timers[label] = tvm_timer(Model(library_path(checkpoint)))
            points[label] = (name, checkpoint)
    timers["ONNX Runtime"] = host_engines(2, bench_image())["ONNX Runtime"]
    rounds, per_round = interleaving(runs)
    say(f"measuring {len(timers)} builds side by side, {rounds} interleaved rounds of {per_round} runs")
    return measure(timers, rounds, per_round), points


def trials_to_within(curve, target_ms: float):
    """The fewest trials whose checkpoint came within WITHIN of `target_ms` (None if none did)."""
    return next((trials for trials, _, latency in sorted(curve) if latency <= target_ms * (1 + WITHIN)), None)


def latency_at(curve, trials: float):
    """The latency of the last checkpoint within `trials` (None if there is none)."""
    within = [point for point in curve if point[0] <= trials]
    return within[-1][2] if within else None


def tuning_sessions(folder: Path) -> list:
    """How the run's database was tuned, one entry per invocation (a resumed run has several): its budget, the
    trials it started from, batch size, population and checkpoint spacing, from the database's provenance."""
    keys = ("budget", "trials_before", "trials_per_iter", "search_population", "checkpoint_every", "minutes")
    provenance = json.loads((folder / "provenance.json").read_text())
    return [{key: run[key] for key in keys if key in run} for run in provenance.get("runs", [])]


def report(work: Path, times: dict, points: dict, shipped, commands: dict, budgets: dict, seed: str, command: str) -> dict:
    from statistics import median

    from compiler.bench.measure import database_summary, machine

    shipped_ms = median(times["shipped"])
    database = database_summary(shipped)
    runs = {}
    for name in [name for name in RUNS if (work / name / "provenance.json").is_file()]:  # the runs tuned so far
        curve = sorted([c["trials"], c["minutes"], round(median(times[label]), 3)]
                       for label, (run, c) in points.items() if run == name)
        runs[name] = {"trials_to_within_5pct": trials_to_within(curve, shipped_ms), "curve": curve,
                      "command": commands[name], "budget": budgets[name],
                      "in_run_curve": [[c["trials"], c["minutes"], c["latency_ms"]]
                                       for label, (run, c) in sorted(points.items(), key=lambda p: p[1][1]["trials"])
                                       if run == name]}
        runs[name]["tuned_in"] = tuning_sessions(work / name)
    if "seeded" in runs:
        runs["seeded"]["seed"] = seed
    goals = {name: limit for name, limit in (("empty", database["trials"] / 4), ("seeded", database["trials"] / 10),
                                              ("defaults", database["trials"] / 4)) if name in runs}
    return {"machine": machine(), "command": command, "runs_per_build": len(times["shipped"]),
            "shipped": {"trials": database["trials"], "latency_ms": round(shipped_ms, 3),
                        "database": database["path"], "cpu": database["cpu"]},
            "onnxruntime_ms": round(median(times["ONNX Runtime"]), 3), "runs": runs,
            "goals": {name: {"trials_at_most": limit, "met": runs[name]["trials_to_within_5pct"] is not None
                             and runs[name]["trials_to_within_5pct"] <= limit,
                             "latency_at_limit_ms": latency_at(runs[name]["curve"], limit)}
                      for name, limit in goals.items()},
            "notes": ["Latencies: medians of one side-by-side pass over every build (interleaved rounds), on the "
                      "host (x86), not an ARM board. Minutes: tuning time of each run, checkpoints excluded.",
                      "in_run_curve: the same checkpoints as timed during tuning (other load then)."]}


def render(result: dict) -> str:
    shipped = result["shipped"]
    lines = [f"Tuning cost on {result['machine']['cpu_model']} ({result['machine']['llvm_cpu']}), one run: "
             f"`{result['command']}`", "",
             f"Shipped database for this CPU: {shipped['database']} (tuned for {shipped['cpu']}, {shipped['trials']} "
             f"trials): {shipped['latency_ms']:.2f} ms; ONNX Runtime {result['onnxruntime_ms']:.2f} ms.", "",
             "| run | budget | trials to within 5% of shipped | goal | best latency (ms) | at trials |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for name, run in result["runs"].items():
        best = min(run["curve"], key=lambda point: point[2]) if run["curve"] else [None, None, float("nan")]
        goal = result["goals"].get(name)
        at_limit = goal and goal["latency_at_limit_ms"]
        goal_text = (f"<= {goal['trials_at_most']:.0f}: {'met' if goal['met'] else 'missed'}"
                     + (f" ({at_limit:.2f} ms at the limit)" if at_limit else "") if goal else "-")
        lines.append(f"| {name} | {run['budget']} | {run['trials_to_within_5pct'] or 'not reached'} | {goal_text} | "
                     f"{best[2]:.2f} | {best[0]} |")
    lines += ["", *result["notes"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    shipped = result["shipped"]["latency_ms"]
    for column, (axis, label) in enumerate(zip(axes, ("trials", "tuning minutes (checkpoints excluded)"))):
        for name, run in result["runs"].items():
            curve = [point for point in run["curve"] if point[0] > 0 or name == "seeded"]
            axis.plot([point[column] for point in curve], [point[2] for point in curve], "o-", label=name)
        axis.axhline(shipped, color="black", linestyle="--",
                     label=f"shipped ({result['shipped']['trials']} trials, {result['shipped']['cpu']})")
        axis.axhspan(shipped, shipped * (1 + WITHIN), color="grey", alpha=0.2, label="within 5% of shipped")
        axis.set_yscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("end-to-end latency (ms, log)")
        axis.legend(fontsize=8)
    figure.suptitle(f"AttendNeXt tuning cost on {result['machine']['llvm_cpu']} (host, x86; one side-by-side pass)")
    figure.tight_layout()
    with atomic.staged_file(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default=str(ROOT / "build" / "tuning_cost"),
                        help="the runs' databases and checkpoint libraries (kept: rerun to resume)")
    parser.add_argument("--shipped", help="the reference database (default: the one `compile.py --target host` "
                                          "applies on this machine); name it to rerun a published comparison")
    parser.add_argument("--seed", help="database to seed the seeded run from (default: another CPU's AttendNeXt "
                                       "database, neither this CPU's nor the shipped one)")
    parser.add_argument("--only", default=",".join(RUNS),
                        help="comma list of runs to tune now, in this order (default: all; '' measures only)")
    parser.add_argument("--budget", action="append", default=[], metavar="RUN=TRIALS",
                        help="a run's budget (default: a quarter of the shipped trials, a tenth for seeded)")
    parser.add_argument("--checkpoints", type=int, default=8, help="checkpoints per run (every budget/N trials)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per build in the side-by-side pass")
    parser.add_argument("--no-measure", action="store_true", help="tune only; measure in a later invocation")
    parser.add_argument("--json", help="write the results here (and .md, .png beside it)")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = [name for name in only if name not in RUNS]
    if unknown:
        raise UserError(f"--only {args.only}: unknown run {unknown[0]}; choose from {', '.join(RUNS)}")
    work = Path(args.work_dir)
    shipped = shipped_build(work, args.shipped)
    shipped_trials = tuning_db.TuningDatabase(Path(shipped.sidecar["tuning"]["database"])).record_count()
    budgets = {"stock": math.ceil(shipped_trials / 4), "empty": math.ceil(shipped_trials / 4),
               "seeded": shipped_trials // 10, "defaults": math.ceil(shipped_trials / 4)}
    for item in args.budget:
        name, _, value = item.partition("=")
        if name not in RUNS or not value.isdigit():
            raise UserError(f"--budget {item}: give RUN=TRIALS with RUN one of {', '.join(RUNS)}, e.g. empty=400")
        budgets[name] = int(value)
    seed = args.seed or default_seed(shipped.sidecar["tuning"]["cpu"])
    commands = {name: (f"python bench/tuning_cost.py --only {name} --budget {name}={budgets[name]} "
                       f"--checkpoints {args.checkpoints}" + (f" --seed {_shown(seed)}" if name == "seeded" else ""))
                for name in RUNS}
    for name in only:  # in the order given
        tune_run(name, budgets[name], max(4, budgets[name] // args.checkpoints), seed, work)
    if args.no_measure:
        return 0
    times, points = measure_all(work, shipped, args.runs)
    command = " ".join(["python bench/tuning_cost.py", *(argv if argv is not None else sys.argv[1:])])
    result = report(work, times, points, shipped, commands, budgets, seed, command)
    from compiler.bench.measure import publish

    publish(result, args.json, render)
    if args.json:
        plot(result, Path(args.json).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
