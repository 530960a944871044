"""End-to-end checkpoints: when they are due, what the log keeps, and how a resumed run continues it."""
import json

from compiler.tuning.checkpoint import CHECKPOINTS, Checkpointer, next_due, read_log


def fake(built: list):
    """A build that records what it was asked for and a measurement that returns a known latency per trials."""
    def build(out_dir):
        built.append(out_dir.name)
        return out_dir / "model.so"

    def measure(library):
        trials = int(library.parent.name)
        return {"median_ms": 100.0 / (1 + trials), "p90_ms": 110.0 / (1 + trials), "runs": 5}
    return build, measure


def test_next_due_is_the_next_multiple():
    assert [next_due(t, 10) for t in (0, 9, 10, 11)] == [10, 10, 20, 20]


def test_checkpoints_are_taken_when_due_and_logged(tmp_path):
    built = []
    build, measure = fake(built)
    checkpointer = Checkpointer(tmp_path, 4, 0, build, measure, tmp_path / "libs", {"cpu_model": "test"})
    for trials in (0, 2, 3, 5, 6, 9):
        checkpointer.maybe(trials, estimated_ms=1.0, say=lambda message: None)
    assert built == ["00000", "00005", "00009"]  # the start, then the first batch past 4 and past 8
    log = json.loads((tmp_path / CHECKPOINTS).read_text())
    assert [c["trials"] for c in log["checkpoints"]] == [0, 5, 9]
    assert [c["latency_ms"] for c in log["checkpoints"]] == [100.0, round(100 / 6, 4), 10.0]
    assert log["every"] == 4 and log["device"] == {"cpu_model": "test"}


def test_a_resumed_run_continues_the_log_and_the_clock(tmp_path):
    built = []
    build, measure = fake(built)
    first = Checkpointer(tmp_path, 4, 0, build, measure, tmp_path / "libs", {})
    first.maybe(0, say=lambda message: None)
    first.run_started -= 120  # two minutes of tuning, then the run is killed: its last save was the checkpoint
    first.maybe(4, say=lambda message: None)
    minutes_at_kill = read_log(tmp_path)["checkpoints"][-1]["minutes"]
    assert 1.9 < minutes_at_kill < 2.1
    second = Checkpointer(tmp_path, 4, 6, build, measure, tmp_path / "libs", {})  # resumed with 6 records
    second.maybe(6, say=lambda message: None)  # a start point the log does not have yet
    second.maybe(7, say=lambda message: None)  # not due
    second.maybe(8, say=lambda message: None)
    log = read_log(tmp_path)
    assert [c["trials"] for c in log["checkpoints"]] == [0, 4, 6, 8]
    minutes = [c["minutes"] for c in log["checkpoints"]]
    assert minutes == sorted(minutes) and minutes[2] >= minutes_at_kill  # the clock goes on from the log


def test_a_start_point_already_logged_is_not_taken_again(tmp_path):
    built = []
    build, measure = fake(built)
    Checkpointer(tmp_path, 4, 0, build, measure, tmp_path / "libs", {}).maybe(0, say=lambda message: None)
    again = Checkpointer(tmp_path, 4, 0, build, measure, tmp_path / "libs", {})
    again.maybe(0, say=lambda message: None)
    assert built == ["00000"] and again.due == 4


def test_final_point_is_taken_once(tmp_path):
    built = []
    build, measure = fake(built)
    checkpointer = Checkpointer(tmp_path, 4, 0, build, measure, tmp_path / "libs", {})
    checkpointer.maybe(0, say=lambda message: None)
    checkpointer.maybe(5, say=lambda message: None)
    assert checkpointer.final(5) is None and checkpointer.final(7)["trials"] == 7
    assert built == ["00000", "00005", "00007"]


def test_minutes_count_from_the_runs_start(tmp_path):
    """Seeding and task extraction happen before the first checkpoint: they are tuning time too."""
    import time

    build, measure = fake([])
    started = time.time() - 90  # the run began 90 s before its first checkpoint (a seed being measured)
    entry = Checkpointer(tmp_path, 4, 101, build, measure, tmp_path / "libs", {}, run_started=started).maybe(
        101, say=lambda message: None)
    assert 1.4 < entry["minutes"] < 1.6


def test_a_library_inside_the_project_is_logged_relative_to_it():
    """The log ships beside a database: it must not name one machine's folders."""
    from compiler.paths import PROJECT_ROOT as ROOT
    from compiler.tuning.checkpoint import library_path, shown

    assert shown(ROOT / "build" / "checkpoints" / "x.so") == "build/checkpoints/x.so"
    assert library_path({"library": "build/checkpoints/x.so"}) == ROOT / "build" / "checkpoints" / "x.so"


def test_a_run_whose_seeds_spend_the_budget_still_has_its_end_point(tiny_cnn_onnx, tmp_path):
    """Two trials, both spent replaying the default schedules of two tasks: the run ends before any search,
    and its checkpoint log still has the point it ended at (a curve of what the budget bought)."""
    import subprocess

    from test_tune import CLEAN_ENV, NO_JUDGING, records, tune_cmd

    database = tmp_path / "db"
    result = subprocess.run(tune_cmd(tiny_cnn_onnx, "host", database, 2, "--checkpoint-every", "1", *NO_JUDGING),
                            capture_output=True, text=True, env=CLEAN_ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(records(database)) == 2
    checkpoints = read_log(database)["checkpoints"]
    assert [c["trials"] for c in checkpoints] == [2] and checkpoints[0]["latency_ms"] > 0
    # --judge-records off: no verdicts were taken, at the checkpoint or the end, and the run says it was asked so
    from compiler.tuning import guard

    assert not (database / guard.CHOICES).exists()
    assert json.loads((database / "provenance.json").read_text())["runs"][-1]["judge_records"] is False
