"""Fusion mode "dcac": DC-AC patterns match, give fewer kernels and bytes than stock, and compute the same."""
import logging
import re
import shutil

import numpy as np
import pytest

from compiler.passes import dcac_patterns
from compiler.passes import fusion
from compiler.frontend import onnx_model
from compiler.passes import pipeline
from compiler.zoo.attendnext import config_with
from compiler.errors import UserError
from compiler.passes.explain import dcac_blocks, explain, kernel_calls
from compiler.frontend.onnx_export import export_attendnext

SMALL = dict(num_classes=10, input_size=64, column_units=(1, 1), merged_widths=(32, 48), merged_blocks=(2, 1),
             merged_groups=(4, 4), head_channels=64)
N_DCAC = 2 + 3  # two column stages, three merged blocks


@pytest.fixture(scope="module")
def target():
    import tvm

    return tvm.target.Target({"kind": "llvm", "num-cores": 2})


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    path = tmp_path_factory.mktemp("fusion") / "small_attendnext.onnx"
    export_attendnext(path, config_with(**SMALL))
    return pipeline.import_onnx(onnx_model.load(path))


@pytest.fixture(scope="module")
def tunable(imported, target):
    out = {}
    for mode in ("stock", "dcac"):
        rejections = []
        out[mode] = pipeline.tunable_module(imported, target, mode, rejections=rejections)
        out[mode + "_rejections"] = rejections
    return out


def test_unknown_mode_is_a_user_error():
    with pytest.raises(UserError, match="dcac"):
        fusion.passes("nope")


def test_patterns_match_and_each_group_is_one_kernel(tunable):
    calls = kernel_calls(tunable["dcac"])
    fused = [name for name, _, _ in calls if name.startswith("fused_relax_")]
    assert len(fused) == N_DCAC  # the whole-block pattern matched every DC-AC
    blocks = dcac_blocks(calls)
    assert len(blocks) == N_DCAC and all(len(block) == 1 for block in blocks)  # one PrimFunc per DC-AC
    stock = kernel_calls(tunable["stock"])
    assert len(dcac_blocks(stock)) == N_DCAC and all(len(block) > 1 for block in dcac_blocks(stock))
    assert len(calls) < len(stock)


def test_rejected_matches_say_why(tunable):
    reasons = tunable["dcac_rejections"]
    assert tunable["stock_rejections"] == []
    # The MergedBlock body (grouped 3x3 + act -> 1x1) has the branch's op chain but is no condenser branch.
    assert ("dcac.conv2d_add_act_conv2d_add",
            "grouped conv2d does not read a max_pool2d condensation (not a condenser branch)") in reasons


def test_dcac_computes_what_stock_computes(tunable, target):
    import tvm
    from tvm.runtime.vm import VirtualMachine

    dev = tvm.cpu()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype("float32")
    outputs = {}
    for mode in ("stock", "dcac"):
        vm = VirtualMachine(pipeline.build(tunable[mode], target), dev)
        vm.set_input("main", tvm.runtime.tensor(x, dev))
        vm.invoke_stateful("main")
        outputs[mode] = vm.get_outputs("main").numpy()
    ref = outputs["stock"]
    assert np.isfinite(ref).all() and np.abs(ref).max() > 0
    assert np.abs(outputs["dcac"] - ref).max() / np.abs(ref).max() <= 1e-5


def test_explain_compares_both_modes(imported, target):
    text = explain(imported, target)
    assert "stock" in text and "dcac" in text
    total = next(line for line in text.splitlines() if line.strip().startswith("total")).split()
    stock_kernels, stock_bytes, dcac_kernels, dcac_bytes = (int(v.replace(",", "")) for v in total[1:5])
    assert dcac_kernels < stock_kernels and dcac_bytes < stock_bytes
    assert len(re.findall(r"^\s*DC-AC \d+ ", text, re.MULTILINE)) == N_DCAC  # one row per block
    assert "rejected" in text


@pytest.mark.emulated
def test_dcac_equals_stock_on_the_emulated_pi(tmp_path_factory):
    """Both fusion modes cross-compiled for rpi4 and run on the emulated Pi: relative error at most 1e-5."""
    from tvm import rpc

    from compiler.driver import CompileOptions, compile_model
    from compiler.device.farm import LocalFarm, parse_tracker
    from compiler.artifact.runtime import Model

    folder = tmp_path_factory.mktemp("fusion-pi")
    path = folder / "small_attendnext.onnx"
    export_attendnext(path, config_with(**SMALL))
    libraries = {}
    for mode in ("stock", "dcac"):  # a library name per mode: one device session loads both
        named = folder / f"small_attendnext_{mode}.onnx"
        shutil.copyfile(path, named)
        libraries[mode] = compile_model(CompileOptions(target="rpi4", model=str(named), fusion=mode,
                                                       out=str(folder / mode))).library
    image = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype("float32")
    outputs = {}
    with LocalFarm(key="rpi4", servers=1) as farm:
        host, port = parse_tracker(farm.tracker)
        # one session for both: the one server serves one session at a time, and a second request would wait
        # until the first timed out
        session = rpc.connect_tracker(host, port).request("rpi4", session_timeout=300)
        for mode, library in libraries.items():
            (outputs[mode],) = Model(library, session=session).run(image)
    stock, dcac = outputs["stock"], outputs["dcac"]
    assert np.max(np.abs(dcac - stock)) / np.max(np.abs(stock)) <= 1e-5
    assert np.max(np.abs(stock)) > 0


def _annotations(func) -> list:
    return re.findall(r'"schedule_rule": "(dcac\.[a-z_]+)"', func.script())


def test_dcac_kernels_carry_the_schedule_rules_and_stock_kernels_do_not(tunable):
    import tvm

    for mode in ("stock", "dcac"):
        for gvar, func in tunable[mode].functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            marks = _annotations(func)
            if gvar.name_hint.startswith("fused_relax_"):  # a DC-AC kernel: 4 convolutions and their inputs
                assert marks.count("dcac.lowres_conv") == 4, gvar.name_hint
                assert marks.count("dcac.materialize") >= 2, gvar.name_hint
            else:
                assert marks == [], gvar.name_hint


def test_every_schedule_rule_names_a_pattern_of_the_table():
    from schedules import RULES

    assert RULES
    assert sorted({pattern for pattern, _ in RULES} - {row[0] for row in dcac_patterns.TABLE}) == []


def test_a_rule_reaches_its_kernel_through_the_pattern_name(imported, target):
    """The annotation pass looks a kernel up by the pattern the fusion step recorded for it: the same PrimFunc
    is annotated under any name when its pattern has a rule, and not at all without the record."""
    import tvm

    import schedules

    fused = tvm.transform.Sequential([p for p in pipeline.graph_passes("dcac", "plain", target)
                                      if p.info.name != "AnnotateScheduleRules"])
    with target, tvm.transform.PassContext(opt_level=3):
        mod = fused(imported)
    made_by = {name: str(pattern) for name, pattern in mod.attrs[fusion.PATTERN_OF_KERNEL].items()}
    assert sorted(made_by) == sorted(gvar.name_hint for gvar in mod.get_global_vars()
                                     if gvar.name_hint.startswith("fused_relax_"))
    assert set(made_by.values()) <= {row[0] for row in dcac_patterns.TABLE}
    pattern = dcac_patterns.TABLE[0][0]  # the whole block, matched in every DC-AC of SMALL; it has a rule
    name = next(name for name, made in made_by.items() if made == pattern)
    kernel = mod[name]
    assert _annotations(kernel) == []
    renamed = tvm.IRModule({"kernel": kernel}).with_attr(fusion.PATTERN_OF_KERNEL, {"kernel": pattern})
    assert _annotations(schedules.annotate_pass()(renamed)["kernel"]).count("dcac.lowres_conv") == 4
    unrecorded = tvm.IRModule({name: kernel})
    assert _annotations(schedules.annotate_pass()(unrecorded)[name]) == []


@pytest.mark.slow
def test_tuning_a_dcac_kernel_goes_through_the_custom_rule(tunable, target, tmp_path):
    """Two trials of one DC-AC task: the rule makes its design spaces, and the tuned kernel is correct."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    import schedules
    from compiler.artifact.linker import find_linker
    from compiler.tuning.builder import PersistentBuilder
    from compiler.tuning.policy import drop_unnamed_handlers
    from compiler.tuning.tune import default_population
    from schedules import dcac

    calls = []

    def counting(sch, block):
        calls.append(sch.get(block).name_hint)
        return dcac.lowres_conv(sch, block)
    tvm.register_global_func("s_tir.meta_schedule.cpu.dcac.lowres_conv", counting, override=True)
    builder = PersistentBuilder(find_linker(None), max_workers=1)
    try:
        task = next(t for t in ms.relax_integration.extract_tasks(tunable["dcac"], target)
                    if t.task_name.startswith("fused_relax_"))
        # the population the project's tuner gives a batch of 2 (MetaSchedule's 512 would spend minutes searching)
        strategy = ms.search_strategy.EvolutionarySearch(population_size=default_population(2))
        drop_unnamed_handlers(logging.getLogger("tvm.s_tir.meta_schedule"))  # as the project's tuner does
        database = ms.tune_tir(task.dispatched[0], target, str(tmp_path), max_trials_global=2, num_trials_per_iter=2,
                               builder=builder, strategy=strategy)
    finally:
        builder.close()
        schedules.register()
    assert sorted(set(calls)) == ["conv2d_nchw", "conv2d_nchw1", "group_conv2d_nchw", "group_conv2d_nchw1"]
    best = ms.tir_integration.compile_tir(database, task.dispatched[0], target)
    assert best is not None
    reference = tvm.compile(task.dispatched[0], target=target)
    tuned = tvm.compile(best.mod, target=target)
    args_info = ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, [int(d) for d in info.shape]).astype(info.dtype) for info in args_info]
    outs = []
    for lib in (reference, tuned):
        arrays = [tvm.runtime.tensor(a) for a in inputs]
        lib.mod["main"](*arrays) if hasattr(lib, "mod") else lib["main"](*arrays)
        outs.append(arrays[-1].numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
