"""Where the trial budget goes: MetaSchedule's gradient task scheduler, plus stops for tasks that cannot pay.

The gradient scheduler already ranks tasks by weight x (recent slope, and best / trials), but it never
lets a task go: a task whose curve is flat keeps a share through its best / trials term, and a kernel
with no schedule space (an elementwise epilogue the CPU rules only parallelise) keeps being picked for
candidates that are all the same schedule. This policy terminates such tasks through the scheduler's
own `terminate_task`, so their trials go to the tasks still improving; it does not replace the scheduler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

NO_SPACE = ("no schedule space: the CPU schedule rules leave this kernel nothing to sample (no tiling, no "
            "unroll or vectorize choice), so every candidate is the same schedule")


@dataclass(frozen=True)
class BudgetPolicy:
    window: int = 4  # batches of one task looked back over
    min_gain: float = 0.01  # relative improvement of the best over the window below which a task is flat
    min_batches: int = 6  # never judge a task on fewer batches than this


def flat_reason(history: List[float], policy: BudgetPolicy) -> Optional[str]:
    """Why a task with this per-batch best-latency history (seconds, oldest first) should stop, or None."""
    if len(history) < max(policy.min_batches, policy.window + 1):
        return None
    before, now = history[-1 - policy.window], history[-1]
    if before <= 0 or before == float("inf"):
        return None
    gain = (before - now) / before
    if gain < policy.min_gain:
        return (f"flat: best improved {100 * gain:.2f}% over its last {policy.window} batches "
                f"(< {100 * policy.min_gain:g}%)")
    return None


def has_schedule_space(traces) -> bool:
    """True if any candidate's trace samples a decision (a tile size, an unroll depth, a compute location)."""
    return any(inst.kind.name.startswith("Sample") for trace in traces for inst in trace.insts)


def make_policy_callback(policy: BudgetPolicy, stopped: Dict[str, str]):
    """A measure callback applying `policy`; `stopped` collects task name -> reason, for the report."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class StopWhatCannotPay(ms.measure_callback.PyMeasureCallback):
        def __init__(self):
            super().__init__()
            self.history: Dict[int, List[float]] = {}

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            times = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in runner_results
                     if r.error_msg is None and r.run_secs]
            history = self.history.setdefault(task_id, [])
            if times:
                history.append(min([*times, *history[-1:]]))
            reason = None
            if len(history) == 1 and not has_schedule_space(c.sch.trace for c in measure_candidates):
                reason = NO_SPACE
            elif history:
                reason = flat_reason(history, policy)
            task = task_scheduler.tasks_[task_id]
            if reason is not None and not task.is_terminated:  # the scheduler may have ended it already
                stopped[str(task.ctx.task_name)] = reason
                task_scheduler.terminate_task(task_id)

    return StopWhatCannotPay()
