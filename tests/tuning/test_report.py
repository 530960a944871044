"""report.md's per-task convergence: the trials a task took to come within 5% of its own best."""
from compiler.tuning.report import converged_at


def test_a_task_converges_at_its_first_schedule_within_5_percent_of_its_best():
    assert converged_at([3.0, 2.0, 1.04, 1.5, 1.0]) == 3  # 1.04 is within 5% of the best, 1.0
    assert converged_at([1.0, 2.0, 3.0]) == 1
    assert converged_at([9.0, 8.0, 7.0, 1.0]) == 4  # still improving at its last trial


def test_a_task_without_a_valid_measurement_has_no_convergence_point():
    assert converged_at([]) is None
    assert converged_at([float("inf"), float("inf")]) is None
    assert converged_at([float("inf"), 2.0, 1.0]) == 3
