"""python -m compiler.bench: the side-by-side table, its ratios, its labels; bad input is one line."""
import json
import subprocess
import sys

import pytest

from compiler.bench.measure import device_onnxruntime_timer, machine, measure, table
from compiler.errors import DeviceError
from compiler.passes.pipeline import DEFAULT_LAYOUT
from test_cli import assert_user_error

ROOT = __import__("conftest").ROOT


def run_bench(*args):
    return subprocess.run([sys.executable, "-m", "compiler.bench", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def test_ratio_is_each_median_over_onnxruntimes():
    rows = table({"ONNX Runtime": [4.0, 2.0, 3.0], "TVM": [7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0]})
    assert rows["ONNX Runtime"]["ratio_vs_onnxruntime"] == 1.0
    assert rows["TVM"]["median_ms"] == 5.5
    assert rows["TVM"]["ratio_vs_onnxruntime"] == pytest.approx(5.5 / 3.0)
    assert rows["TVM"]["p90_ms"] == 9.0  # nearest rank: the 9th of 10, not the largest
    assert rows["TVM"]["min_ms"] == 1.0


def test_every_results_file_records_the_commit_it_was_made_at():
    """machine(), which every bench script records, names the project's commit (and says when the tree differed)."""
    from conftest import ROOT

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = machine()["commit"]
    assert commit.split("+")[0] == head and commit in (head, head + "+changes")


def test_measure_interleaves_rounds_and_drops_warmup():
    calls = []

    def timer(name):
        def run(count):
            calls.append((name, count))
            return [float(len(calls))] * count
        return run
    times = measure({"a": timer("a"), "b": timer("b")}, rounds=3, per_round=2, warmup=1, pause_s=0)
    assert calls == [("a", 1), ("b", 1)] + [("a", 2), ("b", 2)] * 3
    assert times["a"] == [3.0, 3.0, 5.0, 5.0, 7.0, 7.0] and len(times["b"]) == 6


def test_measure_pauses_before_every_block(monkeypatch):
    """The other engine's thread pool spins after its block: every block starts after a pause, warm-up excepted."""
    import compiler.bench.measure as measuring

    events = []
    monkeypatch.setattr(measuring.time, "sleep", lambda seconds: events.append(("pause", seconds)))
    measure({"a": lambda count: events.append(("a", count)) or [1.0] * count,
             "b": lambda count: events.append(("b", count)) or [1.0] * count}, rounds=2, per_round=3, warmup=1)
    pause = ("pause", measuring.BLOCK_PAUSE_S)
    assert events == [("a", 1), ("b", 1)] + [pause, ("a", 3), pause, ("b", 3)] * 2


class FakeSession:
    """An RPC session whose server has (or lacks) board_server.py's ONNX Runtime function."""

    def __init__(self, reply=None):
        self.reply, self.uploaded = reply, []

    def get_function(self, name):
        if self.reply is None:
            raise AttributeError(f"function {name} not found")
        return lambda model, threads, runs: json.dumps(self.reply)

    def upload(self, path):
        self.uploaded.append(path)


def test_device_without_the_benchmark_function_or_onnxruntime_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceError, match="run compiler/device/board_server.py"):
        device_onnxruntime_timer(FakeSession(), tmp_path / "m.onnx", 4)
    timer = device_onnxruntime_timer(FakeSession({"error": "No module named 'onnxruntime': run `pip install "
                                                           "onnxruntime` on the device"}), tmp_path / "m.onnx", 4)
    with pytest.raises(DeviceError, match="pip install onnxruntime"):
        timer(3)
    session = FakeSession({"times_ms": [1.0, 2.0], "version": "1.32.0"})
    assert device_onnxruntime_timer(session, tmp_path / "m.onnx", 4)(2) == [1.0, 2.0]
    assert session.uploaded == [str(tmp_path / "m.onnx")]


@pytest.mark.parametrize("args, fragment", [
    (["--runs", "0"], "--runs 0"),
    (["--target", "rpi4", "--profile"], "--profile instruments the library in this process"),
    (["--target", "host", "--tracker", "127.0.0.1:9190"], "--tracker measures on a board"),
    (["--target", "pi4"], "unknown target 'pi4'"),
    (["--target", "host", "--quantize", "int8", "--fusion", "dcac"], "--quantize int8 builds each model as compile.py"),
    (["--target", "rpi4", "--quantize", "int8"], "--quantize int8 times on this machine"),
])
def test_bad_input_is_one_line(args, fragment):
    assert_user_error(run_bench(*args), fragment)


def bench_report(tmp_path, *args):
    """Run the benchmark with --json; return its report and stdout."""
    out = tmp_path / "bench.json"
    result = run_bench(*args, "--skip-untuned", "--json", out)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["engines"]["ONNX Runtime"]["ratio_vs_onnxruntime"] == 1.0
    return report, out.with_suffix(".md").read_text(), result.stdout


@pytest.mark.slow
def test_host_benchmark_writes_json_and_markdown(tmp_path):
    report, markdown, _ = bench_report(tmp_path, "--target", "host", "--runs", "3", "--profile")
    assert report["emulated"] is False and report["runs_per_engine"] == 3
    tvm_rows = [name for name in report["engines"] if name.startswith("TVM")]
    assert set(report["engines"]) == {*tvm_rows, "ONNX Runtime", "PyTorch eager"} and len(tvm_rows) == 1
    database = report["database"]  # shipped databases exist: this CPU's own, or another's with a warning
    assert database["path"] and f"database tuned for {database['cpu']}" in tvm_rows[0]
    assert database["kernels_tuned"] > 0 and database["trials"] > 0
    assert report["machine"]["llvm_cpu"] and report["machine"]["cpu_model"]
    for row in report["engines"].values():
        assert row["runs"] == 3 and row["median_ms"] > 0  # the percentiles themselves: test_ratio_is_each_...
    onnxruntime = report["engines"]["ONNX Runtime"]["median_ms"]
    for row in report["engines"].values():
        assert row["ratio_vs_onnxruntime"] == pytest.approx(row["median_ms"] / onnxruntime)
    assert "| ONNX Runtime |" in markdown
    profile = report["profile"]  # where the time goes, both engines, from the same run
    for engine, kernel in (("tvm", "conv2d"), ("onnxruntime", "Conv")):
        rows = profile[engine]
        assert any(kernel in row["name"] for row in rows), rows[:5]
        assert sum(row["share"] for row in rows) == pytest.approx(1.0)
        assert all(row["calls"] >= 1 and row["ms"] >= 0 for row in rows)
        assert [row["ms"] for row in rows] == sorted((row["ms"] for row in rows), reverse=True)
    assert "TVM, per kernel" in markdown and "ONNX Runtime, per operator" in markdown


@pytest.mark.emulated
@pytest.mark.slow
def test_emulated_pi_benchmark_runs_onnxruntime_on_the_device_and_says_emulated(tmp_path):
    report, markdown, stdout = bench_report(tmp_path, "--target", "rpi4", "--runs", "2")
    assert report["emulated"] is True and report["device"].startswith("emulated aarch64")
    # AttendNeXt's rpi4 database was tuned with no board (against the cycle estimate), and its label says so
    assert set(report["engines"]) == {f"TVM stock fusion, {DEFAULT_LAYOUT} weights (database tuned with no board "
                                      "for cortex-a72)", "ONNX Runtime"}
    assert all(row["runs"] == 2 and row["median_ms"] > 0 for row in report["engines"].values())
    assert "EMULATED (qemu-user)" in markdown and "EMULATED (qemu-user)" in stdout


def test_instruction_counting_needs_an_aarch64_preset():
    assert_user_error(run_bench("--target", "host", "--count-instructions"),
                      "--count-instructions counts aarch64 code", "--target rpi4")
