"""Tuning farm: MetaSchedule through a TVM tracker with emulated servers; resume, faults, provenance, report.

Budgets are tiny (a handful of trials of a 6-task CNN); what is checked is behaviour, not speed.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from compiler.device import farm
from compiler.tuning import database as tuning_db, guard
from compiler.tuning.tune import failure_kind, trials_per_iter
from conftest import ROOT

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
TINY_CNN_TASKS = 6  # tuning tasks of tests/onnx_models.py's tiny_cnn


NO_JUDGING = ("--judge-records", "off")  # for tests not about the guard: it builds and times the model twice a run


def tune_cmd(onnx, target, database, trials, *extra):
    return [sys.executable, str(ROOT / "compile.py"), "--model", str(onnx), "--target", target, "--tune",
            "--trials", str(trials), "--database", str(database), "--out", str(database) + "-out", *extra]


def records(database) -> list:
    path = database / tuning_db.RECORDS
    return path.read_text().splitlines() if path.exists() else []


def test_trials_per_iter_keeps_small_budgets_small():
    assert trials_per_iter(8, 4) == 2 and trials_per_iter(2000, 58) == 17 and trials_per_iter(10 ** 6, 3) == 64


def test_a_batch_keeps_every_measuring_server_busy():
    assert trials_per_iter(8, 4, servers=4) == 4 and trials_per_iter(2000, 58, servers=4) == 17


def test_search_population_follows_the_batch():
    from compiler.tuning.tune import default_population

    assert [default_population(n) for n in (2, 3, 17, 64)] == [64, 64, 136, 512]


@pytest.mark.parametrize("message, kind", [
    ("RPCRunner: Timeout, killed after 150 seconds", "timeout (device hung or too slow)"),
    ("RPCRunner: An exception occurred ... RPCEndpoint::Init", "device lost mid-measurement"),
    ("build failed: boom", "candidate failed to build"),
])
def test_failure_kinds(message, kind):
    assert failure_kind(message) == kind


def test_truncated_last_line_is_dropped_and_complete_records_kept(tmp_path):
    database = tuning_db.TuningDatabase(tmp_path)
    whole = [json.dumps([0, [[], [0.001 * i], {"kind": "llvm"}, []]]) for i in range(1, 4)]
    (tmp_path / tuning_db.WORKLOADS).write_text('["1", "AAAA"]\n')
    (tmp_path / tuning_db.RECORDS).write_text("\n".join(whole) + "\n" + whole[0][: len(whole[0]) // 2])
    assert database.record_count() == 3
    assert database.repair() == 1
    assert (tmp_path / tuning_db.RECORDS).read_text() == "\n".join(whole) + "\n"
    assert database.repair() == 0


@pytest.mark.slow
def test_host_tuning_resumes_after_a_kill(tiny_cnn_onnx, tmp_path):
    """Kill -9 mid-run, run the same command: finished records are kept and count against --trials."""
    database = tmp_path / "db"
    budget = 16  # two checkpoint spans: the kill lands in the first or second, the resumed run ends the second
    cmd = tune_cmd(tiny_cnn_onnx, "host", database, budget, "--checkpoint-every", "8")
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               env=CLEAN_ENV)
    deadline = time.time() + 400
    while len(records(database)) < 4 and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert process.poll() is None, "the run ended before the kill"
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # the kill, not an exit of its own, ended it
    before = records(database)
    assert 4 <= len(before) < budget, "the kill should land mid-run"
    # A crash can also cut a line in half: simulate it on top of the kill.
    with open(database / tuning_db.RECORDS, "a") as handle:
        handle.write(before[-1][:50])
    result = subprocess.run(cmd, capture_output=True, text=True, env=CLEAN_ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    after = records(database)
    assert after[: len(before)] == before  # nothing finished was lost
    assert budget <= len(after) < budget + trials_per_iter(budget - len(before), 4)
    assert "dropped 1 incomplete line" in result.stderr
    assert f"tuned {len(after) - len(before)} trials this run ({len(after)} of {budget} in the database" in result.stderr
    # Each record was judged against its default schedule in the model; the losers keep the default schedule
    choices = json.loads((database / guard.CHOICES).read_text())
    assert choices["trials"] == len(after) and len(choices["kernels"]) == TINY_CNN_TASKS - 1  # (one is a reshape)
    lost = {name for name, verdict in choices["kernels"].items() if verdict["choice"] == "default"}
    sidecar = json.loads((tmp_path / "db-out" / "tiny_cnn.json").read_text())["tuning"]
    assert set(sidecar["default_over_record"]) == lost
    assert sidecar["kernels_tuned"] + len(lost) == sidecar["kernels_total"] > 0
    assert f"{len(choices['kernels']) - len(lost)} of {len(choices['kernels'])} records kept" in result.stderr
    runs = json.loads((database / "provenance.json").read_text())["runs"]  # one entry per run, none overwritten
    assert [run["ended"] == "interrupted" for run in runs] == [True, False]
    assert runs[0]["trials_before"] == 0 and runs[1]["trials_before"] == len(before)
    assert runs[1]["trials_after"] == len(after) and runs[1]["device"]["llvm_cpu"]
    # End-to-end checkpoints: the kill kept those taken, the resumed run went on from them to its end.
    checkpoints = json.loads((database / "checkpoints.json").read_text())["checkpoints"]
    trials = [c["trials"] for c in checkpoints]
    # the first point is where a run started its search: after the default schedules' seed (one per task)
    assert trials[0] <= TINY_CNN_TASKS and trials == sorted(trials) and trials[-1] == len(after)
    assert any(t > len(before) for t in trials) and all(c["latency_ms"] > 0 for c in checkpoints)
    minutes = [c["minutes"] for c in checkpoints]
    assert minutes == sorted(minutes)
    # The first point has no estimate yet (a few trials of tiny_cnn need not beat the default schedules).
    assert checkpoints[0]["estimated_ms"] is None and checkpoints[-1]["estimated_ms"] > 0
    assert "End-to-end checkpoints" in (database / "report.md").read_text()
    # Budget already spent: a third run measures nothing, and builds with the verdicts as they stand (here: every
    # record lost), giving each loser its default schedule and saying so; a database whose records all lost still
    # builds (its records did run).
    for verdict in choices["kernels"].values():
        verdict.update(choice="default", why="set by the test")
    (database / guard.CHOICES).write_text(json.dumps(choices))
    again = subprocess.run(cmd, capture_output=True, text=True, env=CLEAN_ENV, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to do" in again.stderr and len(records(database)) == len(after)
    judged = len(choices["kernels"])
    assert f"{judged} keep their default schedule, cheaper in the model than their record" in again.stderr
    tuning = json.loads((tmp_path / "db-out" / "tiny_cnn.json").read_text())["tuning"]
    assert tuning["default_over_record"] == {name: "set by the test" for name in choices["kernels"]}
    assert tuning["kernels_default"] >= judged


@pytest.mark.slow
@pytest.mark.emulated
def test_tuning_through_a_tracker_with_two_emulated_servers(tiny_cnn_onnx, tmp_path):
    database = tmp_path / "db"
    with farm.LocalFarm(key="rpi4", servers=2) as local:
        result = subprocess.run(tune_cmd(tiny_cnn_onnx, "rpi4", database, 8, "--tracker", local.tracker,
                                         "--allow-emulated-logs", "--verify"),
                                capture_output=True, text=True, env=CLEAN_ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(records(database)) >= 8
    provenance = json.loads((database / "provenance.json").read_text())
    assert provenance["target_name"] == "rpi4" and provenance["trials"] == len(records(database))
    # the board's search starts from the default schedules, each measured on the (emulated) board first
    seed = provenance["runs"][-1]["seed"]
    assert seed["source"] == "default schedules" and seed["tasks_seeded"] == seed["tasks"] == seed["measured"] > 0
    assert provenance["device"]["machine"] == "aarch64" and provenance["device"]["emulated"] is True
    assert "emulation" in provenance["note"] and provenance["model_sha256"]
    report = (database / "report.md").read_text()
    assert "measured under qemu emulation" in report and "| fused_conv2d" in report
    assert (database / "report.png").read_bytes()[:4] == b"\x89PNG"
    sidecar = json.loads((tmp_path / "db-out" / "tiny_cnn.json").read_text())
    assert sidecar["tuning"]["emulated"] is True and sidecar["tuning"]["kernels_tuned"] > 0
    assert "relative error" in result.stdout and " ok" in result.stdout


@pytest.mark.slow
@pytest.mark.emulated
def test_tuning_with_no_board_ranks_by_the_cycle_estimate_and_says_so(tiny_cnn_onnx, tmp_path):
    """--no-board: every candidate's cost is its cycle estimate on the Pi 4's core (one qemu run a batch); the
    database, its report and the artifact built with it all say it was tuned against a model, with no board."""
    database = tmp_path / "db"
    result = subprocess.run(tune_cmd(tiny_cnn_onnx, "rpi4", database, 10, "--no-board"),
                            capture_output=True, text=True, env=CLEAN_ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ranked by its cycle estimate on cortex-a72" in result.stderr
    lines = records(database)
    assert len(lines) >= 10
    # run times are estimated cycles over the Pi 4's 1.8 GHz: every one a positive, finite, distinct-enough figure
    secs = [json.loads(line)[1][1][0] for line in lines]
    assert all(0 < s < 1 for s in secs) and len(set(secs)) > 1
    provenance = json.loads((database / "provenance.json").read_text())
    assert provenance["measured_by"] == "cycle-estimate"
    assert provenance["note"] == "tuned against the cycle estimate for cortex-a72, no board"
    assert provenance["device"]["board"] is None and provenance["device"]["clock_ghz"] == 1.8
    assert provenance["runs"][-1]["device"]["estimated_on"]["llvm_cpu"]  # the machine that ran the estimate
    assert provenance["device"].get("emulated") is not True
    assert "no board" in (database / "report.md").read_text()
    # each record judged against its default schedule by the per-kernel estimate, in the model
    choices = json.loads((database / guard.CHOICES).read_text())
    assert choices["unit"] == "estimated cycles per inference" and choices["trials"] == len(lines)
    assert choices["kernels"] and all(v["with_record"] > 0 and v["with_default"] > 0 for v in choices["kernels"].values())
    sidecar = json.loads((tmp_path / "db-out" / "tiny_cnn.json").read_text())
    assert sidecar["tuning"]["measured_by"] == "cycle-estimate" and sidecar["tuning"]["kernels_tuned"] > 0
    # the two kinds never share a database: a board's run into this one is refused, before any work
    board = subprocess.run(tune_cmd(tiny_cnn_onnx, "rpi4", database, 12, "--tracker", "127.0.0.1:9"),
                           capture_output=True, text=True, env=CLEAN_ENV, timeout=300)
    assert board.returncode == 2 and "never mix" in board.stderr


def test_emulated_database_is_not_applied_to_a_real_board_build(tiny_cnn_onnx, tmp_path):
    """The previous test's kind of database, without --allow-emulated-logs: the build stays untuned.
    (A cross-compiled build only: no emulated device is needed.)"""
    from compiler.passes.pipeline import fingerprint

    database = tmp_path / "db"
    database.mkdir()
    (database / tuning_db.WORKLOADS).write_text("")
    (database / tuning_db.RECORDS).write_text("")
    tuning_db.TuningDatabase(database).write_provenance({"target_name": "rpi4", "cpu": "cortex-a72",
                                                         "device": {"emulated": True},
                                                         "pipeline": fingerprint("stock")})
    result = subprocess.run([sys.executable, str(ROOT / "compile.py"), "--model", str(tiny_cnn_onnx), "--target",
                             "rpi4", "--database", str(database), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, env=CLEAN_ENV)
    assert result.returncode == 0 and "measured under emulation: not applied" in result.stderr
    wrong = subprocess.run([sys.executable, str(ROOT / "compile.py"), "--model", str(tiny_cnn_onnx), "--target",
                            "rpi5", "--database", str(database), "--out", str(tmp_path / "o5")],
                           capture_output=True, text=True, env=CLEAN_ENV)
    assert wrong.returncode == 2 and "was tuned for 'rpi4', not 'rpi5'" in wrong.stderr


def tune_and_kill_a_server(onnx, database, servers, trials, session_timeout, records_first):
    """Tune through a local farm, kill -9 one server once `records_first` records exist; (rc, stderr)."""
    with farm.LocalFarm(key="rpi4", servers=servers) as local:
        process = subprocess.Popen(tune_cmd(onnx, "rpi4", database, trials, "--tracker", local.tracker,
                                            "--session-timeout", str(session_timeout)),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLEAN_ENV)
        deadline = time.time() + 600
        while len(records(database)) < records_first and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)
        farm.kill_group(local.processes[1].pid)  # processes[0] is the tracker
        _, err = process.communicate(timeout=900)
    return process.returncode, err


@pytest.mark.slow
@pytest.mark.emulated
def test_a_server_killed_mid_run_costs_only_its_measurements(tiny_cnn_onnx, tmp_path):
    database = tmp_path / "db"
    returncode, err = tune_and_kill_a_server(tiny_cnn_onnx, database, servers=2, trials=16, session_timeout=60,
                                             records_first=2)
    assert returncode == 0, err[-3000:]
    assert len(records(database)) >= 16
    assert "tuned" in err and "tasks) in" in err


@pytest.mark.emulated
def test_no_server_left_is_a_clear_error_not_a_hang(tiny_cnn_onnx, tmp_path):
    database = tmp_path / "db"
    returncode, err = tune_and_kill_a_server(tiny_cnn_onnx, database, servers=1, trials=40, session_timeout=30,
                                             records_first=1)
    assert returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no 'rpi4' server is left") and "again to resume" in last, err[-3000:]
    assert len(records(database)) >= 1


@pytest.mark.emulated
def test_farm_command_up_status_down(tmp_path):
    env = dict(CLEAN_ENV, DCAC_FARM_STATE=str(tmp_path / "farm.json"))
    port = farm.free_port()
    run = lambda *args: subprocess.run([sys.executable, "-m", "compiler.farm", *args], capture_output=True,
                                       text=True, cwd=ROOT, env=env, timeout=300)
    up = run("up", "--key", "rpi4", "--servers", "2", "--port", str(port))
    try:
        assert up.returncode == 0, up.stderr
        assert f"tracker at 127.0.0.1:{port}" in up.stdout
        status = run("status")
        assert status.returncode == 0
        header, row = status.stdout.strip().splitlines()[-2:]
        assert header.split() == ["key", "servers", "free", "busy", "pending"]
        assert row.split() == ["rpi4", "2", "2", "0", "0"]
        assert run("up").returncode == 2  # one farm at a time
    finally:
        down = run("down")
    assert down.returncode == 0 and "stopped the farm" in down.stdout
    assert run("status").returncode == 2
