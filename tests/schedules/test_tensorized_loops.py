"""Tuning candidates of a packed int8 product build: the loops around its tensor intrinsic stay scalar."""
import pytest

from compiler.passes import dot_products

VNNI = {"kind": "llvm", "mcpu": "icelake-server", "mtriple": "x86_64-linux-gnu", "num-cores": 2}


def product_with_epilogue():
    """A packed VNNI product of 48 channels (three 16-lane tiles) with a requantizing epilogue, as the pass and
    fusion make them."""
    import tvm
    from tvm import te, tirx

    a = te.placeholder((1, 7, 7, 96), "uint8", "a")
    b = te.placeholder((3, 24, 16, 4), "int8", "b")
    product = dot_products._nt_product(a, b)
    out = te.compute(product.shape, lambda *i: tirx.Cast("uint8", tirx.max(tirx.min(
        tirx.round(tirx.Cast("float32", product(*i)) * 0.01), 255.0), 0.0)), name="requantize")
    return tvm.IRModule({"main": te.create_prim_func([a, b, out])})


def sampled_candidates(mod, target, generator, seeds):
    """Schedules of every design space with fresh sampled decisions, postprocessed as tuning does."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=mod, target=target, space_generator=generator, task_name="product", num_threads=2)
    for space in ctx.generate_design_space():
        for seed in seeds:
            sch = tvm.s_tir.Schedule(mod, seed=seed)
            space.trace.apply_to_schedule(sch, remove_postproc=True,
                                          decision_provider=lambda inst, inputs, attrs, decision: None)
            sch.enter_postproc()
            assert all(p.apply(sch) for p in ctx.space_generator.postprocs)
            yield sch


def test_every_sampled_candidate_of_a_packed_product_builds_with_the_intrinsic():
    """MetaSchedule's own postprocessors vectorise the loops around the intrinsic of some of these samples, which
    then fail to build; with the project's space generator every sample builds, with `vpdpbusd`, and the
    annotation's removal is in its trace (so a database record replays it)."""
    import tvm

    from compiler.tuning.builder import build_candidate
    from schedules import intrinsics, tensorized_loops

    intrinsics.register()
    target = tvm.target.Target(VNNI)
    mod = product_with_epilogue()
    stock_failures = 0
    for sch in sampled_candidates(mod, target, "post-order-apply", range(1, 9)):
        try:
            build_candidate(sch.mod, target, None)
        except Exception as err:  # noqa: BLE001
            assert "Cannot broadcast" in str(err)
            stock_failures += 1
    assert stock_failures, "MetaSchedule's own postprocessors built every sample: this test shows nothing"
    for sch in sampled_candidates(mod, target, tensorized_loops.space_generator(mod, target), range(1, 9)):
        assert tensorized_loops.tensorized(sch) or "vpdpbusd" in sch.mod.script()
        assert "unannotate(" in str(sch.trace) and tensorized_loops.VECTORIZE in str(sch.trace)
        assert "vpdpbusd" in build_candidate(sch.mod, target, None).inspect_source("asm")


@pytest.mark.parametrize("marked", [True, False])
def test_only_a_tensorized_schedule_loses_its_vectorize_annotation(marked):
    import tvm
    from tvm import te

    from schedules import tensorized_loops

    a = te.placeholder((64,), "float32", "a")
    mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((64,), lambda i: a[i] * 2.0, name="double")])})
    sch = tvm.s_tir.Schedule(mod)
    root = sch.get_sblock("root")
    sch.annotate(root, tensorized_loops.VECTORIZE, 64)
    if marked:
        sch.annotate(sch.get_sblock("double"), tensorized_loops.AUTO_TENSORIZE, "dot_16x4_vnni")
    assert tensorized_loops.postproc().apply(sch)
    assert (tensorized_loops.VECTORIZE in sch.get(root).annotations) is not marked
