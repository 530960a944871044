"""report.md and report.png beside a tuning database: where the time went, from the records themselves.

Everything is recomputed from the record file (its order is measurement order), so the report covers
every run that resumed into the database, not only the last one.
"""
import json
from dataclasses import dataclass
from typing import List, Optional

from compiler import atomic
from compiler.tuning.checkpoint import read_log

FAILED = 1e9  # MetaSchedule stores a failed candidate as run_secs [1e10]


@dataclass
class TaskRow:
    name: str
    weight: int
    trials: int
    best_ms: float  # nan when no valid measurement
    # the task's trials until its first schedule within 5% of its best: where its curve flattened (None: no
    # valid measurement). Far below `trials`: budget the task did not need; close to it: it was still improving.
    converged_at: Optional[int] = None

    @property
    def weighted_ms(self) -> float:
        return self.weight * self.best_ms


def _workload_hashes(database) -> List[int]:
    hashes = []
    for line in database.workload_file.read_text().splitlines():
        if line.strip():
            hashes.append(int(json.loads(line)[0]) % (1 << 64))
    return hashes


def converged_at(times: List[float], within: float = 0.05) -> Optional[int]:
    """How many of a task's trials (in measurement order) it took to reach within `within` of its best."""
    best = min(times, default=float("inf"))
    if best == float("inf"):
        return None
    return next(index for index, seconds in enumerate(times, start=1) if seconds <= best * (1 + within))


def analyse(database, mod, target, first: Optional[int] = None):
    """Per-task rows and the estimated-latency curve [(trial, ms, tasks covered)] over all records (or the
    `first` ones: the database as it was after that many trials)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm_ffi import structural_hash

    tasks = ms.relax_integration.extract_tasks(mod, target)
    by_hash = {structural_hash(task.dispatched[0]) % (1 << 64): task for task in tasks}
    workloads = _workload_hashes(database)
    best, trials, curve, history = {}, {}, [], {}
    with open(database.record_file) as handle:
        lines = [line for line in handle if line.strip()][:first]
    for index, line in enumerate(lines, start=1):
        workload, record = json.loads(line)
        key = workloads[workload] if workload < len(workloads) else None
        trials[key] = trials.get(key, 0) + 1
        secs = [float(s) for s in record[1]]
        history.setdefault(key, []).append(sum(secs) / len(secs) if max(secs) < FAILED else float("inf"))
        if max(secs) < FAILED:
            best[key] = min(best.get(key, float("inf")), sum(secs) / len(secs))
        covered = [k for k in best if k in by_hash]
        curve.append((index, sum(by_hash[k].weight * best[k] for k in covered) * 1e3, len(covered)))
    rows = [TaskRow(task.task_name, int(task.weight), trials.get(key, 0), best.get(key, float("nan")) * 1e3,
                    converged_at(history.get(key, [])))
            for key, task in by_hash.items()]
    rows.sort(key=lambda row: -row.weighted_ms if row.best_ms == row.best_ms else 0)
    return rows, curve


def _plot(path, rows, curve, title, checkpoints=()) -> None:
    """Estimated latency by trial (with the end-to-end checkpoints beside it), end-to-end latency by tuning
    minutes when there are checkpoints, and the top tasks' shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if checkpoints else 2
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5))
    left, right = axes[0], axes[-1]
    if curve:
        left.plot([c[0] for c in curve], [c[1] for c in curve], label="estimate: weight x best, tuned tasks")
    if checkpoints:
        points = [c for c in checkpoints if c["trials"] > 0]  # the untuned point would flatten the axis
        left.plot([c["trials"] for c in points], [c["latency_ms"] for c in points], "o-",
                  label="end to end, measured (checkpoints)")
        middle = axes[1]
        middle.plot([c["minutes"] for c in points], [c["latency_ms"] for c in points], "o-", color="C1")
        middle.set_xlabel("tuning time (minutes, checkpoints excluded)")
        middle.set_ylabel("end-to-end latency (ms)")
        middle.set_title("end to end, by tuning time")
        left.legend()
    left.set_xlabel("trials")
    left.set_ylabel("latency (ms)")
    left.set_title("latency by trial")
    measured = [r for r in rows if r.best_ms == r.best_ms][:15]
    total = sum(r.weighted_ms for r in rows if r.best_ms == r.best_ms) or 1.0
    right.barh([r.name[:40] for r in measured][::-1], [100 * r.weighted_ms / total for r in measured][::-1])
    right.set_xlabel("share of estimated latency (%)")
    right.set_title("top tasks by share")
    figure.suptitle(title)
    figure.tight_layout()
    with atomic.staged_file(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    plt.close(figure)


def _run_lines(runs) -> List[str]:
    """What the newest run's seed and budget policy did: seeded tasks, and each stopped task with its reason."""
    if not runs:
        return []
    run, lines = runs[-1], []
    seed = run.get("seed")
    if seed:
        lines.append(f"- seeded from {seed['source']}: {seed['tasks_seeded']} of {seed['tasks']} tasks, "
                     f"{seed['measured']} seed schedules measured by this run ({seed['failed']} did not run here)")
    for task, reason in sorted((run.get("stopped_tasks") or {}).items()):
        lines.append(f"- budget policy stopped `{task}`: {reason}")
    return lines + ([""] if lines else [])


def _checkpoint_lines(checkpoints) -> List[str]:
    """The end-to-end checkpoints as a table: trials, tuning minutes, measured latency, the estimate."""
    if not checkpoints:
        return []
    lines = ["End-to-end checkpoints (the model built with the records so far, timed on the tuning device):", "",
             "| trials | tuning minutes | latency (ms, median) | estimate (ms) |", "| ---: | ---: | ---: | ---: |"]
    for c in sorted(checkpoints, key=lambda c: c["trials"]):
        estimate = "-" if c.get("estimated_ms") is None else f"{c['estimated_ms']:.3f}"
        lines.append(f"| {c['trials']} | {c['minutes']:.1f} | {c['latency_ms']:.3f} | {estimate} |")
    return lines + [""]


def write(database, mod, target) -> None:
    """Write report.md and report.png into the database folder (atomically)."""
    rows, curve = analyse(database, mod, target)
    provenance = database.provenance
    device = provenance.get("device", {})
    emulated = device.get("emulated")
    board_less = device.get("measured_by") == "cycle-estimate"
    title = f"{provenance.get('target_name', '?')}: {len(curve)} trials" + (
        " (EMULATED timings)" if emulated else " (cycle estimate, no board)" if board_less else "")
    checkpoints = read_log(database.path)["checkpoints"]
    _plot(database.path / "report.png", rows, curve, title, checkpoints)
    measured = [r for r in rows if r.best_ms == r.best_ms]
    total = sum(r.weighted_ms for r in measured)
    lines = [
        f"# Tuning report: {database.path.parent.name}/{database.path.name}", "",
        (f"- device: none -- **{device.get('note')}**: candidates ranked by their estimated cycles on "
         f"{device.get('core')} at {device.get('clock_ghz')} GHz (llvm-mca model {device.get('mca_cpu')}, LLVM "
         f"{device.get('llvm')}, simulated caches), one thread; times below are that estimate" if board_less else
         f"- device: {device.get('cpu_model', 'unknown')} ({device.get('machine', '?')})"
         + (" -- **measured under qemu emulation: not a real board's timings**" if emulated else "")),
        f"- trials: {len(curve)} (budget {provenance.get('budget', '?')}); tasks: {len(rows)}, "
        f"with a valid measurement: {len(measured)}",
        f"- estimated latency of the best schedules (tuned tasks only, weight x best): {total:.3f} ms",
        f"- TVM {provenance.get('tvm_version', '?')}, fusion {provenance.get('fusion', '?')}, "
        f"updated {provenance.get('updated', '?')}", "",
        *_run_lines(provenance.get("runs") or []),
        *_checkpoint_lines(checkpoints),
        "![estimated latency and per-task share](report.png)", "",
        "Trials to its best: the task's trials until its first schedule within 5% of its best (close to its trials: "
        "still improving).", "",
        "| task | weight | trials | trials to its best | best (ms) | weight x best (ms) | share |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row.best_ms == row.best_ms:
            lines.append(f"| {row.name} | {row.weight} | {row.trials} | {row.converged_at} | {row.best_ms:.4f} | "
                         f"{row.weighted_ms:.4f} | {100 * row.weighted_ms / total:.1f}% |")
        else:
            lines.append(f"| {row.name} | {row.weight} | {row.trials} | - | - | - | - |")
    atomic.write_text(database.path / "report.md", "\n".join(lines) + "\n")
