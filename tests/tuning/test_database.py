"""A tuning database belongs to a CPU and a pipeline: looked up by CPU, never applied silently to another
CPU, refused under another pipeline fingerprint; the shipped databases carry that identity."""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from compiler.passes import pipeline
from compiler import targets
from compiler.tuning import database as tuning_db, guard
from compiler.errors import UserError
from conftest import ROOT

MODEL = SimpleNamespace(name="tiny")


def fake_preset(cpu: str):
    host = targets.load("host")
    return targets.Preset(name="host", description="test", declared_target=dict(host.target, mcpu=cpu),
                          cross_triple=None, rpc_key="host")


def make_database(root, cpu: str, layout: str = "plain", fingerprint=None):
    folder = root / "host" / cpu / tuning_db.folder_name("tiny", "stock", layout)
    folder.mkdir(parents=True)
    (folder / tuning_db.WORKLOADS).write_text('["1", "AAAA"]\n')
    (folder / tuning_db.RECORDS).write_text(json.dumps([0, [[], [0.001], {"kind": "llvm"}, []]]) + "\n")
    database = tuning_db.TuningDatabase(folder)
    database.write_provenance({"target_name": "host", "cpu": cpu, "device": {"cpu_model": f"Test CPU {cpu}"},
                               "pipeline": fingerprint or pipeline.fingerprint("stock", layout)})
    return database


@pytest.fixture
def logs(tmp_path, monkeypatch):
    monkeypatch.setenv("DCAC_TUNING_LOGS", str(tmp_path))
    return tmp_path


def test_own_cpu_database_is_chosen_over_another(logs, capsys):
    make_database(logs, "cpu-b")
    own = make_database(logs, "cpu-a")
    chosen = tuning_db.select(tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain"), None)
    assert chosen.path == own.path
    assert "warning" not in capsys.readouterr().err


def test_another_cpus_database_is_never_applied_silently(logs, capsys):
    other = make_database(logs, "cpu-b")
    chosen = tuning_db.select(tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain"), None)
    assert chosen.path == other.path  # the measured policy: apply, with a warning
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "tuning database for CPU 'cpu-a'" in err[0] and "tuned for CPU 'cpu-b' (Test CPU cpu-b)" in err[0]
    assert "python compile.py --target host --tune" in err[0]


def test_a_foreign_database_of_another_vector_width_gives_way_to_the_default_schedules(logs, capsys, monkeypatch):
    """Measured (bench/results/foreign-database-znver4.md): on an AVX-512 CPU every AVX2 database ran slower than the
    default schedules, while AVX-512 databases of other CPUs ran faster. So only the same width is applied."""
    monkeypatch.setattr(tuning_db, "host_description",
                        lambda: {"llvm_cpu": "cpu-a", "cpu_features": ["avx2", "avx512f"]})
    key = tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain")
    narrow = make_database(logs, "cpu-b")
    narrow.write_provenance({**narrow.provenance, "device": {"cpu_model": "AVX2 CPU", "cpu_features": ["avx2"]}})
    assert tuning_db.select(key, None) is None
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "not applying the database tuned for CPU 'cpu-b'" in said[0] and "vector width" in said[0]
    wide = make_database(logs, "cpu-c")
    wide.write_provenance({**wide.provenance, "device": {"cpu_model": "AVX-512 CPU", "cpu_features": ["avx512f"]}})
    assert tuning_db.select(key, None).path == wide.path


def test_foreign_database_of_another_layout_is_not_used(logs):
    make_database(logs, "cpu-b", layout="prepack")
    assert tuning_db.select(tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain"), None) is None


def test_explicit_database_is_applied_on_purpose_and_says_so(logs, capsys):
    other = make_database(logs, "cpu-b")
    chosen = tuning_db.select(tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain"), str(other.path))
    assert chosen.path == other.path
    said = capsys.readouterr().err
    assert f"applying the database {other.path}, tuned for CPU 'cpu-b'" in said and "to a build for 'cpu-a'" in said


def test_database_of_another_pipeline_is_refused_unless_overridden(logs):
    stale = dict(pipeline.fingerprint("stock", "plain"), hash="0123456789abcdef")
    make_database(logs, "cpu-a", fingerprint=stale)
    with pytest.raises(UserError, match="retune it .*--allow-stale-database"):
        tuning_db.select(tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain"), None)
    assert tuning_db.select(tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain"), None, allow_stale=True)


def test_resuming_another_cpus_database_is_refused(logs):
    other = make_database(logs, "cpu-b")
    with pytest.raises(UserError, match="records of two CPUs would mix"):
        tuning_db.check_resume(other, fake_preset("cpu-a"), pipeline.fingerprint("stock", "plain"), allow_other_cpu=False)
    tuning_db.check_resume(other, fake_preset("cpu-a"), pipeline.fingerprint("stock", "plain"), allow_other_cpu=True)


def make_board_less(root, cpu: str):
    """A database tuned with no board, beside where the board's own would be."""
    key = tuning_db.DatabaseKey(fake_preset(cpu), MODEL.name, "stock", "plain")
    folder = key.board_less_folder()
    folder.mkdir(parents=True)
    (folder / tuning_db.WORKLOADS).write_text('["1", "AAAA"]\n')
    (folder / tuning_db.RECORDS).write_text(json.dumps([0, [[], [0.001], {"kind": "llvm"}, []]]) + "\n")
    database = tuning_db.TuningDatabase(folder)
    database.write_provenance({"target_name": "host", "cpu": cpu, "measured_by": "cycle-estimate",
                               "note": f"tuned against the cycle estimate for {cpu}, no board",
                               "device": {"board": None}, "pipeline": pipeline.fingerprint("stock", "plain"),
                               "check": {"ships": True, "no_board_vs_default": 0.8, "trials": 1}})
    return database


def test_a_board_less_database_never_outranks_one_measured_on_a_board(logs, capsys):
    key = tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain")
    board_less = make_board_less(logs, "cpu-a")
    assert board_less.board_less and board_less.path != key.folder()
    # alone, it is applied, with one line saying what it is
    assert tuning_db.select(key, None).path == board_less.path
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "no database measured on a board" in said[0] and "no board" in said[0]
    # a board's own database wins over it, and so does another CPU's measured one
    foreign = make_database(logs, "cpu-b")
    assert tuning_db.select(key, None).path == foreign.path
    own = make_database(logs, "cpu-a")
    assert tuning_db.select(key, None).path == own.path
    assert not own.board_less


def test_a_board_less_database_its_check_found_not_paying_is_kept_but_not_applied(logs, capsys):
    """bench/no_board.py records in the database whether it beats the default schedules; one that does not is
    not applied (the build keeps the default schedules) but stays for resuming."""
    key = tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain")
    board_less = make_board_less(logs, "cpu-a")
    board_less.write_provenance({**board_less.provenance,
                                 "check": {"ships": False, "no_board_vs_default": 0.88, "trials": 1}})
    assert tuning_db.select(key, None) is None
    assert "its check found 0.88x the default schedules' estimated cycles at 1 trials" in capsys.readouterr().err
    board_less.write_provenance({**board_less.provenance, "check": {"ships": True, "no_board_vs_default": 0.8,
                                                                    "trials": 1}})
    assert tuning_db.select(key, None).path == board_less.path
    # tuned further since its check: not applied until the check is run again on every record
    with open(board_less.path / tuning_db.RECORDS, "a") as records:
        records.write(json.dumps([0, [[], [0.002], {"kind": "llvm"}, []]]) + "\n")
    capsys.readouterr()
    assert tuning_db.select(key, None) is None
    assert "no check covers its 2 records yet; run bench/no_board.py --target host" in capsys.readouterr().err
    # checked again, then judged (guard.py): the verdicts change the build, so the check must cover them too
    board_less.write_provenance({**board_less.provenance, "check": {"ships": True, "no_board_vs_default": 0.8,
                                                                    "trials": 2}})
    assert tuning_db.select(key, None).path == board_less.path
    (board_less.path / guard.CHOICES).write_text('{"trials": 2, "kernels": {}}')
    capsys.readouterr()
    assert tuning_db.select(key, None) is None
    assert "no check covers its 2 records and their verdicts yet" in capsys.readouterr().err


def test_tuning_on_boards_starts_from_the_board_less_database(logs):
    """--tune --tracker seeds from the board-less database (each of its schedules measured on the boards first);
    a seed the user names wins, and a run with no tracker is not seeded from it."""
    import dataclasses

    from compiler import driver
    from compiler.tuning.tune import TuneOptions

    key = tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain")
    board_less = make_board_less(logs, "cpu-a")
    options = driver.CompileOptions(target="host", tune=TuneOptions(), tracker="10.0.0.5:9190")
    assert driver._seeded_from_board_less(options, key).tune.seed_database == str(board_less.path)
    named = dataclasses.replace(options, tune=TuneOptions(seed_database="/my/seed"))
    assert driver._seeded_from_board_less(named, key).tune.seed_database == "/my/seed"
    local = dataclasses.replace(options, tracker=None)
    assert driver._seeded_from_board_less(local, key).tune.seed_database is None


def test_tuning_never_mixes_board_and_estimated_records(logs):
    key = tuning_db.DatabaseKey(fake_preset("cpu-a"), MODEL.name, "stock", "plain")
    board_less, board = make_board_less(logs, "cpu-a"), make_database(logs, "cpu-a")
    assert tuning_db.for_build(key, None, board_less=True).path == board_less.path
    assert tuning_db.for_build(key, None, board_less=False).path == board.path
    with pytest.raises(UserError, match="tuned against the cycle estimate .*never mix"):
        tuning_db.for_build(key, str(board_less.path), board_less=False)
    with pytest.raises(UserError, match="measured on a device.*never mix"):
        tuning_db.for_build(key, str(board.path), board_less=True)


def test_fingerprint_changes_with_what_decides_the_kernels():
    prints = {(f, l): pipeline.fingerprint(f, l)["hash"] for f in ("stock", "dcac") for l in pipeline.LAYOUTS}
    assert len(set(prints.values())) == 4
    assert pipeline.fingerprint("stock", "plain") == pipeline.fingerprint("stock", "plain")


def test_shipped_databases_carry_their_cpu_and_pipeline():
    """Every shipped database sits under its CPU's folder, and its provenance says so, with a fingerprint of
    the current pipeline (the move to tuning_logs/<target>/<cpu>/ kept provenance)."""
    shipped = [p.parent for p in (ROOT / "tuning_logs").glob(f"*/*/*/{tuning_db.RECORDS}")]
    assert shipped, "no shipped databases found"
    for folder in shipped:
        database = tuning_db.TuningDatabase(folder)
        provenance = database.provenance
        assert database.cpu == folder.parent.name and provenance["target_name"] == folder.parent.parent.name
        layout = provenance["pipeline"]["layout"]
        assert database.fingerprint_hash == pipeline.fingerprint(provenance["fusion"], layout)["hash"], folder
        assert provenance["trials"] == database.record_count()
        if database.board_less:  # tuned with no board: says against which model, in its own folder
            assert folder.name.endswith(tuning_db.BOARD_LESS_SUFFIX) and provenance["device"]["board"] is None
            assert provenance["note"] == f"tuned against the cycle estimate for {database.cpu}, no board"
            # and it carries the verdict of bench/no_board.py on its current records: whether it is applied
            # (a database committed mid-run, tuned past its check, is not applied until checked again)
            check = provenance["check"]
            assert check["ships"] == (check["no_board_vs_default"] <= 0.85) and check["trials"] <= database.record_count()
            judged = guard.read(folder).get("trials")  # verdicts can be newer than the check, never older
            assert check.get("kernel_choices_trials") is None or check["kernel_choices_trials"] <= (judged or 0)
            assert (ROOT / check["results"]).is_file()
        else:
            assert provenance["device"]["cpu_model"]


@pytest.mark.slow
def test_build_with_another_cpus_database_warns_and_records_both(tiny_cnn_onnx, tmp_path):
    """End to end with two real CPU names: tuned for haswell, built for skylake-avx512 (both run here)."""
    env_logs = tmp_path / "logs"
    presets = {}
    for cpu in ("haswell", "skylake-avx512"):
        presets[cpu] = tmp_path / f"{cpu}.json"
        presets[cpu].write_text(json.dumps({"name": "host", "description": cpu, "cross_triple": None,
                                            "rpc_key": "host", "target": {"kind": "llvm", "mcpu": cpu,
                                                                          "num-cores": 2}}))
    env = dict(__import__("os").environ, DCAC_TUNING_LOGS=str(env_logs))
    run = lambda *args: subprocess.run([sys.executable, str(ROOT / "compile.py"), "--model", str(tiny_cnn_onnx),  # noqa
                                        "--layout", "plain", *map(str, args)], capture_output=True, text=True, env=env)
    tuned = run("--target", presets["haswell"], "--tune", "--trials", "12", "--judge-records", "off", "--out",
                tmp_path / "a")
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    database = env_logs / "host" / "haswell" / "tiny_cnn"
    assert tuning_db.TuningDatabase(database).record_count() >= 12
    built = run("--target", presets["skylake-avx512"], "--out", tmp_path / "b")
    assert built.returncode == 0, built.stderr[-2000:]
    assert "tuning database for CPU 'skylake-avx512'" in built.stderr and "tuned for CPU 'haswell'" in built.stderr
    sidecar = json.loads((tmp_path / "b" / "tiny_cnn.json").read_text())
    assert sidecar["tuning"]["cpu"] == "haswell" and sidecar["target"]["mcpu"] == "skylake-avx512"
    resumed = run("--target", presets["skylake-avx512"], "--database", database, "--tune", "--trials", "20",
                  "--out", tmp_path / "c")
    assert resumed.returncode == 2 and "records of two CPUs would mix" in resumed.stderr


def test_a_build_without_a_layout_follows_this_cpus_own_database(logs):
    """The CPU matters more than the layout: a CPU with only a plain database builds plain by default."""
    preset = fake_preset("cpu-a")
    assert tuning_db.preferred_layout(tuning_db.DatabaseKey(preset, MODEL.name, "stock", "prepack")) == "prepack"  # nothing: the default
    make_database(logs, "cpu-b", layout="prepack")
    make_database(logs, "cpu-a", layout="plain")
    assert tuning_db.preferred_layout(tuning_db.DatabaseKey(preset, MODEL.name, "stock", "prepack")) == "plain"
    make_database(logs, "cpu-a", layout="prepack")
    assert tuning_db.preferred_layout(tuning_db.DatabaseKey(preset, MODEL.name, "stock", "prepack")) == "prepack"


def test_a_database_of_tensorized_records_loads_in_a_fresh_process(tmp_path):
    """An int8 database's traces name the tensor intrinsics (`dot_16x4_vnni`): a new process reading it (to resume
    a tune, or to build) must register them first, or every record is unreadable."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from schedules import defaults
    from test_dot_products import VNNI, packed_product_module

    target = tvm.target.Target(VNNI)
    mod = packed_product_module("uint8", 49, 68, 48)
    sch, result = defaults.schedule_task(mod, target, defaults.machine_of(target), defaults.Options())
    assert result.note.startswith("tensorized") and "dot_16x4_vnni" in str(sch.trace)
    workloads, records = tmp_path / tuning_db.WORKLOADS, tmp_path / tuning_db.RECORDS
    database = ms.database.JSONDatabase(path_workload=str(workloads), path_tuning_record=str(records))
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, database.commit_workload(mod), [1e-4], target))
    script = ("import sys; from pathlib import Path; from compiler.tuning import database as d; "
              "print(len(d.json_database(Path(sys.argv[1]), Path(sys.argv[2])).get_all_tuning_records()))")
    done = subprocess.run([sys.executable, "-c", script, str(workloads), str(records)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split()[-1] == "1", done.stderr[-2000:]
