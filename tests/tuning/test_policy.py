"""The budget policy: which tasks it stops, on toy histories and on a toy module's real design spaces.

The design-space tests are `slow`: MetaSchedule's first TuneContext in a process costs 25 s or more of
start-up (its schedule rules load the tensor intrinsics), which the fast tier leaves out.
"""
import functools
import logging

import pytest

from compiler.tuning.policy import BudgetPolicy, flat_reason, has_schedule_space

POLICY = BudgetPolicy(window=12, min_gain=0.01, min_trials=18)


def batches(*bests, size=3):
    """A task's history as the policy sees it: (trials so far, best) after each batch of `size`."""
    return [(size * (i + 1), best) for i, best in enumerate(bests)]


def test_a_flat_curve_is_stopped_and_an_improving_one_is_not():
    flat = batches(10.0, 8.0, 7.0, 6.0, 6.0, 5.99, 5.99, 5.98)  # 0.3% over the last 12 trials (4 batches)
    assert "flat" in flat_reason(flat, POLICY)
    improving = batches(10.0, 8.0, 7.0, 6.0, 5.8, 5.6, 5.5, 5.4)  # 10% over the last 12 trials
    assert flat_reason(improving, POLICY) is None


def test_a_young_task_is_never_judged():
    assert flat_reason(batches(*[5.0] * 5), POLICY) is None  # 15 trials, nothing gained, but under min_trials
    assert "flat" in flat_reason(batches(*[5.0] * 6), POLICY)


def test_the_window_is_in_trials_whatever_the_batch_size():
    history = batches(10.0, 10.0, 10.0, 10.0, 9.8, 9.8, 9.75, 9.72, 9.7)  # 1.0% over 12 trials, 3.0% over 21
    assert "flat" in flat_reason(history, BudgetPolicy(window=12, min_gain=0.02, min_trials=18))
    assert flat_reason(history, BudgetPolicy(window=21, min_gain=0.02, min_trials=18)) is None
    # The same curve in batches of 2: 12 trials are 6 batches, over which the best gained 3.0%.
    assert flat_reason(batches(10.0, 10.0, 10.0, 10.0, 9.8, 9.8, 9.75, 9.72, 9.7, size=2),
                       BudgetPolicy(window=12, min_gain=0.02, min_trials=18)) is None


def test_the_default_policy_gives_the_largest_kernel_time_to_improve():
    """A rule judged in batches would stop the kernel with the largest share after 6 batches of 3 (18 trials)."""
    stalled = batches(4.1, 4.1, 4.1, 4.1, 4.1, 4.1)  # 18 trials without a better schedule
    assert flat_reason(stalled, BudgetPolicy()) is None


@functools.lru_cache(maxsize=None)
def _traces(kind):
    return _design_space_traces(_toy(kind))


def _design_space_traces(prim_func):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    context = ms.TuneContext(mod=tvm.IRModule({"main": prim_func}), target=target,
                             space_generator="post-order-apply", search_strategy="evolutionary")
    return [schedule.trace for schedule in context.generate_design_space()]


def _toy(kind):
    from tvm import te

    a = te.placeholder((64, 64), name="a")
    if kind == "matmul":
        b = te.placeholder((64, 64), name="b")
        k = te.reduce_axis((0, 64), name="k")
        c = te.compute((64, 64), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
        return te.create_prim_func([a, b, c])
    c = te.compute((64, 64), lambda i, j: a[i, j] + 1.0, name="c")
    return te.create_prim_func([a, c])


@pytest.mark.slow
def test_a_matmul_has_a_schedule_space_and_an_elementwise_add_has_none():
    assert has_schedule_space(_traces("matmul"))
    assert not has_schedule_space(_traces("add"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["matmul", "add"])
def test_design_spaces_exist_for_both(kind):
    assert _traces(kind)  # the space test above compares real spaces, not empty lists


@pytest.mark.slow
def test_policy_state_stops_a_flat_task_once_and_says_why():
    from compiler.tuning.policy import PolicyState

    state = PolicyState(POLICY)
    space = _traces("matmul")
    for batch, best in enumerate([10.0, 6.0, 6.0, 6.0, 6.0, 5.99]):  # 0.17% over the last 12 trials
        reason = state.observe(3, "fused_matmul", [best, best + 1.0], space, candidates=3)
        assert (reason is None) == (batch < 5)
    assert state.stopped == {3: ("fused_matmul", reason)} and "flat" in reason
    assert state.observe(3, "fused_matmul", [1.0], space) is None  # decided once, never again
    assert state.reasons() == {"fused_matmul": reason}


@pytest.mark.slow
def test_policy_state_stops_a_kernel_without_schedule_space_after_its_first_batch():
    from compiler.tuning.policy import NO_SPACE, PolicyState

    state = PolicyState(POLICY)
    assert state.observe(0, "add", [1e-5], _traces("add")) == NO_SPACE
    assert state.observe(1, "matmul", [1e-5], _traces("matmul")) is None


@pytest.mark.slow
def test_a_stopped_task_gets_no_more_candidates_and_the_scheduler_ends_it_itself():
    """The stop reaches MetaSchedule through the task's search strategy (it answers None), never through a
    terminate_task call from a callback, which TVM 0.27's scheduler does not survive."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from compiler.tuning.policy import PolicyState, stoppable_search

    state = PolicyState(POLICY)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    context = ms.TuneContext(mod=tvm.IRModule({"main": _toy("matmul")}), target=target,
                             space_generator="post-order-apply",
                             search_strategy=stoppable_search(ms.search_strategy.EvolutionarySearch(
                                 population_size=64), 0, state))
    strategy = context.search_strategy
    strategy.pre_tuning(16, 2, context.generate_design_space(), ms.database.MemoryDatabase(),
                        ms.cost_model.RandomModel())
    assert len(strategy.generate_measure_candidates()) == 2
    state.stopped[0] = ("main", "test")
    assert strategy.generate_measure_candidates() is None
    strategy.post_tuning()


def test_earlier_stops_are_collected_from_every_run_of_the_database():
    from compiler.tuning.policy import NO_SPACE, earlier_stops

    provenance = {"runs": [{"stopped_tasks": {"add": NO_SPACE}}, {"budget": 800}, {"stopped_tasks": {"mm": "flat"}}]}
    assert earlier_stops(provenance) == {"add": NO_SPACE, "mm": "flat"}
    assert earlier_stops({}) == {}


@pytest.mark.slow
def test_a_resumed_run_gives_no_context_to_a_task_an_earlier_run_stopped(tmp_path):
    """Raising the budget of a database resumes it; the tasks its earlier runs stopped stay stopped (no warm-up
    batch each), and the run's summary still names them with their reasons."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from compiler.tuning.policy import NO_SPACE, PolicyState, tune_contexts

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    tasks = [ms.ExtractedTask(name, tvm.IRModule({"main": _toy(name)}), target,
                              [tvm.IRModule({"main": _toy(name)})], weight)
             for name, weight in (("add", 1), ("matmul", 2))]
    # An unnamed handler on MetaSchedule's logger (pytest's log capture leaves some after an in-process tuning)
    # once broke TVM's logger set-up inside tune_contexts.
    logging.getLogger("tvm.s_tir.meta_schedule").addHandler(logging.NullHandler())
    state = PolicyState(POLICY, earlier={"add": NO_SPACE})
    contexts, weights = tune_contexts(tasks, str(tmp_path), ms.search_strategy.EvolutionarySearch, state)
    assert [str(c.task_name) for c in contexts] == ["matmul"] and weights == [2]
    assert state.reasons() == {"add": NO_SPACE}
    fresh = PolicyState(POLICY)
    assert [str(c.task_name) for c in tune_contexts(tasks, str(tmp_path), ms.search_strategy.EvolutionarySearch,
                                                   fresh)[0]] == ["add", "matmul"]
