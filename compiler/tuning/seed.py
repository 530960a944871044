"""Seed a tuning run: the default schedules and/or another database's best schedules, measured here before
the search starts.

A database tuned for another board of the same ISA family (rpi4 -> rpi5), another CPU, or another model
sharing kernels holds schedules that are good starting points, but their timings belong to the device
that measured them. So a seed record is never copied: each matching workload's best `top_k` schedules
are replayed on this task, built and measured on this run's device, and only those measurements are
committed. MetaSchedule's evolutionary search then starts from them (it draws its initial population
from the database's best records) and the cost model is trained on them before the first batch.
Workloads with no match in the seed start from nothing, as they would without a seed.

The default schedules (schedules/defaults.py) are a seed too: one deterministic schedule per task, made
from the target's machine model with no measurement. On a board no database was ever measured on, they
are the best start there is (the instruction-count proxy puts them at ONNX Runtime's level on the A72).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from compiler.errors import UserError
from compiler.tuning.database import TuningDatabase


@dataclass
class SeedSummary:
    source: str
    tasks: int  # tasks of this run
    tasks_seeded: int  # tasks with at least one seed schedule measured here
    measured: int  # seed schedules measured and committed
    failed: int  # seed schedules that did not apply, build or run here (dropped)
    first_error: str = ""  # the first failure's message, shortened: what to look at when all fail

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"      seeded {self.tasks_seeded} of {self.tasks} tasks from {self.source}: {self.measured} schedules "
                f"measured by this run" + (f", {self.failed} did not build or run here (first: {self.first_error})"
                                       if self.failed else ""))


def open_seed(path: str):
    """The seed database, read into memory: nothing a run does can write to the seed's files."""
    from tvm.s_tir import meta_schedule as ms

    folder = Path(path)
    seed = TuningDatabase(folder)
    if not seed.exists():
        raise UserError(f"--seed-database {path}: no tuning database there (expected database_workload.json and "
                        "database_tuning_record.json); give a folder under tuning_logs/")
    on_disk = ms.database.JSONDatabase(path_workload=str(seed.workload_file), path_tuning_record=str(seed.record_file),
                                       allow_missing=False)
    memory = ms.database.MemoryDatabase()
    for record in on_disk.get_all_tuning_records():
        if record.run_secs:  # only records that ran on their own device carry a ranking
            memory.commit_workload(record.workload.mod)
            memory.commit_tuning_record(record)
    return memory


DEFAULT_SCHEDULES = "default schedules"


def default_schedule_seed(mod, target, tasks: set):
    """The default schedules of the tunable module's tasks named in `tasks`, as a seed database (their records
    carry no timing worth keeping: seeds rank by it, and only this device's measurements are committed)."""
    from schedules import defaults

    database, _ = defaults.default_database(mod, target, only=set(tasks))
    return database


def best_records(database, mod, top_k: int) -> list:
    """The database's best `top_k` records for the workload `mod`; [] when it has none (one lookup for the
    seed's schedules and for whether a resumed run's task is already measured)."""
    if not database.has_workload(mod):
        return []
    return list(database.get_top_k(database.commit_workload(mod), top_k))


def replayed(database, context, top_k: int):
    """The database's best `top_k` records for this task's workload, each replayed on the task's module as a
    measure candidate: ([(candidate, record)], how many did not replay)."""
    from tvm.s_tir import Schedule, meta_schedule as ms

    pairs, failed = [], 0
    for record in best_records(database, context.mod, top_k):
        schedule = Schedule(context.mod)
        try:
            record.trace.apply_to_schedule(schedule, remove_postproc=False)
        except Exception:  # a schedule primitive this target rejects: the record does not carry over
            failed += 1
            continue
        pairs.append((ms.MeasureCandidate(schedule, ms.arg_info.ArgInfo.from_entry_func(schedule.mod)), record))
    return pairs, failed


def seed_candidates(seeds, context, top_k: int):
    """Each seed's best `top_k` schedules for this task's workload, replayed on its module; [] if none match."""
    candidates, failed = [], 0
    for seed in seeds:
        pairs, not_replayed = replayed(seed, context, top_k)
        candidates += [candidate for candidate, _ in pairs]
        failed += not_replayed
    return candidates, failed


def train_on_own_records(database, contexts, cost_model, top_k: int = 64) -> int:
    """Train a resumed run's fresh cost model on the records the database already holds (each task's best
    `top_k` that ran), as the first run's model had learned them; returns how many it learned from. Without
    this a resumed search ranks its first candidates with an untrained model."""
    from tvm.s_tir import meta_schedule as ms

    learned = 0
    for context in contexts:
        pairs = [(c, r) for c, r in replayed(database, context, top_k)[0]
                 if r.run_secs and max(float(s) for s in r.run_secs) < 1e9]  # 1e10: a candidate that failed
        if pairs:
            cost_model.update(context, [c for c, _ in pairs],
                              [ms.runner.RunnerResult([float(s) for s in r.run_secs], None) for _, r in pairs])
            learned += len(pairs)
    return learned


def measure(candidates, target, builder, runner):
    """Build and run candidates with this run's builder and runner; one RunnerResult per candidate."""
    from tvm.s_tir import meta_schedule as ms

    built = builder.build([ms.builder.BuilderInput(c.sch.mod, target) for c in candidates])
    results = [ms.runner.RunnerResult(None, b.error_msg) for b in built]
    runnable = [i for i, b in enumerate(built) if b.error_msg is None]
    device = "cpu" if target.kind.name in ("llvm", "c") else target.kind.name  # the runner's device name
    futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, device, candidates[i].args_info)
                          for i in runnable])
    for i, future in zip(runnable, futures):
        results[i] = future.result()
    return results


SEED_TASKS_PER_BATCH = 8  # tasks whose seeds are built and measured together: one device round (or qemu run) for all


def replay(seeds, source: str, contexts, target, builder, runner, database, cost_model, top_k: int,
           total_tasks: int, after_failures=None) -> SeedSummary:
    """Measure the seeds' schedules for every task of `contexts` (the model's `total_tasks` tasks but those a
    resumed run already measured) on this device, a few tasks a batch; commit what ran, train the cost model.
    `after_failures()` runs when a batch's seeds failed (the tuner's check that a server is left: it raises if
    none is)."""
    from tqdm import tqdm

    summary = SeedSummary(source=source, tasks=total_tasks, tasks_seeded=0, measured=0, failed=0)
    with tqdm(total=len(contexts), desc="seeding", unit="task", dynamic_ncols=True, file=sys.stderr) as bar:
        for first in range(0, len(contexts), SEED_TASKS_PER_BATCH):
            batch = []
            for context in contexts[first:first + SEED_TASKS_PER_BATCH]:
                candidates, failed = seed_candidates(seeds, context, top_k)
                summary.failed += failed
                if candidates:
                    batch.append((context, candidates))
            results = measure([c for _, cs in batch for c in cs], target, builder, runner) if batch else []
            failures_before = summary.failed
            for context, candidates in batch:
                mine, results = results[:len(candidates)], results[len(candidates):]
                _commit(context, candidates, mine, target, database, cost_model, summary)
            bar.update(len(contexts[first:first + SEED_TASKS_PER_BATCH]))
            if summary.failed > failures_before and after_failures is not None:
                after_failures()
    return summary


def _commit(context, candidates, results, target, database, cost_model, summary: SeedSummary) -> None:
    """One task's measured seeds into the database and the cost model."""
    from tvm.s_tir import meta_schedule as ms

    workload = database.commit_workload(context.mod)
    good = 0
    for candidate, result in zip(candidates, results):
        if result.error_msg is not None or not result.run_secs:
            summary.failed += 1
            summary.first_error = summary.first_error or (result.error_msg or "no timing").strip()[-200:]
            continue
        database.commit_tuning_record(ms.database.TuningRecord(
            trace=candidate.sch.trace, workload=workload, run_secs=result.run_secs, target=target,
            args_info=candidate.args_info))
        good += 1
    summary.measured += good
    summary.tasks_seeded += good > 0
    cost_model.update(context, candidates, results)
