"""compile.py: every user mistake is one line on stderr, exit code 2, no traceback."""
import subprocess
import sys


from test_onnx_model import make_model

ROOT = __import__("conftest").ROOT


def run_cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / "compile.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, **kwargs)


def assert_user_error(result, *fragments, code=2):
    """Exit `code` (2: the user's mistake, 1: a device's failure), no traceback, and one line of error: the
    last, holding every fragment."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.stderr
    message = lines[-1]
    for fragment in fragments:
        assert fragment in message, message


def test_list_targets():
    result = run_cli("--list-targets")
    assert result.returncode == 0
    for name in ["rpi4", "rpi5", "jetson-orin-cpu", "graviton2", "graviton3", "aarch64", "host"]:
        assert name in result.stdout


def test_missing_model_file(tmp_path):
    assert_user_error(run_cli("--model", tmp_path / "missing.onnx", "--target", "host"), "missing.onnx not found")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"\x00\x01garbage\xff" * 10)
    assert_user_error(run_cli("--model", path, "--target", "host"), "is not an ONNX model")


def test_unknown_target(tmp_path):
    assert_user_error(run_cli("--model", make_model(tmp_path / "m.onnx"), "--target", "pi4"),
                      "unknown target 'pi4'", "rpi4", "host")


def test_unsupported_operators(tmp_path):
    path = make_model(tmp_path / "m.onnx", ops=("Relu", "NotAnOp", "AlsoNotAnOp"))
    assert_user_error(run_cli("--model", path, "--target", "host"), "AlsoNotAnOp, NotAnOp")


def test_dynamic_input_without_shape(tmp_path):
    path = make_model(tmp_path / "m.onnx", dims=("n", 3, 8, 8))
    assert_user_error(run_cli("--model", path, "--target", "host"), "dynamic dimensions", "--input-shape x=")


def test_wrong_input_name(tmp_path):
    path = make_model(tmp_path / "m.onnx")
    assert_user_error(run_cli("--model", path, "--target", "host", "--input-shape", "images=1,3,8,8"),
                      "names images", "inputs are x")


def test_malformed_input_shape(tmp_path):
    assert_user_error(run_cli("--model", make_model(tmp_path / "m.onnx"), "--input-shape", "x:1,3"),
                      "is not NAME=D1,D2")


def test_missing_cross_linker(tmp_path):
    """No aarch64-linux-gnu-g++ on PATH and the ziglang package hidden: say how to install either."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "ziglang.py").write_text("raise ImportError('hidden by the test')\n")
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(hide), "HOME": str(tmp_path)}
    assert_user_error(run_cli("--model", make_model(tmp_path / "m.onnx"), "--target", "rpi4", env=env),
                      "no cross linker for aarch64-linux-gnu", "apt-get install g++-aarch64-linux-gnu",
                      "pip install ziglang")


def test_compiles_a_user_model_into_out_named_after_the_file(tmp_path):
    path = make_model(tmp_path / "edge_net.onnx", ops=("Relu", "Sigmoid"))
    result = run_cli("--model", path, "--target", "host", "--out", tmp_path / "out", "--verify")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["edge_net.json", "edge_net.so", "runtime.py"]
    assert "verify t1: max abs error" in result.stdout and " ok" in result.stdout


def test_verify_catches_a_library_whose_output_is_wrong(tmp_path, monkeypatch, capsys):
    """A library built from one model (Sigmoid), checked against another (Tanh): --verify must fail, exit 1."""
    import compile as cli
    from compiler.device import verify

    built = make_model(tmp_path / "sigmoid.onnx", ops=("Sigmoid",))
    other = make_model(tmp_path / "tanh.onnx", ops=("Tanh",))
    real_reference = verify.onnxruntime_outputs
    monkeypatch.setattr(verify, "onnxruntime_outputs", lambda path, specs, arrays: real_reference(other, specs, arrays))
    assert cli.main(["--model", str(built), "--target", "host", "--out", str(tmp_path / "o"), "--verify"]) == 1
    assert "FAILED (tolerance 0.0001)" in capsys.readouterr().out


def test_board_server_listens_on_loopback_unless_told():
    """A TVM RPC server runs uploaded code: by default only this machine may reach it."""
    from compiler.device.board_server import parse_args

    assert parse_args(["--tracker", "10.0.0.5:9190", "--key", "rpi4"]).host == "127.0.0.1"
    assert parse_args(["--tracker", "10.0.0.5:9190", "--key", "rpi4", "--host", "10.0.0.17"]).host == "10.0.0.17"


def test_a_folder_as_model_names_the_onnx_file_inside(tmp_path):
    make_model(tmp_path / "net.onnx")
    assert_user_error(run_cli("--model", tmp_path, "--target", "host"), "is a directory", "net.onnx")


def test_missing_external_data_file_is_named(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 3, 8, 8), "float32"), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "net.onnx"),
              save_as_external_data=True, all_tensors_to_one_file=True, location="net.onnx.data", size_threshold=0)
    (tmp_path / "net.onnx.data").unlink()
    assert_user_error(run_cli("--model", tmp_path / "net.onnx", "--target", "host"), "external-data file",
                      "net.onnx.data")


def test_input_shape_that_contradicts_a_static_dimension(tmp_path):
    make_model(tmp_path / "net.onnx")
    assert_user_error(run_cli("--model", tmp_path / "net.onnx", "--target", "host", "--input-shape",
                              "x=1,3,7,7"), "does not fit the model's input shape")


def test_negative_tolerance_is_refused():
    assert_user_error(run_cli("--target", "host", "--tolerance", "-1"), "--tolerance -1 is negative")


def test_a_build_prints_only_the_projects_own_lines(tiny_cnn_onnx, tmp_path):
    """tiny_cnn has a max-pool, whose TOPI kernel names a schedule rule TVM registers for no CPU: the build
    (default schedules, aarch64 and x86 rules alike) prints no TVM warning about it (schedules/topi_rules.py)."""
    result = run_cli("--model", tiny_cnn_onnx, "--target", "rpi4", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "Unknown schedule rule" not in result.stderr and "Warning" not in result.stderr, result.stderr
    assert "default schedules for" in result.stderr
