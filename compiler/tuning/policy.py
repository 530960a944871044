"""Where the trial budget goes: MetaSchedule's gradient task scheduler, plus stops for tasks that cannot pay.

The gradient scheduler already ranks tasks by weight x (recent slope, and best / trials), but it never
lets a task go: a task whose curve is flat keeps a share through its best / trials term, and a kernel
with no schedule space (an elementwise epilogue the CPU rules only parallelise) keeps being picked for
candidates that are all the same schedule. This policy stops such tasks so their trials go to the tasks
still improving; it does not replace the scheduler.

How a task is stopped matters. Calling the scheduler's `terminate_task` from a measure callback breaks
TVM 0.27's loop: the callback runs inside `JoinRunningTask`, which the scheduler also calls just before
returning the task it picked (then `Tune` checks the task is alive) and at the end of the run (then it
terminates the task a second time); both fail `Check failed: !task->is_terminated`. So the callback only
marks the task, and the task's search strategy (`StoppableSearch`, wrapping the evolutionary search)
answers "no more candidates" the next time the task is picked: the scheduler then terminates the task
itself, on its own path, and spends no trial on it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

NO_SPACE = ("no schedule space: the CPU schedule rules leave this kernel nothing to sample (no tiling, no "
            "unroll or vectorize choice), so every candidate is the same schedule")


@dataclass(frozen=True)
class BudgetPolicy:
    """Judged in trials, not batches: with a small budget a batch is 2 or 3 candidates, and an evolutionary
    search often goes a dozen candidates without a better one before it finds the next step (a first
    version judged 4 batches and stopped the kernel with the largest share after 18 trials)."""

    window: int = 32  # trials of one task looked back over
    min_gain: float = 0.01  # relative improvement of the best over the window below which a task is flat
    min_trials: int = 64  # never judge a task on fewer trials than this


def flat_reason(history: List[tuple], policy: BudgetPolicy) -> Optional[str]:
    """Why a task should stop, or None. `history`: (trials of the task so far, best latency in seconds)
    after each of its batches, oldest first."""
    if not history or history[-1][0] < max(policy.min_trials, policy.window):
        return None
    trials, now = history[-1]
    earlier = [best for count, best in history if count <= trials - policy.window]
    if not earlier or earlier[-1] <= 0 or earlier[-1] == float("inf"):
        return None
    gain = (earlier[-1] - now) / earlier[-1]
    if gain < policy.min_gain:
        return (f"flat: best improved {100 * gain:.2f}% over its last {policy.window} trials "
                f"(< {100 * policy.min_gain:g}%)")
    return None


def has_schedule_space(traces) -> bool:
    """True if any candidate's trace samples a decision (a tile size, an unroll depth, a compute location)."""
    return any(inst.kind.name.startswith("Sample") for trace in traces for inst in trace.insts)


class PolicyState:
    """What the policy decided, shared by its measure callback (which decides) and the tasks' search
    strategies (which act on it): task index -> (task name, reason)."""

    def __init__(self, policy: BudgetPolicy, earlier: Optional[Dict[str, str]] = None):
        self.policy = policy
        self.history: Dict[int, List[tuple]] = {}  # task -> [(trials so far, best seconds)] per batch
        self.stopped: Dict[int, tuple] = {}
        # Tasks an earlier run of the same database stopped (name -> reason): a resumed run gives them no context,
        # so raising the budget does not re-spend a warm-up batch on each of them.
        self.earlier: Dict[str, str] = dict(earlier or {})

    def observe(self, task_id: int, task_name: str, times: List[float], traces, candidates: int = 0) -> Optional[str]:
        """Record one batch of a task (its successful mean run times, its candidates' traces, how many
        candidates it measured: failed ones count as trials too); return why the task should stop, or None."""
        if task_id in self.stopped:
            return None
        history = self.history.setdefault(task_id, [])
        if times:
            spent = (history[-1][0] if history else 0) + max(candidates, len(times))
            history.append((spent, min([*times, *(h[1] for h in history[-1:])])))
        reason = None
        if len(history) == 1 and not has_schedule_space(traces):
            reason = NO_SPACE
        elif history:
            reason = flat_reason(history, self.policy)
        if reason is not None:
            self.stopped[task_id] = (task_name, reason)
        return reason

    def reasons(self) -> Dict[str, str]:
        """Stopped task name -> reason (earlier runs' stops included), for the summary and the report."""
        return {**self.earlier, **{name: reason for name, reason in self.stopped.values()}}


def earlier_stops(provenance: dict) -> Dict[str, str]:
    """Every task the policy stopped in the database's earlier runs (provenance runs' `stopped_tasks`)."""
    stops: Dict[str, str] = {}
    for run in provenance.get("runs") or []:
        stops.update(run.get("stopped_tasks") or {})
    return stops


def make_policy_callback(state: PolicyState):
    """A measure callback that feeds every measured batch to `state`; it never terminates a task itself."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class StopWhatCannotPay(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            times = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in runner_results
                     if r.error_msg is None and r.run_secs]
            name = str(task_scheduler.tasks_[task_id].ctx.task_name)
            state.observe(task_id, name, times, [c.sch.trace for c in measure_candidates], len(runner_results))

    return StopWhatCannotPay()


def stoppable_search(inner, task_id: int, state: PolicyState):
    """`inner` (a MetaSchedule search strategy) for task `task_id`, answering "no candidates" once `state`
    has stopped that task."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class StoppableSearch(ms.search_strategy.PySearchStrategy):
        def _initialize_with_tune_context(self, context) -> None:
            inner._initialize_with_tune_context(context)

        def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None):
            inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)

        def post_tuning(self) -> None:
            inner.post_tuning()

        def generate_measure_candidates(self):
            if task_id in state.stopped:
                return None
            return inner.generate_measure_candidates()

        def notify_runner_results(self, measure_candidates, results) -> None:
            inner.notify_runner_results(measure_candidates, results)

        def clone(self):
            return stoppable_search(inner.clone(), task_id, state)

    return StoppableSearch()


def drop_unnamed_handlers(logger) -> None:
    """TVM's `get_loggers_from_work_dir` rebuilds its logger with `logging.config.dictConfig`, listing the
    names of the handlers already on it, and fails on one without a name (as pytest's log-capture handlers
    left there by an earlier in-process tuning). dictConfig replaces the logger's handlers anyway; drop those
    first."""
    for handler in [h for h in logger.handlers if h.get_name() is None]:
        logger.removeHandler(handler)


def tune_contexts(tasks, work_dir: str, make_strategy, state: PolicyState):
    """One TuneContext per extracted task (as MetaSchedule's `extracted_tasks_to_tune_contexts` makes them,
    skipping a task already scheduled, and a task an earlier run stopped), each with its own `make_strategy()`
    wrapped in `stoppable_search`; returns (contexts, weights)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
    from tvm.s_tir.meta_schedule.utils import fork_seed

    from schedules import intrinsics, tensorized_loops

    intrinsics.register()  # the strict byte dot products (schedules/intrinsics.py), before the spaces name them
    contexts, weights = [], []
    drop_unnamed_handlers(logging.getLogger("tvm.s_tir.meta_schedule"))
    loggers = get_loggers_from_work_dir(work_dir, [t.task_name for t in tasks])
    for task, logger, rand_state in zip(tasks, loggers, fork_seed(None, n=len(tasks))):
        if task.mod.attrs.get("tirx.is_scheduled", False) or task.task_name in state.earlier:
            continue
        contexts.append(ms.TuneContext(
            mod=task.dispatched[0], target=task.target,
            space_generator=tensorized_loops.space_generator(task.dispatched[0], task.target),
            search_strategy=stoppable_search(make_strategy(), len(contexts), state), task_name=task.task_name,
            logger=logger, rand_state=rand_state, num_threads="physical"))
        weights.append(task.weight)
    return contexts, weights
