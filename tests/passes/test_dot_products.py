"""int8 products in the layout of the CPU's instructions: tensorized with `vpdpbusd` (AVX-512 VNNI), `sdot` (Arm
with the dot product) or NEON pair sums (`smull`, `smlal2`, `sadalp`: the A72), exact."""
import re

import numpy as np
import pytest

from compiler.passes import dot_products, pipeline

VNNI = {"kind": "llvm", "mcpu": "icelake-server", "mtriple": "x86_64-linux-gnu", "num-cores": 2}
AVX512_WITHOUT_VNNI = {"kind": "llvm", "mcpu": "skylake-avx512", "mtriple": "x86_64-linux-gnu", "num-cores": 2}
A72 = {"kind": "llvm", "mcpu": "cortex-a72", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
A76 = {"kind": "llvm", "mcpu": "cortex-a76", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"],
       "num-cores": 4}
INSTRUCTION = {"uint8": "vpdpbusd", "int8": "sdot"}
SPECS = {"vnni": VNNI, "a76": A76, "a72": A72}
SIGNATURE = {"vnni": "vpdpbusd", "a76": "sdot", "a72": "smlal2"}  # an instruction of each target's products


def target_of(spec):
    import tvm

    return tvm.target.Target(spec)


def host_target():
    import tvm

    return target_of({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2})


def test_each_target_takes_the_form_and_activation_type_of_its_instructions():
    assert dot_products.product_form(target_of(VNNI)) == dot_products.FORMS["vnni"]
    assert dot_products.product_form(target_of(A76)) == dot_products.FORMS["sdot"]
    assert dot_products.product_form(target_of(A72)) == dot_products.FORMS["pair_sums"]
    assert [dot_products.activation_type(target_of(spec)) for spec in (VNNI, A76, A72)] == ["uint8", "int8", "int8"]
    assert dot_products.activation_type(target_of(AVX512_WITHOUT_VNNI)) is None
    assert dot_products.passes(target_of(AVX512_WITHOUT_VNNI)) == []


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
    assert result.ok and result.note.startswith(("tensorized", "pair sums")), result
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


def product_tasks(model, target, block="dot_product"):
    from tvm.s_tir import meta_schedule as ms

    mod = pipeline.tunable_module(pipeline.import_onnx(model), target, "stock", None, "prepack")
    return mod, [t for t in ms.relax_integration.extract_tasks(mod, target) if block in t.task_name]


@pytest.mark.parametrize("name", ["vnni", "a76", "a72"])
def test_an_ungrouped_models_convolutions_become_nhwc_tensorized_products(name, tmp_path):
    """MobileNetV2's blocks (1x1 and depthwise convolutions): NHWC, every 1x1 convolution and the classifier a
    product kernel in the target's form, each tensorized with the target's instruction."""
    import onnx_models
    from compiler.frontend import onnx_model, quantize

    target = target_of(SPECS[name])
    form = dot_products.product_form(target)
    path = tmp_path / "mobilenet_mini-int8.onnx"
    quantize.quantize(onnx_model.load(onnx_models.export("mobilenet_mini", tmp_path / "m.onnx")), path,
                      form.activation)
    model = onnx_model.load(path)
    mod, tasks = product_tasks(model, target, form.name)
    pointwise = sum(1 for node in model.proto.graph.node if node.op_type == "Conv"
                    and next(a.ints for a in node.attribute if a.name == "kernel_shape") == [1, 1])
    assert "nhwc" in mod.script(show_meta=False)
    assert len(tasks) >= min(pointwise, 2), [t.task_name for t in tasks]
    for task in tasks:
        assert SIGNATURE[name] in scheduled_library(task.dispatched[0], target).inspect_source("asm")


def test_a_grouped_convolution_keeps_nchw(kernel_classes_qdq):
    """The kernel-classes model has a grouped 3x3 convolution: its convolutions stay NCHW (NHWC grouped
    convolutions are slower); its three 1x1 convolutions and the classifier still become products, each with
    its requantization (or bias) fused in, tensorized (int8 activations: on the A76 and on the A72). With VNNI
    and on the A72 the grouped convolution becomes a product of its windows too; the depthwise one stays."""
    model, activation = kernel_classes_qdq
    for name in ("vnni",) if activation == "uint8" else ("a76", "a72"):
        target = target_of(SPECS[name])
        mod, tasks = product_tasks(model, target, dot_products.product_form(target).name)
        assert "nhwc" not in mod.script(show_meta=False)
        windowed = dot_products.product_form(target).windows
        assert len(tasks) == 4 + windowed and all("_add" in t.task_name for t in tasks), \
            [t.task_name for t in tasks]
        for task in tasks:
            assert SIGNATURE[name] in scheduled_library(task.dispatched[0], target).inspect_source("asm")


def pair_product_module(rows: int, depth: int, channels: int):
    """The A72 form as a PrimFunc: int8 [1, rows, depth] x int8 [channels, depth] -> int32 [1, rows, channels]."""
    import tvm
    from tvm import te

    a = te.placeholder((1, rows, depth), "int8", "a")
    w = te.placeholder((channels, depth), "int8", "w")
    return tvm.IRModule({"main": te.create_prim_func([a, w, dot_products._pair_product(a, w)])})


def test_the_pair_sums_keep_a_register_tile_of_accumulators():
    """14-pixel rows of 176 channels: XNNPACK's A72 tile (2 rows x 8 channels), accumulators, operands and
    temporaries within NEON's 32 registers; the inner loop is three instructions per 16 multiply-adds plus
    the loads, and every 4 accumulators are added up with addp."""
    from schedules import pair_sums

    assert pair_sums.register_tile(14, 176, 32) == (2, 8)
    for rows, channels in ((196, 48), (49, 84), (7, 1000), (56, 24)):
        r, n = pair_sums.register_tile(rows, channels, 32)
        assert rows % r == 0 and channels % n == 0 and r * n + r + n + pair_sums.TEMPORARIES <= 32
    asm = scheduled_library(pair_product_module(14, 176, 64), target_of(A72)).inspect_source("asm")
    counts = {op: len(re.findall(rf"\t{op}\t", asm)) for op in ("smull", "smlal2", "sadalp", "addp")}
    assert counts["smull"] >= 16 and counts["smlal2"] >= 16 and counts["sadalp"] >= 16 and counts["addp"] >= 12, counts


def test_weights_of_minus_128_keep_the_widened_product():
    """Two products of -128 x -128 overflow the 16-bit sum: such a weight keeps integer_kernels' product."""
    from tvm import relax

    def module(weight):
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, 7, 7, 32), "int8"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit_output(relax.op.nn.conv2d(x, relax.const(weight), data_layout="NHWC", kernel_layout="OHWI",
                                                      out_dtype="int32"))
            bb.emit_func_output(y)
        return bb.get()

    form = dot_products.FORMS["pair_sums"]
    weight = np.ones((16, 1, 1, 32), "int8")
    assert dot_products.rewrite(module(weight), form)[1] == 1
    weight[3, 0, 0, 5] = -128
    assert dot_products.rewrite(module(weight), form)[1] == 0


@pytest.mark.emulated
def test_the_pair_sums_are_exact_on_the_emulated_pi(tmp_path):
    """The A72 product against numpy's int32 product on the emulated Pi, at the extremes the 16-bit sums must
    hold (activations of -128 against weights of -127 and 127), K padded as the pass pads it."""
    import tvm

    from compiler import targets
    from compiler.artifact.linker import find_linker
    from compiler.device.session import open_session

    rows, depth, channels = 28, 48, 24
    library = scheduled_library(pair_product_module(rows, depth, channels), target_of(A72))
    library.export_library(str(tmp_path / "pairs.so"), fcompile=find_linker("aarch64-linux-gnu"))
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (1, rows, depth)).astype("int8")
    w = rng.integers(-127, 128, (channels, depth)).astype("int8")
    a[0, :2] = -128
    w[0], w[1] = -127, 127
    with open_session(targets.load("rpi4")) as session:
        session.upload(str(tmp_path / "pairs.so"))
        device = session.cpu()
        out = tvm.runtime.tensor(np.zeros((1, rows, channels), "int32"), device)
        session.load_module("pairs.so")["main"](tvm.runtime.tensor(a, device), tvm.runtime.tensor(w, device), out)
        got = out.numpy()
    np.testing.assert_array_equal(got, a.astype("int32") @ w.astype("int32").T)


def test_a_batch_of_two_keeps_its_shape_through_the_rows():
    """A model that keeps NCHW (it has a grouped convolution): its 1x1 convolution on a batch of 2 runs on the
    rows view, and back in NCHW the result is [2, C, H, W] (the batch is not a group count)."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 32, 7, 7), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            product = bb.emit(relax.op.nn.conv2d(x, relax.const(np.ones((16, 32, 1, 1), "int8")), out_dtype="int32"))
            shifted = bb.emit(relax.op.add(product, relax.const(np.ones((1, 16, 1, 1), "int32"))))
            grouped = bb.emit(relax.op.nn.conv2d(x, relax.const(np.ones((16, 16, 1, 1), "int8")), groups=2,
                                                 out_dtype="int32"))
            y = bb.emit_output(relax.op.add(shifted, grouped))
        bb.emit_func_output(y)
    for name in ("pair_sums", "sdot"):
        mod, rewritten = dot_products.rewrite(bb.get(), dot_products.FORMS[name])
        assert rewritten == 1 and "permute_dims" in mod.script(show_meta=False)
        assert [int(d) for d in mod["main"].ret_ty.shape] == [2, 16, 7, 7]


@pytest.mark.parametrize("form", ["pair_sums", "vnni"])
def test_a_windowed_convolution_reads_its_producers_rows_padded(form):
    """Grouped 3x3 after grouped 3x3 (AttendNeXt's condenser embeddings), then a strided 1x1: the second
    convolution's windows are copied from the first one's rows padded as rows, with no transpose to NCHW
    between, and all three give the integer convolutions' sums exactly (built for this CPU: the windows'
    indexing is what is checked). VNNI pads each group's 8 or 4 output channels to a tile of 16 and slices
    them back."""
    import tvm
    from tvm import relax

    activation = dot_products.FORMS[form].activation
    low, high = (-128, 127) if activation == "int8" else (0, 255)
    rng = np.random.default_rng(5)
    first = rng.integers(-127, 128, (16, 16, 3, 3)).astype("int8")  # 2 groups: rows [2, H, W, 8]
    second = rng.integers(-127, 128, (12, 4, 3, 3)).astype("int8")  # 4 groups of 4 channels across those rows
    third = rng.integers(-127, 128, (20, 32, 1, 1)).astype("int8")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32, 9, 9), activation))
    with bb.function("main", [x]):
        with bb.dataflow():
            padded = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 1, 1, 1, 1], pad_value=3.0))
            acc = bb.emit(relax.op.nn.conv2d(padded, relax.const(first), groups=2, out_dtype="int32"))
            clipped = bb.emit(relax.op.clip(relax.op.add(acc, relax.const(np.int32(7))), low, high))
            q = bb.emit(relax.op.astype(clipped, activation))
            q_padded = bb.emit(relax.op.nn.pad(q, [0, 0, 0, 0, 1, 1, 1, 1], pad_value=5.0))
            second_acc = bb.emit(relax.op.nn.conv2d(q_padded, relax.const(second), strides=[2, 2], groups=4,
                                                    out_dtype="int32"))
            y = bb.emit_output(relax.op.nn.conv2d(x, relax.const(third), strides=[2, 2], out_dtype="int32"))
        bb.emit_func_output(relax.Tuple([second_acc, y]))
    original = bb.get()
    mod, rewritten = dot_products.rewrite(original, dot_products.FORMS[form])
    script = mod.script(show_meta=False)
    assert rewritten == 3, script
    assert "padded_rows" in script and script.count("R.permute_dims") == 2, script  # the outputs' only

    def run(module):
        machine = tvm.runtime.vm.VirtualMachine(tvm.compile(module, target=tvm.target.Target({"kind": "llvm"})),
                                                tvm.cpu())
        return [out.numpy() for out in machine["main"](tvm.runtime.tensor(data))]
    data = rng.integers(low, high + 1, (1, 32, 9, 9)).astype(activation)
    for got, want in zip(run(mod), run(original)):
        np.testing.assert_array_equal(got, want)
