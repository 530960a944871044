"""How many trials each AttendNeXt kernel needs: for each database named, every task's trials, and the trials it
took to come within 5% of its own best (its curve's knee), read from the records in measurement order.

    .venv/bin/python bench/task_convergence.py tuning_logs/host/emeraldrapids/attendnext-prepack \
        build/tuning_cost/empty@382 --json bench/results/task-convergence.json

`DIR@N` reads the database as it was after its first N trials. This is what bounds a tuning budget from below:
if the kernels that carry the latency each need k trials before they flatten, no budget under their sum reaches
the latency of a database that gave them that many. Nothing is timed here: the figures are trial counts from the
records (their timings were measured when each database was tuned, on its own CPU).
"""
import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.tuning import database as tuning_db  # noqa: E402
from compiler import paths  # noqa: E402
from compiler.errors import UserError, guarded  # noqa: E402

MAJOR = 0.01  # a task carrying at least 1% of its database's estimated latency


def parse_source(text: str) -> tuple:
    """'DIR' or 'DIR@N' -> (folder, first N records or None)."""
    folder, _, first = text.partition("@")
    if first and not first.isdigit():
        raise UserError(f"{text}: give DIR or DIR@TRIALS, e.g. build/tuning_cost/empty@382")
    if not (Path(folder) / tuning_db.RECORDS).is_file():
        raise UserError(f"{folder} holds no MetaSchedule database ({tuning_db.RECORDS}): give a folder written by --tune")
    return Path(folder), int(first) if first else None


def convergence(rows) -> dict:
    """The per-task rows of one database, with the sums over the tasks that carry the latency."""
    measured = [row for row in rows if row.best_ms == row.best_ms]
    total = sum(row.weighted_ms for row in measured) or 1.0
    tasks = [{"task": row.name, "weight": row.weight, "share": round(row.weighted_ms / total, 4),
              "trials": row.trials, "trials_to_within_5pct_of_own_best": row.converged_at,
              "best_ms": round(row.best_ms, 5)} for row in measured]
    major = [task for task in tasks if task["share"] >= MAJOR]
    return {"trials": sum(row.trials for row in rows), "tasks": len(rows),
            "major_tasks": len(major),
            "major_trials_to_converge": sum(task["trials_to_within_5pct_of_own_best"] for task in major),
            "major_trials_spent": sum(task["trials"] for task in major),
            "major_median_to_converge": statistics.median(t["trials_to_within_5pct_of_own_best"] for t in major)
            if major else None,
            "tasks_detail": tasks}


def render(result: dict) -> str:
    lines = [f"Per-task convergence, `{result['command']}` ({result['machine']['llvm_cpu']}); trial counts from the "
             "records, nothing timed.", "",
             f"Major tasks: {100 * MAJOR:g}% or more of the database's estimated latency.", "",
             "| database | trials | tasks | major tasks | their trials | their trials to within 5% of own best "
             "(sum) | median per major task |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, data in result["databases"].items():
        lines.append(f"| {name} | {data['trials']} | {data['tasks']} | {data['major_tasks']} | "
                     f"{data['major_trials_spent']} | {data['major_trials_to_converge']} | "
                     f"{data['major_median_to_converge']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("databases", nargs="+", help="database folders, each optionally DIR@TRIALS")
    parser.add_argument("--json", help="write the results here (and .md beside it)")
    args = parser.parse_args(argv)
    sources = [parse_source(text) for text in args.databases]
    from compiler.frontend import onnx_model
    from compiler.passes import pipeline
    from compiler import targets
    from compiler.tuning import report as tuning_report
    from compiler.bench.measure import machine, publish
    from compiler.frontend.onnx_export import export_attendnext

    preset = targets.load("host")
    target = preset.tvm_target()
    onnx_path = paths.exported_onnx("attendnext")
    export_attendnext(onnx_path)
    mod = pipeline.tunable_module(pipeline.import_onnx(onnx_model.load(onnx_path)), target)
    result = {"command": " ".join(["python bench/task_convergence.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "major_share": MAJOR, "databases": {}}
    for text, (folder, first) in zip(args.databases, sources):
        rows, _ = tuning_report.analyse(tuning_db.TuningDatabase(folder), mod, target, first)
        result["databases"][text] = convergence(rows)
    publish(result, args.json, render)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
