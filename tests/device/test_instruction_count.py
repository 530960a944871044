"""The instruction-count proxy in the emulated Pi, on a small model: it counts TVM and ONNX Runtime alike, per
kernel too, and it holds the default schedules to a bound that TVM's bare loop nests exceed."""
import json
import subprocess
import sys

import pytest

import onnx_models
from compiler.device import instruction_count
from compiler.driver import CompileOptions, compile_model
from compiler.zoo.size import count_params_and_macs
from conftest import ROOT

pytestmark = [pytest.mark.emulated, pytest.mark.slow]


@pytest.fixture(scope="module")
def mobilenet_mini(tmp_path_factory):
    work = tmp_path_factory.mktemp("count")
    onnx = onnx_models.export("mobilenet_mini", work / "mobilenet_mini.onnx")
    _, macs = count_params_and_macs(onnx_models.MODELS["mobilenet_mini"][0]().eval(), (1, 3, 96, 96))
    return onnx, macs, work


def library(onnx, work, default_schedules: bool):
    return compile_model(CompileOptions(target="rpi4", model=str(onnx), database="none",
                                        default_schedules=default_schedules,
                                        out=str(work / f"defaults-{default_schedules}"))).library


def test_default_schedules_stay_within_the_instruction_bound(mobilenet_mini):
    """Per inference at most one aarch64 instruction per multiply-add (4 lanes make the floor a quarter), no
    kernel call above a fifth of the model's multiply-adds, and no more than ONNX Runtime's count."""
    onnx, macs, work = mobilenet_mini
    tvm = instruction_count.count("tvm", library(onnx, work, True), "cortex-a72", "insn", per_kernel=True)
    ort = instruction_count.count("ort", onnx, "cortex-a72", "insn")
    total = tvm["per_inference"]["insns"]
    assert macs / 4 < total <= macs, (total, macs)
    assert total <= ort["per_inference"]["insns"], (total, ort["per_inference"])
    kernels = tvm["kernels"]
    assert {k["name"] for k in kernels} >= {"vm.builtin.alloc_tensor"} and len(kernels) > 10
    heaviest = max(k["insns"] / k["calls"] for k in kernels)
    assert heaviest <= macs / 5, [(k["name"], k["insns"]) for k in kernels[:3]]
    calls = sum(k["calls"] for k in kernels)  # each region also holds the VM instrument's round trip
    assert total <= sum(k["insns"] for k in kernels) <= total + 20_000 * calls


def test_bare_loop_nests_break_the_bound(mobilenet_mini):
    """The same bound fails without the default schedules: the test above can fail."""
    onnx, macs, work = mobilenet_mini
    bare = instruction_count.count("tvm", library(onnx, work, False), "cortex-a72", "insn")
    assert bare["per_inference"]["insns"] > macs


def test_the_bench_command_writes_a_labelled_proxy_report(tmp_path):
    out = tmp_path / "count.json"
    bench = subprocess.run([sys.executable, "-m", "compiler", "bench", "--target", "rpi4", "--count-instructions",
                            "--models", "mobilenetv3_large", "--cache-model", "on", "--json", str(out)],
                           capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert bench.returncode == 0, bench.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "NOT a latency" in report["proxy"] and "NOT a latency" in out.with_suffix(".md").read_text()
    row = report["models"]["mobilenetv3_large"]
    for engine in ("TVM", "ONNX Runtime"):
        counts = row["engines"][engine]["per_inference"]
        assert counts["insns"] > counts["dacc"] / 4 > 0 and counts["dmiss"] > 0
        # the cycle estimate beside the counts: more cycles than instructions / 3 (the A72 issues 3 a cycle),
        # from the named model, with nearly every executed instruction modelled
        estimate = row["engines"][engine]["cycles"]
        assert counts["cycles"] == estimate["cycles"] > estimate["core_cycles"] > counts["insns"] / 3
        assert estimate["model"]["mca_cpu"] == "cortex-a72" and estimate["unmodelled_insns"] < 0.01 * estimate["insns"]
    assert set(row["ratios"]) == {"cycles", "insns", "dmiss", "l2miss"}
    assert "estimated cycles" in out.with_suffix(".md").read_text()

