"""int8 products in the dot-product layout: tensorized with `vpdpbusd` (AVX-512 VNNI) or `sdot` (Arm), exact."""
import numpy as np
import pytest

from compiler.passes import dot_products, pipeline

VNNI = {"kind": "llvm", "mcpu": "icelake-server", "mtriple": "x86_64-linux-gnu", "num-cores": 2}
AVX512_WITHOUT_VNNI = {"kind": "llvm", "mcpu": "skylake-avx512", "mtriple": "x86_64-linux-gnu", "num-cores": 2}
A72 = {"kind": "llvm", "mcpu": "cortex-a72", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
A76 = {"kind": "llvm", "mcpu": "cortex-a76", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"],
       "num-cores": 4}
INSTRUCTION = {"uint8": "vpdpbusd", "int8": "sdot"}


def target_of(spec):
    import tvm

    return tvm.target.Target(spec)


def host_target():
    import tvm

    return target_of({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2})


def test_each_target_takes_the_activation_type_of_its_instruction():
    assert dot_products.activation_type(target_of(VNNI)) == "uint8"
    assert dot_products.activation_type(target_of(A76)) == "int8"
    assert dot_products.activation_type(target_of(AVX512_WITHOUT_VNNI)) is None
    assert dot_products.activation_type(target_of(A72)) is None
    assert dot_products.passes(target_of(A72)) == []


def packed_product_module(activation: str, rows: int, depth: int, channels: int):
    """The pass's product as a PrimFunc: 8-bit [rows, depth] x packed int8 weights -> int32 [rows, channels]."""
    import tvm
    from tvm import te

    a = te.placeholder((rows, depth), activation, "a")
    b = te.placeholder((channels // 16, depth // 4, 16, 4), "int8", "b")
    return tvm.IRModule({"main": te.create_prim_func([a, b, dot_products._nt_product(a, b)])})


def scheduled_library(mod, target):
    import tvm

    from schedules import defaults

    sch, result = defaults.schedule_task(mod, target, defaults.machine_of(target), defaults.Options())
    assert result.ok and result.note.startswith("tensorized"), result
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.tirx.build(sch.mod, target=target)


@pytest.mark.parametrize("spec", [VNNI, A76], ids=["vnni", "a76"])
def test_the_product_is_tensorized_with_the_dot_product_instruction(spec):
    activation = dot_products.activation_type(target_of(spec))
    library = scheduled_library(packed_product_module(activation, 49, 68, 48), target_of(spec))
    assert INSTRUCTION[activation] in library.inspect_source("asm")


def test_the_tensorized_product_is_exact_on_this_cpu():
    """Run where the host has VNNI (the A76's sdot runs in the emulated Pi: tests/test_e2e.py): numpy's int32
    product, the weights packed by the pass's own packing."""
    import tvm

    if dot_products.activation_type(host_target()) != "uint8":
        pytest.skip("this CPU has no AVX-512 VNNI")
    rows, depth, channels = 49, 68, 48
    library = scheduled_library(packed_product_module("uint8", rows, depth, channels), host_target())
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (rows, depth)).astype("uint8")
    w = rng.integers(-127, 128, (channels, depth)).astype("int8")
    out = tvm.runtime.tensor(np.zeros((rows, channels), "int32"))
    library["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(dot_products._packed(w)), out)
    np.testing.assert_array_equal(out.numpy(), a.astype("int32") @ w.astype("int32").T)


@pytest.mark.parametrize("spec", [VNNI, A76], ids=["vnni", "a76"])
def test_an_unpacked_product_is_not_tensorized(spec):
    """The same product on [N, K] weights: the intrinsic's one vector load would read the wrong bytes. The
    default schedules leave it to the plain plans, and the strict intrinsic refuses to build it when a
    tuning candidate tensorizes it."""
    import tvm
    from tvm import te
    from schedules import defaults

    target = target_of(spec)
    a = te.placeholder((49, 64), dot_products.activation_type(target), "a")
    b = te.placeholder((32, 64), "int8", "b")
    k = te.reduce_axis((0, 64), "k")
    c = te.compute((49, 32), lambda m, n: te.sum(a[m, k].astype("int32") * b[n, k].astype("int32"), axis=k))
    mod = tvm.IRModule({"main": te.create_prim_func([a, b, c])})
    _, result = defaults.schedule_task(mod, target, defaults.machine_of(target), defaults.Options())
    assert result.ok and not result.note.startswith("tensorized"), result
    ctx = defaults._context(mod, target, "unpacked")
    tensorized = [space for space in ctx.generate_design_space() if defaults._tensorized(space)]
    assert tensorized  # MetaSchedule's rule does offer the intrinsic here
    sch, refused = defaults.replay_tensorized(mod, tensorized[0], list(ctx.space_generator.postprocs))
    assert refused is None, refused
    with pytest.raises(Exception, match="strides"), target, tvm.transform.PassContext(opt_level=3):
        tvm.tirx.build(sch.mod, target=target)


def test_packing_pads_to_whole_tiles():
    w = np.arange(20 * 6, dtype="int8").reshape(20, 6)
    packed = dot_products._packed(w)
    assert packed.shape == (2, 2, 16, 4)
    # tile (n // 16, k // 4), lane n % 16, byte k % 4; zeros beyond the weight
    assert packed[1, 1, 3, 1] == w[19, 5] and packed[1, 1, 4, 0] == 0 and packed[0, 1, 0, 2] == 0


def product_tasks(model, target):
    from tvm.s_tir import meta_schedule as ms

    mod = pipeline.tunable_module(pipeline.import_onnx(model), target, "stock", None, "prepack")
    return mod, [t for t in ms.relax_integration.extract_tasks(mod, target) if "dot_product" in t.task_name]


@pytest.mark.parametrize("activation", ["uint8", "int8"])
def test_an_ungrouped_models_convolutions_become_nhwc_tensorized_products(activation, tmp_path):
    """MobileNetV2's blocks (1x1 and depthwise convolutions): NHWC, every 1x1 convolution and the classifier a
    dot_product kernel on the target whose instruction takes the activation type, each tensorized."""
    import onnx_models
    from compiler.frontend import onnx_model, quantize

    path = tmp_path / "mobilenet_mini-int8.onnx"
    quantize.quantize(onnx_model.load(onnx_models.export("mobilenet_mini", tmp_path / "m.onnx")), path, activation)
    model = onnx_model.load(path)
    target = target_of(VNNI if activation == "uint8" else A76)
    mod, tasks = product_tasks(model, target)
    pointwise = sum(1 for node in model.proto.graph.node if node.op_type == "Conv"
                    and next(a.ints for a in node.attribute if a.name == "kernel_shape") == [1, 1])
    assert "nhwc" in mod.script(show_meta=False)
    assert len(tasks) >= min(pointwise, 2), [t.task_name for t in tasks]
    for task in tasks:
        assert INSTRUCTION[activation] in scheduled_library(task.dispatched[0], target).inspect_source("asm")


def test_a_grouped_convolution_keeps_nchw(kernel_classes_qdq):
    """The kernel-classes model has a grouped 3x3 convolution: its convolutions stay NCHW (NHWC grouped
    convolutions are slower); its three 1x1 convolutions and the classifier still become products, each with
    its requantization (or bias) fused in, tensorized."""
    model, activation = kernel_classes_qdq
    target = target_of(VNNI if activation == "uint8" else A76)
    mod, tasks = product_tasks(model, target)
    assert "nhwc" not in mod.script(show_meta=False)
    assert len(tasks) == 4 and all("_add" in t.task_name for t in tasks), [t.task_name for t in tasks]
    for task in tasks:
        assert INSTRUCTION[activation] in scheduled_library(task.dispatched[0], target).inspect_source("asm")
