"""End to end through compile.py: AttendNeXt and two other ONNX vision models, verified against ONNX Runtime
on the host and on the emulated Raspberry Pi 4 and 5 (a real aarch64 RPC server under qemu-user)."""
import json
import re

import pytest

import onnx_models
from test_cli import run_cli

MODELS = ["attendnext", "mobilenet_mini", "vit_mini"]


@pytest.fixture(scope="module")
def model_files(onnx_dir):
    return {name: onnx_models.export(name, onnx_dir / f"{name}.onnx") for name in MODELS[1:]}


def compile_args(name, model_files, target, out):
    args = ["--target", target, "--out", out, "--verify"]
    if name != "attendnext":
        args += ["--model", model_files[name]]
    if name == "vit_mini":  # exported with a dynamic batch axis
        args += ["--input-shape", "input=1,3,64,64"]
    return args


def assert_verified(result, out, name, target):
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"verify logits: max abs error (\S+), relative error (\S+) ok", result.stdout)
    assert match, result.stdout
    assert float(match.group(2)) <= 1e-4
    sidecar = json.loads((out / f"{name}.json").read_text())
    assert sidecar["target_name"] == target and sidecar["model"] == name


def assert_int8_verified(result):
    """An int8-activation build passes on its quality against float beside ONNX Runtime int8's (128 inputs), and
    its outputs still land within one int8 step of ONNX Runtime's int8 run on the seeded input."""
    assert result.returncode == 0, result.stderr[-3000:]
    quality = re.search(r"verify int8 against float over 128 inputs .*: TVM SQNR (\S+) dB, top-1 (\S+)%; "
                        r"ONNX Runtime int8 SQNR (\S+) dB, top-1 (\S+)% ok", result.stdout)
    assert quality, result.stdout
    tvm_sqnr, tvm_top1, ort_sqnr, ort_top1 = map(float, quality.groups())
    assert tvm_sqnr >= ort_sqnr - 0.5 and tvm_top1 >= ort_top1 - 5
    errors = [float(e) for e in re.findall(r"relative error ([0-9.e+-]+) \(ONNX Runtime's int8 rounding", result.stdout)]
    assert errors and max(errors) <= 2e-2, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_verify_on_host(name, model_files, tmp_path):
    out = tmp_path / f"{name}-host"
    assert_verified(run_cli(*compile_args(name, model_files, "host", out)), out, name, "host")


@pytest.mark.slow
@pytest.mark.emulated
@pytest.mark.parametrize("name", MODELS)
def test_verify_on_emulated_rpi4(name, model_files, tmp_path):
    """What `python compile.py --target rpi4` ships, verified on the emulated Pi: AttendNeXt with its database
    tuned with no board on every kernel, the others on default schedules (no rpi4 database)."""
    out = tmp_path / f"{name}-rpi4"
    result = run_cli(*compile_args(name, model_files, "rpi4", out))
    assert_verified(result, out, name, "rpi4")
    assert "on the emulated Raspberry Pi" in result.stderr
    assert (out / f"{name}.so").read_bytes()[18] == 183  # EM_AARCH64
    tuning = json.loads((out / f"{name}.json").read_text())["tuning"]
    if name == "attendnext":
        assert tuning["measured_by"] == "cycle-estimate" and tuning["kernels_tuned"] == tuning["kernels_total"]
    else:
        assert tuning["kernels_default"] == tuning["kernels_total"]


@pytest.mark.slow
@pytest.mark.emulated
def test_verify_attendnext_for_rpi5_on_the_emulated_pi(tmp_path):
    """The Pi 5 preset (Cortex-A76) with its default schedules, verified on the emulated Pi."""
    out = tmp_path / "attendnext-rpi5"
    assert_verified(run_cli("--target", "rpi5", "--out", out, "--verify"), out, "attendnext", "rpi5")


@pytest.mark.emulated
def test_int8_build_matches_onnxruntime_on_the_emulated_pi(tiny_cnn_onnx, tmp_path):
    """`--quantize int8` for rpi4: int8 activations (NEON's signed products), integer kernels, and the same
    outputs as ONNX Runtime's aarch64 build running the shipped QDQ model on the emulated Pi."""
    out = tmp_path / "tiny-int8-rpi4"
    result = run_cli("--target", "rpi4", "--model", tiny_cnn_onnx, "--quantize", "int8", "--verify", "--out", out)
    assert_int8_verified(result)
    assert "(int8 activations" in result.stderr and "integer kernels: 3 " in result.stderr
    assert json.loads((out / "tiny_cnn-int8.json").read_text())["quantization"]["activation_type"] == "int8"


@pytest.mark.emulated
def test_int8_grouped_convolution_products_match_onnxruntime_on_the_emulated_pi(onnx_dir, tmp_path):
    """The kernel-classes model for rpi4: its grouped 3x3 convolution becomes a pair-sums product of its windows,
    requantized in its groups' rows, beside the 1x1 products, the depthwise convolution and the attention
    (tests/passes/test_dot_products.py checks that structure); ONNX Runtime's outputs on the emulated Pi within
    the int8 tolerance."""
    out = tmp_path / "kernel-classes-int8-rpi4"
    model = onnx_models.export("kernel_classes", onnx_dir / "kernel_classes.onnx")
    result = run_cli("--target", "rpi4", "--model", model, "--quantize", "int8", "--verify", "--out", out)
    assert_int8_verified(result)


@pytest.mark.emulated
@pytest.mark.parametrize("target", ["host", "rpi4"])
def test_int8_silu_tables_match_onnxruntime(onnx_dir, tmp_path, target):
    """Grouped convolutions with SiLU between: each quantized SiLU becomes a table (compiled as a table read; on
    rpi4 on the products' rows, the second product's windows copied from the first's rows, and through the
    transpose the depthwise convolution needs); ONNX Runtime's outputs within the int8 tolerance."""
    out = tmp_path / f"silu-columns-int8-{target}"
    model = onnx_models.export("silu_columns", onnx_dir / "silu_columns.onnx")
    result = run_cli("--target", target, "--model", model, "--quantize", "int8", "--verify", "--out", out)
    assert "lookup tables: 3 " in result.stderr, result.stderr[-3000:]
    if target == "host":  # uint8 activations: ONNX Runtime's integer kernels throughout, matched within one step
        errors = [float(e) for e in re.findall(r"relative error ([0-9.e+-]+) ok", result.stdout)]
        assert result.returncode == 0 and errors and max(errors) <= 2e-2, result.stdout
    else:
        assert_int8_verified(result)


def sdot_instructions(library) -> int:
    """aarch64 `sdot Vd.<T>, Vn.<T>, Vm.<T>` words in a library (any register, 64- or 128-bit form)."""
    import numpy as np

    data = library.read_bytes()
    words = np.frombuffer(data[:len(data) // 4 * 4], dtype="<u4")
    return int(((words & 0xBFE0FC00) == 0x0E809400).sum())


@pytest.mark.slow
@pytest.mark.emulated
def test_int8_build_for_rpi5_runs_its_products_on_sdot(model_files, tmp_path):
    """MobileNetV2's blocks quantized for rpi5 (Cortex-A76, dot product): NHWC, the 1x1 convolutions on `sdot`,
    and ONNX Runtime's outputs on the emulated Pi (the A72 of rpi4 has no sdot: tests/passes/test_dot_products.py)."""
    out = tmp_path / "mobilenet-int8-rpi5"
    result = run_cli("--target", "rpi5", "--model", model_files["mobilenet_mini"], "--quantize", "int8", "--verify",
                     "--out", out)
    assert_int8_verified(result)
    assert sdot_instructions(out / "mobilenet_mini-int8.so") > 100


@pytest.mark.emulated
def test_verify_through_a_tracker(model_files, tmp_path):
    """--tracker HOST:PORT: the device comes from a running tracker, as on a real farm."""
    from compiler.device.farm import LocalFarm

    out = tmp_path / "vit-farm"
    with LocalFarm(key="rpi4", servers=1) as farm:
        result = run_cli(*compile_args("vit_mini", model_files, "rpi4", out), "--tracker", farm.tracker)
    assert_verified(result, out, "vit_mini", "rpi4")
    assert f"from tracker {farm.tracker}" in result.stderr
