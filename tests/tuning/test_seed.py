"""Seeds: another database's best schedules (--seed-database) or the default schedules (--seed-defaults) start a
run, and only this device's timings land."""
import collections
import json
import shutil
import subprocess

import pytest

from compiler.tuning import database as tuning_db
from test_tune import CLEAN_ENV, NO_JUDGING, TINY_CNN_TASKS, records, tune_cmd

FAKE_SECONDS = 123.0  # a timing no kernel of tiny_cnn takes: if it shows up in the new database, it was copied


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, env=CLEAN_ENV, timeout=1800, **kwargs)


def doctored_copy(source, target):
    """The source database with every timing replaced by FAKE_SECONDS (seeds rank by them, never keep them)."""
    target.mkdir()
    (target / tuning_db.WORKLOADS).write_text((source / tuning_db.WORKLOADS).read_text())
    lines = []
    for line in records(source):
        workload, (trace, run_secs, *rest) = json.loads(line)
        lines.append(json.dumps([workload, [trace, [FAKE_SECONDS] * len(run_secs), *rest]]))
    (target / tuning_db.RECORDS).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def replayed(tiny_cnn_onnx, tmp_path_factory):
    """A 12-trial database, a doctored copy of it as the seed, and a run whose budget is exactly the replay of
    the seed's top 2 records per workload: (folder, seed bytes before, per-workload counts, replayed, result)."""
    folder = tmp_path_factory.mktemp("seeds")
    first = folder / "first"
    result = run(tune_cmd(tiny_cnn_onnx, "host", first, 12, *NO_JUDGING))
    assert result.returncode == 0, result.stderr[-2000:]
    seed = folder / "seed"
    doctored_copy(first, seed)
    seed_bytes = {p.name: p.read_bytes() for p in seed.iterdir()}
    per_workload = collections.Counter(json.loads(line)[0] for line in records(seed))
    count = sum(min(2, n) for n in per_workload.values())  # top 2 of each workload
    result = run(tune_cmd(tiny_cnn_onnx, "host", folder / "seeded", count, "--seed-database", str(seed),
                          "--seed-defaults", "off", *NO_JUDGING))
    return folder, seed_bytes, per_workload, count, result


@pytest.mark.slow
def test_a_seed_is_replayed_and_measured_here_never_copied(replayed):
    """A budget of exactly the replay: it is spent by the seed alone, measured here."""
    folder, seed_bytes, per_workload, count, result = replayed
    seed, seeded = folder / "seed", folder / "seeded"
    assert result.returncode == 0, result.stderr[-2000:]
    tasks = len(per_workload)
    assert f"seeded {tasks} of " in result.stderr, result.stderr[-2000:]
    new = [json.loads(line) for line in records(seeded)]
    assert len(new) == count
    timings = [s for _, (_, run_secs, *_) in new for s in run_secs]
    assert timings and all(0 < s < 1.0 for s in timings)  # this machine's measurements, not the seed's
    seed_traces = [json.dumps(json.loads(line)[1][0]) for line in records(seed)]
    assert all(json.dumps(trace) in seed_traces for _, (trace, *_) in new)  # the seed's own schedules, replayed
    assert {p.name: p.read_bytes() for p in seed.iterdir()} == seed_bytes  # the seed is only read
    run_entry = json.loads((seeded / "provenance.json").read_text())["runs"][-1]
    assert run_entry["seed"]["tasks_seeded"] == tasks and run_entry["seed"]["measured"] == count


@pytest.mark.slow
def test_a_resumed_run_does_not_replay_the_seed_again(replayed, tiny_cnn_onnx, tmp_path):
    """A resumed run with more budget (on a copy of the replayed database) searches instead."""
    folder, _, _, count, result = replayed
    assert result.returncode == 0, result.stderr[-2000:]
    seeded = tmp_path / "seeded"
    shutil.copytree(folder / "seeded", seeded)
    result = run(tune_cmd(tiny_cnn_onnx, "host", seeded, count + 4, "--seed-database", str(folder / "seed"),
                          "--seed-defaults", "off", *NO_JUDGING))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "seeded 0 of " in result.stderr and len(records(seeded)) >= count + 4


@pytest.mark.slow
def test_a_run_starts_from_the_default_schedules_measured_here(tiny_cnn_onnx, tmp_path):
    """One trial per task: the budget is spent on the default schedules, each measured on this machine."""
    tasks = TINY_CNN_TASKS
    seeded = tmp_path / "seeded"
    result = run(tune_cmd(tiny_cnn_onnx, "host", seeded, tasks, *NO_JUDGING))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"seeded {tasks} of {tasks} tasks from default schedules: {tasks} schedules measured" in result.stderr, \
        result.stderr[-2000:]
    new = [json.loads(line) for line in records(seeded)]
    assert len(new) == tasks and len({workload for workload, _ in new}) == tasks  # one schedule per task
    assert all(0 < s < 1.0 for _, (_, run_secs, *_) in new for s in run_secs)  # timed here
    run_entry = json.loads((seeded / "provenance.json").read_text())["runs"][-1]
    assert run_entry["seed"]["source"] == "default schedules" and run_entry["seed"]["measured"] == tasks


@pytest.mark.slow
def test_a_budget_smaller_than_the_tasks_seeds_only_what_it_pays_for(tiny_cnn_onnx, tmp_path):
    capped = tmp_path / "capped"
    result = run(tune_cmd(tiny_cnn_onnx, "host", capped, 2, *NO_JUDGING))
    assert f"seeded 2 of {TINY_CNN_TASKS} tasks from default schedules" in result.stderr and len(records(capped)) == 2


@pytest.mark.slow
def test_without_seed_defaults_the_budget_goes_to_random_samples(tiny_cnn_onnx, tmp_path):
    unseeded = tmp_path / "unseeded"
    result = run(tune_cmd(tiny_cnn_onnx, "host", unseeded, 4, "--seed-defaults", "off", *NO_JUDGING))
    assert result.returncode == 0 and "from default schedules" not in result.stderr, result.stderr[-2000:]
    assert "seed" not in json.loads((unseeded / "provenance.json").read_text())["runs"][-1]


def test_a_missing_seed_database_is_a_one_line_user_error(tiny_cnn_onnx, tmp_path):
    result = run(tune_cmd(tiny_cnn_onnx, "host", tmp_path / "db", 4, "--seed-database", str(tmp_path / "nowhere")))
    assert result.returncode == 2
    assert "--seed-database" in result.stderr and "no tuning database there" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_resumed_run_trains_its_cost_model_on_the_records_it_has():
    """MetaSchedule starts every run with an untrained cost model; a resumed run first learns the database's own
    records (those that ran: a failed candidate's 1e10 s is not a timing)."""
    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    from tvm_ffi import structural_equal

    from compiler.tuning.seed import train_on_own_records

    a, b = te.placeholder((32, 32), name="a"), te.placeholder((32, 32), name="b")
    k = te.reduce_axis((0, 32), name="k")
    matmul = te.create_prim_func([a, b, te.compute((32, 32), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k))])
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    context = ms.TuneContext(mod=tvm.IRModule({"main": matmul}), target=target, space_generator="post-order-apply",
                             search_strategy="evolutionary")
    space = context.generate_design_space()[0]
    database = ms.database.MemoryDatabase()
    workload = database.commit_workload(context.mod)
    for seconds in (2e-3, 1e10):
        database.commit_tuning_record(ms.database.TuningRecord(
            trace=space.trace, workload=workload, run_secs=[seconds], target=target,
            args_info=ms.arg_info.ArgInfo.from_prim_func(matmul)))
    updates = []

    class Recorder:
        def update(self, context, candidates, results):
            updates.append(([c.sch.mod for c in candidates], [[float(s) for s in r.run_secs] for r in results]))

    assert train_on_own_records(database, [context], Recorder()) == 1
    (modules, timings), = updates
    assert timings == [[2e-3]] and len(modules) == 1
    assert structural_equal(modules[0], space.mod)  # the record's trace, replayed on the task
