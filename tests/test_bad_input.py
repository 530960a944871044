"""The bad-input corpus: user mistakes in the file, the flags, the target, the database and the network.

Each case runs compile.py as a user would and asserts the exit code (2: the user's mistake, 1: a device
that cannot be reached or fails, 0: repaired and built), the message's key words, one error line and no
traceback. The cases tests/test_cli.py already holds (missing file, folder as --model, missing external
data, unknown target, unsupported operators, dynamic input, wrong or malformed --input-shape, missing
cross linker, negative --tolerance) are not repeated here.
"""
import ctypes
import json
import os
import stat

import onnx
import pytest
from onnx import TensorProto, helper

from compiler.device import farm
from compiler.passes import pipeline
from compiler import targets
from compiler.tuning import database as tuning_db
from test_cli import assert_user_error, run_cli
from test_onnx_model import make_model

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1  # linux/prctl.h, linux/capability.h


def as_an_ordinary_user():
    """preexec_fn: a root process drops CAP_DAC_OVERRIDE, so permission bits bind it as they bind a user
    (nothing to drop for a user)."""
    if os.geteuid() == 0 and ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def make_database(onnx_path, folder):
    """A MetaSchedule database for the host holding one record per kernel of `onnx_path` (a trivial
    schedule, no measuring), with the provenance --tune writes; returns how many kernels it covers."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from compiler.frontend import onnx_model

    preset = targets.load("host")
    target = preset.tvm_target()
    model = onnx_model.load(onnx_path)
    mod = pipeline.tunable_module(pipeline.import_onnx(model), target, layout="plain")
    database = tuning_db.TuningDatabase(folder)
    records = database.load()
    tasks = ms.relax_integration.extract_tasks(mod, target)
    for task in tasks:
        workload = records.commit_workload(task.dispatched[0])
        schedule = tvm.s_tir.Schedule(task.dispatched[0])
        schedule.get_sblock("root", "main")  # an empty trace is no record: MetaSchedule skips it
        records.commit_tuning_record(ms.database.TuningRecord(
            schedule.trace, workload, [1e-3], target, ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])))
    database.write_provenance({"target_name": "host", "cpu": tuning_db.cpu_of(preset), "model_sha256": model.sha256,
                               "device": {"cpu_model": "made by the test"},
                               "pipeline": pipeline.fingerprint("stock", "plain")})
    return len(tasks)


@pytest.fixture(scope="module")
def database(tiny_cnn_onnx, tmp_path_factory):
    folder = tmp_path_factory.mktemp("db") / "tiny_cnn"
    return folder, make_database(tiny_cnn_onnx, folder)


def copy_database(database, tmp_path):
    folder = tmp_path / "db"
    folder.mkdir()
    for path in database[0].iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def build(model, tmp_path, *args, **kwargs):
    return run_cli("--model", model, "--target", "host", "--out", tmp_path / "out", *args, **kwargs)


# --- the file ---

def test_an_empty_file(tmp_path):
    (tmp_path / "net.onnx").write_bytes(b"")
    assert_user_error(build(tmp_path / "net.onnx", tmp_path), "is not an ONNX model", "no graph nodes")


def test_a_truncated_onnx_file(tiny_cnn_onnx, tmp_path):
    (tmp_path / "net.onnx").write_bytes(tiny_cnn_onnx.read_bytes()[:2000])
    assert_user_error(build(tmp_path / "net.onnx", tmp_path), "is not an ONNX model", "torch.onnx.export")


def test_an_output_whose_shape_only_the_data_decides(tmp_path):
    """NonZero: no input shape fixes the output's; the message names the output and its dimensions."""
    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["idx"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("idx", TensorProto.INT64, [2, "k"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "nz.onnx"))
    result = build(tmp_path / "nz.onnx", tmp_path, "--input-shape", "x=1,4")
    assert_user_error(result, "output 'idx'", "dimensions 0, 1", "x=1,4", "static shapes")
    assert "[3/4]" not in result.stderr  # refused before the build


# --- the flags ---

def test_an_out_folder_that_cannot_be_written(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        result = run_cli("--model", make_model(tmp_path / "m.onnx"), "--target", "host", "--out", locked / "out",
                         preexec_fn=as_an_ordinary_user)
    finally:
        locked.chmod(0o755)
    assert_user_error(result, f"--out {locked / 'out'} cannot be written", "not writable")
    assert "[1/4]" not in result.stderr  # refused before the slow work, not after it


def test_an_out_folder_under_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    assert_user_error(build(make_model(tmp_path / "m.onnx"), tmp_path / "notes.txt"), "which is a file")


def test_an_out_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("")
    assert_user_error(build(make_model(tmp_path / "m.onnx"), tmp_path), "is a file: give a folder")


def test_a_dump_ir_that_is_a_file(tmp_path):
    (tmp_path / "ir").write_text("")
    assert_user_error(build(make_model(tmp_path / "m.onnx"), tmp_path, "--dump-ir", tmp_path / "ir"),
                      "--dump-ir", "cannot be written")


def test_weights_with_a_model_file(tmp_path):
    assert_user_error(build(make_model(tmp_path / "m.onnx"), tmp_path, "--weights", tmp_path / "w.pt"),
                      "--weights loads AttendNeXt weights")


def test_a_malformed_tracker_is_refused_before_the_build(tmp_path):
    result = build(make_model(tmp_path / "m.onnx"), tmp_path, "--verify", "--tracker", "board-7")
    assert_user_error(result, "--tracker 'board-7' is not HOST:PORT")
    assert "[1/4]" not in result.stderr


def test_a_tuning_budget_of_zero_is_refused_before_a_database_folder_is_made(tmp_path):
    assert_user_error(build(make_model(tmp_path / "m.onnx"), tmp_path, "--tune", "--trials", "0"), "--trials 0")
    assert not tuning_db.for_build(tuning_db.DatabaseKey(targets.load("host"), "m", "stock", "prepack"), None).path.exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--no-board"], "--no-board says how --tune ranks candidates: add --tune"),
    (["--tune", "--no-board"], "--no-board is for ARM presets"),
    (["--tune", "--no-board", "--target", "rpi4", "--tracker", "127.0.0.1:9190"], "--no-board tunes without a device"),
])
def test_no_board_where_it_cannot_apply(flags, fragment, tmp_path):
    result = build(make_model(tmp_path / "m.onnx"), tmp_path, *flags)
    assert_user_error(result, fragment)
    assert "[1/4]" not in result.stderr


# --- the target ---

@pytest.mark.parametrize("target, fragment", [
    ({"kind": "llvm", "mcpu": "cortex-a720x"}, "names mcpu 'cortex-a720x', which LLVM does not know"),
    ({"kind": "cpu-of-my-board"}, "is not a target TVM can build for"),
])
def test_a_preset_tvm_cannot_build_for(target, fragment, tmp_path):
    preset = tmp_path / "board.json"
    preset.write_text(json.dumps({"name": "board", "description": "mine", "cross_triple": None, "rpc_key": "board",
                                  "target": target}))
    assert_user_error(run_cli("--model", make_model(tmp_path / "m.onnx"), "--target", preset), fragment)


def test_a_cross_linker_that_fails(tmp_path):
    """An installed but broken aarch64-linux-gnu-g++: say which linker failed, what it said, what to do."""
    fake = tmp_path / "bin"
    fake.mkdir()
    linker = fake / "aarch64-linux-gnu-g++"
    linker.write_text("#!/bin/sh\necho 'ld: cannot find -lstdc++' >&2\nexit 1\n")
    linker.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    result = run_cli("--model", make_model(tmp_path / "m.onnx"), "--target", "rpi4", "--linker", "gnu", "--out",
                     tmp_path / "out", env=env)
    assert_user_error(result, f"linking the library with gnu ({linker}) failed", "cannot find -lstdc++",
                      "--linker zig")


# --- the tuning database (--database) ---

def test_a_record_line_cut_by_a_crash_is_dropped_and_the_rest_applied(database, tiny_cnn_onnx, tmp_path):
    folder = copy_database(database, tmp_path)
    records = folder / tuning_db.RECORDS
    lines = records.read_text().splitlines()
    records.write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]))
    result = build(tiny_cnn_onnx, tmp_path, "--database", folder)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "dropped 1 incomplete line(s) left by a crash" in result.stderr
    assert f"{database[1] - 1} of {database[1]} kernels tuned" in result.stderr


def test_a_record_naming_a_workload_the_database_lacks(database, tiny_cnn_onnx, tmp_path):
    folder = copy_database(database, tmp_path)
    records = folder / tuning_db.RECORDS
    records.write_text(records.read_text().replace("[0,", "[99,", 1))
    assert_user_error(build(tiny_cnn_onnx, tmp_path, "--database", folder), f"database in {folder} is damaged",
                      "names a workload that database_workload.json does not have")


def test_provenance_that_is_not_json(database, tiny_cnn_onnx, tmp_path):
    folder = copy_database(database, tmp_path)
    (folder / tuning_db.PROVENANCE).write_text('{"target_name": "ho')
    assert_user_error(build(tiny_cnn_onnx, tmp_path, "--database", folder), "provenance.json is not valid JSON")


def test_a_database_for_another_model(database, tmp_path):
    other = make_model(tmp_path / "other.onnx", ops=("Sigmoid", "Tanh"))
    assert_user_error(build(other, tmp_path, "--database", database[0]), "has no record for any of the",
                      "tuned for another model", "--tune")


def test_a_database_folder_without_a_database(tmp_path):
    (tmp_path / "db").mkdir()
    assert_user_error(build(make_model(tmp_path / "m.onnx"), tmp_path, "--database", tmp_path / "db"),
                      "holds no MetaSchedule database")


# --- the network ---

def test_a_tracker_that_answers_but_has_no_server_for_the_key(tmp_path):
    """A real TVM tracker on loopback with one server registered under another key: exit 1 at once (the
    tracker would queue the request for ever), naming the key, what is registered and the fix."""
    import subprocess
    import sys

    with farm.LocalFarm(key="host", servers=0) as local:
        host, port = farm.parse_tracker(local.tracker)
        server_port = farm.free_port()
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port",
                                   str(server_port), "--port-end", str(server_port + 1), "--tracker", local.tracker,
                                   "--key", "jetson"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        local.processes.append(server)  # stopped with the tracker
        farm.wait_for_servers(host, port, "jetson", 1, timeout=60)
        result = build(make_model(tmp_path / "m.onnx"), tmp_path, "--verify", "--tracker", local.tracker, timeout=120)
    assert_user_error(result, f"tracker {local.tracker} has no 'host' server", "its servers' keys: jetson",
                      "board_server.py", "--key host", code=1)
    assert "[1/4]" not in result.stderr


def test_a_port_where_no_tracker_listens(tmp_path):
    result = build(make_model(tmp_path / "m.onnx"), tmp_path, "--verify", "--tracker", f"127.0.0.1:{farm.free_port()}")
    assert_user_error(result, "does not answer", "check --tracker", code=1)
