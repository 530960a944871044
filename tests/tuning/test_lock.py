"""One database, one writer: the write lock refuses or waits, dies with its process, and leaves readers alone;
provenance is written by the database itself, one entry per run."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from compiler.errors import UserError
from compiler.tuning import database as tuning_db, lock
from conftest import ROOT
from test_tune import CLEAN_ENV, NO_JUDGING, records, tune_cmd

HOLD = textwrap.dedent("""
    import sys, time
    from compiler.tuning import lock
    with lock.exclusive(sys.argv[1], command="holder command"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def hold(folder, seconds):
    """A process that holds the lock of `folder` for `seconds`, once it says so."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE,
                               text=True, cwd=ROOT)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    holder = hold(tmp_path, 60)
    try:
        with pytest.raises(UserError, match=rf"being written by pid {holder.pid} on .* \(`holder command`\).*"
                                             "--wait-for-database"):
            with lock.exclusive(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_kill_9_releases_the_lock(tmp_path):
    holder = hold(tmp_path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with lock.exclusive(tmp_path, command="next"):  # no stale lock to clean up
        assert lock.holder(tmp_path)["pid"] == os.getpid()


def test_a_waiting_writer_gets_the_lock_when_it_is_released(tmp_path, capsys):
    holder = hold(tmp_path, 2)
    started = time.time()
    with lock.exclusive(tmp_path, wait=True):
        waited = time.time() - started
    holder.wait()
    assert waited > 1
    assert f"waiting for pid {holder.pid}" in capsys.readouterr().err


def test_a_reader_touches_nothing_while_a_writer_holds_the_lock(tmp_path):
    """A half-written last line is the writer's, not a crash's: a build reading meanwhile must not 'repair' it."""
    (tmp_path / tuning_db.WORKLOADS).write_text("")
    (tmp_path / tuning_db.RECORDS).write_text('[0, [[], [0.001')  # being appended right now
    holder = hold(tmp_path, 60)
    try:
        tuning_db.TuningDatabase(tmp_path).load()
        assert (tmp_path / tuning_db.RECORDS).read_text() == '[0, [[], [0.001'
    finally:
        holder.kill()
        holder.wait()
    tuning_db.TuningDatabase(tmp_path).load()  # nobody writes now: a cut line is a crash's, and is dropped
    assert (tmp_path / tuning_db.RECORDS).read_text() == ""


def test_a_folder_that_cannot_hold_a_lock_file_is_read_without_writing(tmp_path):
    """A database folder the user cannot write (an installed package): the reader takes the snapshot path."""
    (tmp_path / "not-a-folder").write_text("")
    with lock.unless_held(tmp_path / "not-a-folder" / "db") as free:
        assert free is False


def test_provenance_keeps_one_entry_per_run(tmp_path):
    database = tuning_db.TuningDatabase(tmp_path)
    identity = {"target_name": "host", "cpu": "x", "device": {"cpu_model": "first"}}
    database.open_run(identity, {"budget": 8})
    database.open_run(dict(identity, device={"cpu_model": "second"}), {"budget": 16})  # the first never closed
    database.record_seed({"tasks_seeded": 2})
    database.close_run(1.25, {"t0": "flat"})
    provenance = database.provenance
    assert [run["budget"] for run in provenance["runs"]] == [8, 16]
    assert provenance["runs"][0]["ended"] == "interrupted" and provenance["runs"][1]["ended"] != "interrupted"
    assert provenance["runs"][1]["seed"] == {"tasks_seeded": 2} and provenance["runs"][1]["minutes"] == 1.2
    assert provenance["device"] == {"cpu_model": "first"}  # the database's first device stays its identity
    database.mark_interrupted()  # nothing open: nothing changes
    assert database.provenance == provenance


@pytest.mark.slow
def test_two_tuning_runs_on_one_database(tiny_cnn_onnx, tmp_path):
    """The second run refuses at once; one that waits runs after the first and resumes from its records; the
    database holds each workload once and provenance one true entry per run that tuned."""
    database = tmp_path / "db"
    first = subprocess.Popen(tune_cmd(tiny_cnn_onnx, "host", database, 12, *NO_JUDGING), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=CLEAN_ENV)
    deadline = time.time() + 120
    while lock.holder(database).get("pid") != first.pid and time.time() < deadline:
        time.sleep(0.2)
    refused = subprocess.run(tune_cmd(tiny_cnn_onnx, "host", database, 12, *NO_JUDGING), capture_output=True, text=True,
                             env=CLEAN_ENV, timeout=120)
    assert first.poll() is None, "the first run ended before the second started"
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip().splitlines()[-1]]
    assert f"is being written by pid {first.pid}" in refused.stderr and "Traceback" not in refused.stderr
    waited = subprocess.run(tune_cmd(tiny_cnn_onnx, "host", database, 20, "--wait-for-database", *NO_JUDGING),
                            capture_output=True, text=True, env=CLEAN_ENV, timeout=900)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    assert waited.returncode == 0, waited.stderr[-2000:]
    assert "waiting for pid" in waited.stderr
    workloads = (database / tuning_db.WORKLOADS).read_text().splitlines()
    assert len(workloads) == len(set(workloads)) > 0  # each of tiny_cnn's kernels registered once
    assert {json.loads(line)[0] for line in records(database)} <= set(range(len(workloads)))
    runs = json.loads((database / tuning_db.PROVENANCE).read_text())["runs"]
    assert len(runs) == 2 and all(run["ended"] != "interrupted" for run in runs)
    assert runs[0]["trials_before"] == 0 and runs[1]["trials_before"] == runs[0]["trials_after"] >= 12
    assert runs[1]["trials_after"] == len(records(database)) >= 20


def test_checking_a_database_nobody_has_made_creates_nothing(tmp_path):
    folder = tmp_path / "host" / "cpu" / "model-prepack"
    lock.refuse_if_held(folder)
    assert not (tmp_path / "host").exists()
