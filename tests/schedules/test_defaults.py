"""Default schedules: every kernel without a record is scheduled, computes what ONNX Runtime computes, and on
aarch64 runs on the preset's cores with NEON vectors (switched off, the library is TVM's single-threaded loops,
with a smaller share of vector multiply-adds)."""
import json
import re
import subprocess

import pytest

import onnx_models
from test_cli import run_cli

CLASSES = ["tiny_cnn", "mobilenet_mini", "vit_mini", "convnext_mini", "kernel_classes"]


def build(tmp_path, name, target, *extra):
    """compile.py on model `name` with no database; (result, sidecar)."""
    onnx = onnx_models.export(name, tmp_path / f"{name}.onnx")
    shape = ",".join(map(str, onnx_models.MODELS[name][1]))
    out = tmp_path / f"{name}-{target}"
    result = run_cli("--model", str(onnx), "--target", target, "--input-shape", f"input={shape}", "--database",
                     "none", "--out", str(out), *extra, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((out / f"{name}.json").read_text()), out / f"{name}.so"


def assert_defaults_match_onnxruntime(tmp_path, name, target) -> None:
    """Model `name` built with no database, every kernel on a default schedule, verified against ONNX Runtime
    (relative error <= 1e-4)."""
    result, sidecar, _ = build(tmp_path, name, target, "--verify")
    assert sidecar["tuning"]["kernels_default"] == sidecar["tuning"]["kernels_total"] > 0
    errors = [float(e) for e in re.findall(r"relative error ([0-9.e+-]+) ok", result.stdout)]
    assert errors and max(errors) <= 1e-4, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSES)
def test_every_kernel_class_matches_onnxruntime_on_the_host(tmp_path, name):
    """Convolutions (dense, 1x1 with and without a chunked channel reduction, grouped, depthwise, strided),
    matmuls, softmax, layer norms, pooling, resize and element-wise kernels, each with its default schedule,
    against ONNX Runtime (relative error <= 1e-4)."""
    result, sidecar, _ = build(tmp_path, name, "host", "--verify")
    tuning = sidecar["tuning"]
    assert tuning["kernels_tuned"] == 0 and tuning["kernels_default"] == tuning["kernels_total"] > 0
    errors = [float(e) for e in re.findall(r"relative error ([0-9.e+-]+) ok", result.stdout)]
    assert errors and max(errors) <= 1e-4, result.stdout


def vector_and_scalar_fmas(library) -> tuple:
    """(NEON `fmla v.4s`, scalar `fmadd s`) in the disassembly (binutils-aarch64-linux-gnu, which make test
    installs with g++-aarch64-linux-gnu)."""
    text = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(library)], capture_output=True, text=True,
                          check=True).stdout
    return len(re.findall(r"\tfmla\s+v\d+\.4s", text)), len(re.findall(r"\tfmadd\s+s\d+", text))


def by_element_lanes(library) -> int:
    """By-element multiply-adds reading lane 1, 2 or 3 of a register (`fmla v.4s, v.4s, v.s[k]`, k > 0)."""
    text = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(library)], capture_output=True, text=True,
                          check=True).stdout
    return len(re.findall(r"\tfmla\s+v\d+\.4s, v\d+\.4s, v\d+\.s\[[123]\]", text))


def parallel_launches(library) -> bool:
    text = subprocess.run(["nm", "-D", str(library)], capture_output=True, text=True, check=True).stdout
    return "TVMBackendParallelLaunch" in text


def default_plans(folder, name: str, target_name: str) -> tuple:
    """({task: plan note} of model `name`'s default schedules for the target, {tasks with a padding block})."""
    from compiler import targets
    from compiler.driver import CompileOptions, prepare_onnx
    from compiler.passes import pipeline
    from schedules import defaults
    from tvm.s_tir import meta_schedule as ms

    onnx = onnx_models.export(name, folder / f"{name}.onnx")
    target = targets.load(target_name).tvm_target()
    model = prepare_onnx(CompileOptions(target="host", model=str(onnx)))
    mod = pipeline.tunable_module(pipeline.import_onnx(model), target)
    _, results = defaults.default_database(mod, target)
    notes = {result.name: result.note for result in results if result.ok}
    assert len(notes) == len(results)  # every kernel scheduled
    padded = {task.task_name for task in ms.relax_integration.extract_tasks(mod, target)
              if has_padding(task.dispatched[0])}
    return notes, padded


@pytest.fixture(scope="module", params=["host", "rpi4"])
def kernel_class_plans(request, tmp_path_factory):
    return default_plans(tmp_path_factory.mktemp("plans"), "kernel_classes", request.param)


def has_padding(task_mod) -> bool:
    """Whether a kernel copies an input into a padded buffer (`if_then_else(inside, x, 0)` per element)."""
    import tvm

    sch = tvm.s_tir.Schedule(task_mod)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    return any(sch.can_decompose_padding(block, sch.get_loops(block)[0]) for block in blocks)


def test_a_deep_pointwise_convolution_is_blocked_for_l1(kernel_class_plans):
    """The 1x1 convolution over 512 channels on a 7x7 map gets channel vectors and a chunked channel reduction;
    the other kernels' plans are left alone (numerics: the host test above, and the emulated Pi's verify)."""
    notes, _ = kernel_class_plans
    blocked = [name for name, note in notes.items() if "k-chunk=" in note]
    assert len(blocked) == 1 and "chan-vec" in notes[blocked[0]], notes


def test_padded_inputs_are_filled_and_copied_with_vectors(kernel_class_plans):
    """Every padded convolution (here the grouped 3x3 and the strided depthwise 5x5) copies its input into the
    padded buffer as a vector fill plus a branch-free copy, not one if_then_else per element (numerics: the
    kernel-class tests on the host and the emulated Pi)."""
    notes, padded = kernel_class_plans
    assert len(padded) == 2, padded
    assert all("padding split" in notes[name] for name in padded), {name: notes[name] for name in padded}


@pytest.mark.parametrize("target", ["host", "rpi4"])
def test_neon_pointwise_products_read_channels_in_lanes_from_packed_rows(tmp_path, target):
    """On NEON, MobileNetV2's 1x1 convolutions over 24 or more channels take the weights four channels to a
    register and copy each parallel job's input rows into a contiguous buffer; x86 keeps its plans (numerics:
    the emulated Pi's verify of mobilenet_mini in tests/test_e2e.py)."""
    notes, _ = default_plans(tmp_path, "mobilenet_mini", target)
    laned = [name for name, note in notes.items() if "lanes=" in note]
    packed = [name for name, note in notes.items() if "packed" in note]
    if target == "host":
        assert not laned and not packed, notes
    else:
        assert len(laned) >= 3 and set(packed) <= set(laned) and packed, notes


@pytest.mark.slow
@pytest.mark.emulated
def test_every_kernel_class_matches_onnxruntime_on_the_emulated_pi(tmp_path):
    """The aarch64 plans (channel vectors with a transposed accumulator, the chunked channel reduction, register
    tiles sized for NEON) against ONNX Runtime's aarch64 build on the emulated Pi."""
    result, sidecar, _ = build(tmp_path, "kernel_classes", "rpi4", "--verify")
    assert sidecar["tuning"]["kernels_default"] == sidecar["tuning"]["kernels_total"] > 0
    errors = [float(e) for e in re.findall(r"relative error ([0-9.e+-]+) ok", result.stdout)]
    assert errors and max(errors) <= 1e-4, result.stdout


@pytest.mark.slow
def test_the_aarch64_library_is_parallel_and_vectorised(tmp_path):
    _, sidecar, library = build(tmp_path, "mobilenet_mini", "rpi4")
    assert sidecar["tuning"]["kernels_default"] == sidecar["tuning"]["kernels_total"]
    assert parallel_launches(library)
    vector, scalar = vector_and_scalar_fmas(library)
    assert vector > 4 * scalar, (vector, scalar)
    # the pointwise convolutions' weights come four channels to a register, each channel a lane of by-element
    # multiply-adds (schedules/defaults.py, _lane_operand)
    assert by_element_lanes(library) > 100
    # Switched off: TVM's bare loop nests, one thread and mostly scalar (what the defaults are measured against).
    (tmp_path / "off").mkdir()
    _, plain, bare = build(tmp_path / "off", "mobilenet_mini", "rpi4", "--default-schedules", "off")
    assert plain["tuning"]["kernels_default"] == 0 and not parallel_launches(bare) and by_element_lanes(bare) == 0
    bare_vector, bare_scalar = vector_and_scalar_fmas(bare)
    assert vector / (vector + scalar) > bare_vector / (bare_vector + bare_scalar), (vector, scalar, bare_vector,
                                                                                   bare_scalar)
