"""Tuning: MetaSchedule (XGBoost cost model) over TVM's RPC tracker, resumable and fault tolerant.

Where measurements happen:
  - `--tracker HOST:PORT`: every server registered under the preset's key, one runner worker each;
  - no tracker, host preset: a local runner on this machine;
  - `--no-board` (aarch64 preset): no measurement at all: each candidate's cycle estimate on the preset's
    core (compiler/tuning/estimate_runner.py), into a database of its own kind (database.py);
  - no tracker, aarch64 preset: a local tracker with N emulated servers (timings are emulation timings,
    recorded as such in provenance.json and never applied to a real board's build unless asked): a test of
    the farm's machinery, not a way to rank schedules.

Resume: records are appended to the database as each batch finishes, a rerun counts them against the
budget, and a line cut by a crash is dropped on load. Faults: a client-side timeout bounds every
measurement, so a dead or frozen server costs only its in-flight candidates; when no server is left
the run stops with a clear error and a resumable database.
"""
import collections
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import schedules
from compiler import paths
from compiler.artifact.runtime import Model
from compiler.device.session import open_device
from compiler.errors import DeviceError, UserError
from compiler.output import say, warn
from compiler.tuning import estimate_runner, report, runners
from compiler.tuning.checkpoint import Checkpointer
from compiler.tuning.database import check_resume, cpu_of
from compiler.tuning.policy import BudgetPolicy, PolicyState, earlier_stops, make_policy_callback, tune_contexts
from compiler.tuning.seed import DEFAULT_SCHEDULES, best_records, default_schedule_seed, open_seed, replay, \
    train_on_own_records


@dataclass
class TuneOptions:
    trials: int = 2000
    servers: int = 2  # emulated servers started when no tracker is given (aarch64 presets)
    session_timeout: float = 120.0  # one candidate's upload + load + measurement on a device
    trials_per_iter: Optional[int] = None  # default: from the budget and the number of tasks
    builder: str = "persistent"  # or "stock": MetaSchedule's LocalBuilder (for throughput comparisons)
    allow_other_cpu: bool = False  # add records to a database measured for another CPU (mixes two CPUs)
    seed_database: Optional[str] = None  # start from another database's best schedules, measured here first
    seed_top_k: int = 2  # seed schedules replayed per matching workload
    seed_defaults: bool = True  # start from the default schedules too, each measured here first (seed.py)
    # Candidates the evolutionary search keeps per iteration (None: from the batch size, default_population).
    search_population: Optional[int] = None
    # Stops flat and schedule-less tasks on top of MetaSchedule's gradient scheduler (compiler/tuning/policy.py);
    # None: MetaSchedule's scheduler alone, with its own task contexts.
    budget_policy: Optional[BudgetPolicy] = field(default_factory=BudgetPolicy)
    checkpoint_every: Optional[int] = None  # build and time the whole model every N trials (tuning_checkpoint.py)
    checkpoint_runs: int = 20  # timed runs per checkpoint
    checkpoint_libraries: Optional[str] = None  # where checkpoint libraries go (default build/checkpoints/...)
    wait_for_database: bool = False  # another run writes the database: wait for it, then resume (else exit 2)
    no_board: bool = False  # aarch64 preset: rank candidates by their cycle estimate on the core (estimate_runner.py)
    judge_records: bool = True  # at the end and at checkpoints, each record against its default schedule (guard.py)


@dataclass
class TuneSummary:
    trials_before: int
    trials_now: int
    budget: int
    tasks: int
    failures: Dict[str, int] = field(default_factory=dict)
    estimated_ms: Optional[float] = None
    seconds: float = 0.0
    steady_trials_per_minute: Optional[float] = None  # from the first batch's build on (start-up excluded)
    seed: Optional[object] = None  # tuning_seed.SeedSummary when the run was seeded
    stopped: Dict[str, str] = field(default_factory=dict)  # task -> why the budget policy stopped it

    @property
    def trials_run(self) -> int:
        return self.trials_now - self.trials_before


class NoServersLeft(Exception):
    """Raised from the measure callback to stop tuning when the tracker has no server for the key left."""


def describe(summary: "TuneSummary") -> str:
    """The end-of-run lines: trials, estimate, failures by kind."""
    lines = [summary.seed.describe()] if summary.seed is not None else []
    lines += [f"      tuned {summary.trials_run} trials this run ({summary.trials_now} of {summary.budget} in the "
             f"database, {summary.tasks} tasks) in {summary.seconds / 60:.1f} min"]
    if summary.estimated_ms is not None:
        lines.append(f"      estimated latency of the best schedules measured this run: {summary.estimated_ms:.2f} ms")
    if summary.stopped:
        lines.append(f"      budget policy stopped {len(summary.stopped)} of {summary.tasks} tasks (see report.md)")
    if summary.failures:
        lines.append("      failed candidates: " + ", ".join(f"{n} {kind}" for kind, n in summary.failures.items()))
    return "\n".join(lines)


def failure_kind(message: str) -> str:
    """A short category for a failed candidate, for the end-of-run summary."""
    text = message or ""
    if "Timeout" in text or "timed out" in text:
        return "timeout (device hung or too slow)"
    if "RPCRunner" in text or "RPCEndpoint" in text or "connect" in text.lower():
        return "device lost mid-measurement"
    if text.startswith("build"):
        return "candidate failed to build"
    return "candidate failed to run"


def trials_per_iter(budget: int, tasks: int, servers: int = 1) -> int:
    """Small batches when the budget is small: MetaSchedule's gradient scheduler gives every task one
    batch first, so 64-trial batches on 60 tasks would spend 3,840 trials before it starts choosing. But
    never fewer candidates than measuring servers: a batch is measured across the servers at once, and a
    smaller one leaves some of them idle."""
    return max(2, servers, min(64, budget // max(1, 2 * tasks)))


def default_population(per_iter: int) -> int:
    """Candidates the evolutionary search evolves per iteration: MetaSchedule's 512 for its 64-trial batches,
    fewer for small batches. Each iteration costs seconds of cost-model search whatever its batch (about 60 s
    at 512 against 7 s at 64 on 2 cores), so with batches of 2 or 3 a population of 512 would make tuning
    mostly search time."""
    return max(64, min(512, 8 * per_iter))


class StopRequested(Exception):
    """Raised from the measure callback after Ctrl-C: the batch just measured is already in the database."""


def _make_progress_callback(total: int, done: int, check_servers, stop_requested: list, checkpointer=None,
                            database=None):
    from tqdm import tqdm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        """A tqdm bar: trials of the budget, estimated latency of the best schedules so far, time left."""

        def __init__(self):
            super().__init__()
            self.bar = tqdm(total=total, initial=done, unit="trial", desc="tuning", dynamic_ncols=True)
            self.best: Dict[int, float] = {}
            self.failures = collections.Counter()
            self.estimate_ms: Optional[float] = None
            self.no_servers_left = False

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            tasks = task_scheduler.tasks_
            for built, ran in zip(builder_results, runner_results):
                error = built.error_msg or ran.error_msg
                if error or not ran.run_secs:
                    self.failures[failure_kind(error or "")] += 1
                    continue
                seconds = sum(float(s) for s in ran.run_secs) / len(ran.run_secs)
                self.best[task_id] = min(self.best.get(task_id, float("inf")), seconds)
            self.estimate_ms = sum(tasks[t].task_weight * s for t, s in self.best.items()) * 1e3
            self.bar.update(len(runner_results))
            self.bar.set_postfix_str(f"est {self.estimate_ms:.2f} ms ({len(self.best)}/{len(tasks)} tasks) "
                                     f"failed {sum(self.failures.values())}")
            if database is not None:
                database.note_progress()
            if checkpointer is not None:
                checkpointer.maybe(self.bar.n, self.estimate_ms, say=self.bar.write)
            if self.failures and check_servers is not None and not check_servers():
                self.no_servers_left = True  # TVM's FFI loses the exception's type on the way out
                raise NoServersLeft()
            if stop_requested:  # raised here, between batches: an exception elsewhere in TVM's C++ loop aborts
                raise StopRequested()

    return Progress()



def tune(mod, preset, database, options: TuneOptions, model_sha256: str, fingerprint: dict,
         build_checkpoint=None, tracker: Optional[str] = None) -> TuneSummary:
    """Tune every kernel of the tunable module `mod` into `database` (a tuning.database.TuningDatabase), built
    by the pipeline `fingerprint` names (compiler/passes/pipeline.py), then write its report. `build_checkpoint(
    records, out_dir) -> library` builds the model with a MetaSchedule database (needed for checkpoint_every).
    Candidates are measured on the boards behind `tracker` (HOST:PORT), else on the host or emulated Pis.
    The database's write lock is held from before the first read to the last write."""
    check_options(options, can_checkpoint=build_checkpoint is not None)
    schedules.register()  # the project's schedule rules, before tasks are extracted
    with database.writing(wait=options.wait_for_database):
        check_resume(database, preset, fingerprint, options.allow_other_cpu)
        summary = _tune_locked(mod, preset, database, options, model_sha256, fingerprint, build_checkpoint, tracker)
        report.write(database, mod, preset.tvm_target())
    return summary


def check_options(options: TuneOptions, can_checkpoint: bool) -> None:
    """Refuse a budget, checkpoint spacing or population that cannot work, before any slow step."""
    if options.trials <= 0:
        raise UserError(f"--trials {options.trials}: give a positive trial budget, e.g. --trials 2000")
    if options.checkpoint_every is not None and (options.checkpoint_every <= 0 or not can_checkpoint):
        raise UserError(f"--checkpoint-every {options.checkpoint_every}: give a positive number of trials between "
                        "end-to-end measurements, e.g. --checkpoint-every 100")
    if options.no_board and options.checkpoint_every is not None:
        raise UserError("--checkpoint-every times the whole model on a device, and --no-board has none: drop one of "
                        "the two")
    if options.search_population is not None and options.search_population < 64:
        raise UserError(f"--search-population {options.search_population}: give at least 64 (the search keeps 50 "
                        "unmeasured candidates besides the measured ones), e.g. --search-population 64")


def _tune_locked(mod, preset, database, options: TuneOptions, model_sha256: str, fingerprint: dict,
                 build_checkpoint, tracker: Optional[str]) -> TuneSummary:
    from tvm.s_tir import meta_schedule as ms

    seed = open_seed(options.seed_database) if options.seed_database else None
    started = time.time()
    target = preset.tvm_target()
    db = database.load(for_writing=True)
    spent = database.record_count()
    summary = TuneSummary(trials_before=spent, trials_now=spent, budget=options.trials, tasks=0)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    summary.tasks = len(tasks)
    if options.trials - spent <= 0:
        say(f"tuning: {spent} trials already in {database.path} (budget {options.trials}): nothing to do")
        database.mark_interrupted()  # a killed run's entry, if any: it never reached its close
        return _finish(summary, database, started)
    # Build workers unpickle this package's build functions: make it importable there.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    if options.no_board:
        say(f"tuning with no board: each candidate ranked by its cycle estimate on {preset.target.get('mcpu')} "
            "(qemu, llvm-mca), a model, not a measurement")
    elif tracker is None and not preset.is_host:
        warn(f"tuning on {options.servers} emulated '{preset.rpc_key}' servers (qemu): emulation timings, "
             "not a real board's (--no-board ranks candidates by the cycle estimate instead)")
    with (contextlib.nullcontext() if options.no_board else open_device(preset, tracker, options.servers)) as reached:
        runner, device, check = runners.make_runner(preset, reached, options, database)
        servers = reached.servers() if reached is not None else 1
        per_iter = options.trials_per_iter or trials_per_iter(options.trials - spent, len(tasks), servers)
        population = options.search_population or default_population(per_iter)
        database.open_run(_identity(preset, device, model_sha256, fingerprint, options),
                           _run_entry(device, options, per_iter, population))
        builder = runners.make_builder(preset, options)
        try:
            policy_state = (PolicyState(options.budget_policy, earlier_stops(database.provenance))
                            if options.budget_policy is not None else None)
            contexts, weights = _contexts(tasks, database, population, policy_state)
            if not contexts:
                say("tuning: every task was stopped by the budget policy in an earlier run of this database: "
                    "nothing left to tune (--budget-policy off tunes them all again)")
                summary.stopped.update(policy_state.reasons())
                return _finish(summary, database, started)
            cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=contexts[0].num_threads,
                                                        tree_method="auto")
            if spent:
                learned = train_on_own_records(db, contexts, cost_model)
                say(f"tuning: cost model trained on {learned} records already in the database")
            unseeded = [c for c in contexts if not best_records(db, c.mod, 1)]  # a resumed run is not reseeded
            # the default schedules seed as many tasks as the budget pays for (one trial each), in task order
            defaulted = {c.task_name for c in unseeded[:max(0, options.trials - spent)]}
            seeds = ([(DEFAULT_SCHEDULES, default_schedule_seed(mod, target, defaulted))]
                     if options.seed_defaults and defaulted else []) + \
                    ([(options.seed_database, seed)] if seed is not None else [])
            if seeds:
                summary.seed = replay([s for _, s in seeds], " and ".join(name for name, _ in seeds), unseeded, target,
                                      builder, runner, db, cost_model, options.seed_top_k, total_tasks=len(contexts),
                                      after_failures=lambda: _servers_left(check, preset, database))
                database.record_seed(summary.seed.as_dict())
                spent = database.record_count()
            checkpointer = None
            if options.checkpoint_every:
                checkpointer = _checkpointer(database, reached, device, options, spent, db, build_checkpoint, started)
            if options.trials - spent <= 0:  # the seeds spent the budget: the run's curve is the point it ends at
                if checkpointer is not None:
                    checkpointer.final(spent)
                    checkpointer.save()
                return _finish(summary, database, started)
            if checkpointer is not None:
                checkpointer.maybe(spent)
            _search(ms, contexts, weights, database, db, builder, runner, cost_model, options, spent, per_iter,
                    policy_state, checkpointer, check, summary, preset)
        finally:
            builder.close()
            runners.drop_pending_measurements(runner)
    return _finish(summary, database, started)





def _contexts(tasks, database, population: int, policy_state):
    """Task contexts and weights: MetaSchedule's own (no budget policy), or the policy's stoppable ones."""
    from tvm.s_tir import meta_schedule as ms

    logs = str(database.path / "logs")
    if policy_state is None:
        return ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, work_dir=logs, strategy=ms.search_strategy.EvolutionarySearch(population_size=population))
    return tune_contexts(tasks, logs, lambda: ms.search_strategy.EvolutionarySearch(population_size=population),
                         policy_state)


@contextlib.contextmanager
def _ctrl_c_guard(database, checkpointer, progress, interrupted: list):
    """First Ctrl-C: stop once the batch being measured is saved. Second: stop now (the records of batches
    not yet joined by MetaSchedule are lost; the database stays consistent, and the lock goes with the
    process)."""
    def on_interrupt(signum, frame):
        interrupted.append(signum)
        if len(interrupted) == 1:
            progress.bar.write("stopping after the batch being measured is saved (Ctrl-C again: stop now)")
            return
        database.mark_interrupted()
        if checkpointer is not None:
            checkpointer.save()
        os._exit(130)
    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def _search(ms, contexts, weights, database, db, builder, runner, cost_model, options, spent, per_iter, policy_state,
            checkpointer, check, summary, preset) -> None:
    """MetaSchedule's search over the contexts, with progress, policy, checkpoints and the Ctrl-C guard."""
    interrupted = []
    progress = _make_progress_callback(options.trials, spent, check, interrupted, checkpointer, database)
    policy = [make_policy_callback(policy_state)] if policy_state is not None else []
    try:
        with _ctrl_c_guard(database, checkpointer, progress, interrupted):
            ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(database.path / "logs"),
                               max_trials_global=options.trials - spent, num_trials_per_iter=per_iter,
                               builder=builder, runner=runner, database=db, cost_model=cost_model,
                               measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), *policy,
                                                  progress],
                               task_scheduler="gradient")
    except Exception:
        if interrupted:  # the stop raised in the callback comes back from TVM as a RuntimeError
            database.mark_interrupted()
            raise KeyboardInterrupt from None
        if not progress.no_servers_left:
            raise
        raise _no_servers_left(preset, database) from None
    finally:
        progress.bar.close()
        if policy_state is not None:
            summary.stopped.update(policy_state.reasons())
        if checkpointer is not None:
            checkpointer.save()
    if checkpointer is not None and not interrupted:  # where the run ended: the curve's last point
        checkpointer.final(database.record_count(), progress.estimate_ms)
    summary.failures = dict(progress.failures)
    summary.steady_trials_per_minute = _steady_rate(progress.bar.n - spent, getattr(builder, "first_build_at", None))
    summary.estimated_ms = progress.estimate_ms


def _no_servers_left(preset, database) -> DeviceError:
    return DeviceError(f"no '{preset.rpc_key}' server is left on the tracker; {database.record_count()} records "
                       "are saved: start servers and run the same command again to resume")


def _servers_left(check, preset, database) -> None:
    """Raise the no-server error if the tracker has no server for the key left (None: measured locally)."""
    if check is not None and not check():
        raise _no_servers_left(preset, database)



def _steady_rate(trials: int, first_build_at: Optional[float]) -> Optional[float]:
    """Trials per minute from the first batch's build to the end: the farm's pace without its start-up (servers,
    task extraction, the builder's pool), which would be most of a short benchmark run. Measured from the builder,
    not from the measure callbacks: MetaSchedule reports a task's batch only when it picks the task again, so
    callbacks arrive in bursts."""
    if not trials or first_build_at is None or time.time() <= first_build_at:
        return None
    return trials / ((time.time() - first_build_at) / 60)


def _checkpointer(database, reached, device, options: TuneOptions, spent: int, records, build_checkpoint,
                  started: float):
    """End-to-end checkpoints on the tuning device: the host itself, or one session of the tracker's."""
    # Outside the database folder (libraries are large and not shipped), one folder per database.
    key = hashlib.sha256(str(database.path.resolve()).encode()).hexdigest()[:10]
    libraries = Path(options.checkpoint_libraries) if options.checkpoint_libraries else (
        paths.build_dir() / "checkpoints" / f"{database.path.name}-{key}")

    def measure(library):
        session = None if reached.tracker is None else reached.session(options.session_timeout)
        return Model(library, session=session).benchmark(repeat=options.checkpoint_runs)
    return Checkpointer(database.path, options.checkpoint_every, spent, lambda out: build_checkpoint(records, out),
                        measure, libraries, device, run_started=started)


def _finish(summary: TuneSummary, database, started: float) -> TuneSummary:
    """Close this run's provenance entry with the final trial count (also after a run with nothing to do)."""
    summary.trials_now = database.record_count()
    summary.seconds = time.time() - started
    database.close_run(summary.seconds / 60, summary.stopped)
    return summary


def _identity(preset, device: dict, model_sha256: str, fingerprint: dict, options: TuneOptions) -> dict:
    """What the database is: target, CPU, pipeline, model, first device, how candidates were measured."""
    import tvm

    return {
        "target_name": preset.name, "target": preset.target, "cpu": cpu_of(preset), "rpc_key": preset.rpc_key,
        "device": device, "tvm_version": tvm.__version__, "model_sha256": model_sha256,
        "fusion": fingerprint["fusion"], "pipeline": fingerprint, "budget": options.trials,
        "measurement_inputs": "float tensors uniform in [-1, 1) (compiler/tuning/measure_inputs.py)",
        "codegen": "exp, sigmoid and erf lowered to vectorised polynomials (compiler/passes/fast_math.py)",
        "note": (estimate_runner.label(preset) if options.no_board
                 else "measured under qemu emulation: NOT a real board's timings" if device.get("emulated")
                 else "measured on the device described here"),
        "measured_by": estimate_runner.MEASURED_BY if options.no_board else "device",
    }


def _run_entry(device: dict, options: TuneOptions, per_iter: int, population: int) -> dict:
    """One run's entry in provenance.json: the device and the search's settings."""
    return {"device": device, "budget": options.trials, "search_population": population, "trials_per_iter": per_iter,
            "budget_policy": (dataclasses.asdict(options.budget_policy) if options.budget_policy else None),
            "checkpoint_every": options.checkpoint_every, "judge_records": options.judge_records}
