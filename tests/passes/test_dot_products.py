"""int8 products in the dot-product layout: on AVX-512 VNNI they are tensorized with `vpdpbusd` and exact."""
import numpy as np

from compiler.passes import dot_products, pipeline

VNNI = {"kind": "llvm", "mcpu": "icelake-server", "mtriple": "x86_64-linux-gnu", "num-cores": 2}
AVX512_WITHOUT_VNNI = {"kind": "llvm", "mcpu": "skylake-avx512", "mtriple": "x86_64-linux-gnu", "num-cores": 2}
A72 = {"kind": "llvm", "mcpu": "cortex-a72", "mtriple": "aarch64-linux-gnu", "num-cores": 4}


def host_has_vnni() -> bool:
    import tvm

    return dot_products.dot_product_target(tvm.target.Target({"kind": "llvm", "mcpu":
                                                              tvm.target.codegen.llvm_get_system_cpu()}))


def test_only_targets_with_vnni_take_the_pass():
    import tvm

    assert dot_products.dot_product_target(tvm.target.Target(VNNI))
    assert not dot_products.dot_product_target(tvm.target.Target(AVX512_WITHOUT_VNNI))
    assert not dot_products.dot_product_target(tvm.target.Target(A72))
    assert dot_products.passes(tvm.target.Target(A72)) == []


def packed_product_module(rows: int, depth: int, channels: int):
    """The pass's product as a PrimFunc: uint8 [rows, depth] x packed int8 weights -> int32 [rows, channels]."""
    import tvm
    from tvm import te

    a = te.placeholder((rows, depth), "uint8", "a")
    b = te.placeholder((channels // 16, depth // 4, 16, 4), "int8", "b")
    c = dot_products._nt_product(a, b)
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


def test_the_product_is_tensorized_with_vpdpbusd_and_exact():
    """Scheduled by the default schedules: one tensorized kernel whose assembly has vpdpbusd; run on this CPU
    when it has VNNI, and equal to numpy's int32 product (weights packed by the pass's own packing)."""
    import tvm

    from schedules import defaults

    target = tvm.target.Target(VNNI)
    if host_has_vnni():
        target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2})
    rows, depth, channels = 49, 68, 48
    mod = packed_product_module(rows, depth, channels)
    sch, result = defaults.schedule_task(mod, target, defaults.machine_of(target), defaults.Options())
    assert result.ok and result.note.startswith("tensorized"), result
    with target, tvm.transform.PassContext(opt_level=3):
        library = tvm.tirx.build(sch.mod, target=target)
    assert "vpdpbusd" in library.inspect_source("asm")
    if not host_has_vnni():
        return  # compiled for a VNNI CPU; this one cannot run it
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (rows, depth)).astype("uint8")
    w = rng.integers(-127, 128, (channels, depth)).astype("int8")
    out = tvm.runtime.tensor(np.zeros((rows, channels), "int32"))
    library["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(dot_products._packed(w)), out)
    np.testing.assert_array_equal(out.numpy(), a.astype("int32") @ w.astype("int32").T)


def test_packing_pads_to_whole_tiles():
    w = np.arange(20 * 6, dtype="int8").reshape(20, 6)
    packed = dot_products._packed(w)
    assert packed.shape == (2, 2, 16, 4)
    # tile (n // 16, k // 4), lane n % 16, byte k % 4; zeros beyond the weight
    assert packed[1, 1, 3, 1] == w[19, 5] and packed[1, 1, 4, 0] == 0 and packed[0, 1, 0, 2] == 0


def test_a_qdq_models_products_become_tensorized_kernels(kernel_classes_qdq):
    """uint8 activations (x86's format): the 1x1 convolutions and the classifier become dot_product kernels,
    each tensorized with vpdpbusd by the default schedules; int8 activations keep integer_kernels' products."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from schedules import defaults

    model, activation = kernel_classes_qdq
    target = tvm.target.Target(VNNI)
    mod = pipeline.tunable_module(pipeline.import_onnx(model), target, "stock", None, "prepack")
    tasks = [t for t in ms.relax_integration.extract_tasks(mod, target) if "dot_product" in t.task_name]
    if activation == "int8":
        assert tasks == []
        return
    assert len(tasks) >= 2, [t.task_name for t in tasks]
    for task in tasks:
        sch, result = defaults.schedule_task(task.dispatched[0], target, defaults.machine_of(target),
                                             defaults.Options(), task.task_name)
        assert result.note.startswith("tensorized"), result
        with target, tvm.transform.PassContext(opt_level=3):
            assert "vpdpbusd" in tvm.tirx.build(sch.mod, target=target).inspect_source("asm")
