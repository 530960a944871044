"""The CPU byte dot-product intrinsics MetaSchedule's rules name, registered cheaply, built with TVM's LLVM, strict;
and the NEON pair sums that int8 products use on Arm CPUs without a dot product (Cortex-A72).

DefaultX86("vnni") and DefaultARM("dotprod") tensorize int8 products with intrinsics registered by name:
`dot_16x4_vnni` (`vpdpbusd`: 16 int32 lanes += 4 uint8 x 4 int8 each) and `dot_4x4_i8i8s32_sdot` (`sdot`: 4
lanes += 4 int8 x 4 int8). Importing `tvm.s_tir.tensor_intrin` registers them together with every CUDA
intrinsic (~30 s here); its two CPU files take ~2 s. `register()` then replaces both, for two faults of
TVM 0.27's versions:
  - its `dot_16x4_vnni` passes `vpdpbusd` int32x16 operands, the signature LLVM had before version 20; the
    LLVM TVM 0.27 links (22) takes bytes, and every tensorized kernel failed to build;
  - their descriptions leave the weight tile's strides free, so MetaSchedule tensorizes a block whose
    weight tile is strided (unpacked weights) and the implementation's one vector load reads the wrong
    bytes. Here the tile's strides are fixed to (4, 1): such a block fails to build instead.

`PAIR_SUMS` is this project's: 16 int8 activations times 16 int8 weights of one output channel, summed into
4 int32 lanes by `smull` (bytes 0-7), `smlal2` (bytes 8-15, added in 16 bits) and `sadalp` (adjacent 16-bit
sums added into the 32-bit lanes): 16 multiply-adds in 3 instructions, where widening each product to 32
bits takes 6. Lane j gets bytes 2j, 2j+1, 8+2j and 9+2j (`pair_byte`); the 16-bit sum of two products cannot
overflow when the weights are in [-127, 127] (compiler/passes/dot_products.py checks it). `LANE_TOTALS` adds
the 4 lanes of each of 4 such accumulators into one vector of 4 totals with three `addp`, where a transpose
through lane moves takes a dozen instructions.
"""
import importlib
import sys
import types
from dataclasses import dataclass

_registered = False


@dataclass(frozen=True)
class DotProduct:
    name: str  # the name MetaSchedule's rules look up
    lanes: int  # int32 accumulators
    activation: str  # the broadcast operand's type
    llvm: str  # the LLVM intrinsic
    operand: str  # the vector type LLVM takes for the two byte operands (broadcast and weight tile)


DOT_PRODUCTS = (
    DotProduct("dot_16x4_vnni", 16, "uint8", "llvm.x86.avx512.vpdpbusd.512", "x64"),
    DotProduct("dot_4x4_i8i8s32_sdot", 4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8", "x16"),
)


PAIR_SUMS, LANE_TOTALS = "neon_pair_sums_i8", "neon_lane_totals_i32"
PAIR_BYTES, PAIR_LANES = 16, 4  # bytes of activation and weight per call, int32 lanes they are summed into


def pair_byte(lane, r):
    """The byte whose product goes into `lane` as its r-th (of 4) term: what smull + smlal2 + sadalp add."""
    return r // 2 * 8 + lane * 2 + r % 2


def register() -> None:
    """Register the x86 and Arm intrinsics once, the two byte dot products replaced by strict ones, and the
    NEON pair sums."""
    global _registered
    if _registered:
        return
    from tvm.s_tir import TensorIntrin

    _import_cpu_intrinsics()
    for dot in DOT_PRODUCTS:
        TensorIntrin.register(dot.name, *_strict(dot), override=True)
    TensorIntrin.register(PAIR_SUMS, _pair_sums(describe=True), _pair_sums(describe=False), override=True)
    TensorIntrin.register(LANE_TOTALS, _lane_totals(describe=True), _lane_totals(describe=False), override=True)
    _registered = True


def _import_cpu_intrinsics() -> None:
    """Import the package's x86 and arm_cpu files under a stub package that is removed again, so a later
    `import tvm.s_tir.tensor_intrin` still runs the real __init__ (which finds these two already imported)."""
    import tvm

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    stub = types.ModuleType(name)
    stub.__path__ = [tvm.s_tir.__path__[0] + "/tensor_intrin"]
    sys.modules[name] = stub
    try:
        importlib.import_module(name + ".x86")
        importlib.import_module(name + ".arm_cpu")
    finally:
        del sys.modules[name]


def _strict(dot: DotProduct):
    """(description, implementation): C[i] += sum_k A[k] * B[i, k] on `dot.lanes` int32 lanes, A's 4 bytes
    broadcast to every lane, B a contiguous tile of lanes x 4 int8 weights."""
    return _dot_function(dot, describe=True), _dot_function(dot, describe=False)


def _dot_function(dot: DotProduct, describe: bool):
    """The description (the loops the intrinsic computes) or the implementation (the one instruction) on the
    same buffers; `describe` is a Python value, so TVMScript keeps one branch."""
    from tvm.script import tirx as T

    lanes, activation = dot.lanes, dot.activation
    byte_vector, weight_vector = f"{activation}{dot.operand}", f"int8{dot.operand}"

    @T.prim_func(s_tir=True)
    def dot_function(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), activation, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1, strides=[4, 1])
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            if describe:
                for i, k in T.grid(lanes, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")
            else:
                broadcast = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], f"{activation}x4"), dtype="int32"),
                                                      lanes), dtype=byte_vector)
                C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(dot.llvm), C.vload([0], dtype=f"int32x{lanes}"), broadcast,
                    B.vload([0, 0], dtype=weight_vector), dtype=f"int32x{lanes}")
    return dot_function


def _neon(name: str, dtype: str, *args):
    """A call of the NEON LLVM intrinsic llvm.aarch64.neon.<name> returning `dtype`."""
    from tvm.script import tirx as T

    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(f"llvm.aarch64.neon.{name}"), *args, dtype=dtype)


def _pair_sums(describe: bool):
    """C[j] += sum_r A[pair_byte(j, r)] * B[pair_byte(j, r)]: the loops, or smull, smlal2 and sadalp."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def pair_sums(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16,), "int8", offset_factor=1)
        B = T.match_buffer(b, (16,), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:16], B[0:16])
            T.writes(C[0:4])
            if describe:
                for j, r in T.grid(4, 4):
                    with T.sblock("update"):
                        vj, vr = T.axis.remap("SR", [j, r])
                        C[vj] = C[vj] + T.cast(A[vr // 2 * 8 + vj * 2 + vr % 2], "int32") * T.cast(
                            B[vr // 2 * 8 + vj * 2 + vr % 2], "int32")
            else:
                # one expression: a name bound here would be a "local" buffer, allocated per call at run time
                C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], "int32x4") + _neon(
                    "saddlp.v4i32.v8i16", "int32x4",
                    _neon("smull.v8i16", "int16x8", T.vectorlow(A.vload([0], "int8x16"), dtype="int8x8"),
                          T.vectorlow(B.vload([0], "int8x16"), dtype="int8x8"))
                    + _neon("smull.v8i16", "int16x8", T.vectorhigh(A.vload([0], "int8x16"), dtype="int8x8"),
                            T.vectorhigh(B.vload([0], "int8x16"), dtype="int8x8")))
    return pair_sums


def _lane_totals(describe: bool):
    """C[n] += sum_j S[n, j] for 4 accumulators S[n] of 4 lanes: the loops, or addp(addp(S0, S1), addp(S2, S3))."""
    from tvm.script import tirx as T

    def addp(a, b):
        return _neon("addp.v4i32", "int32x4", a, b)

    @T.prim_func(s_tir=True)
    def lane_totals(s: T.handle, c: T.handle) -> None:
        S = T.match_buffer(s, (4, 4), "int32", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:4], S[0:4, 0:4])
            T.writes(C[0:4])
            if describe:
                for n, j in T.grid(4, 4):
                    with T.sblock("update"):
                        vn, vj = T.axis.remap("SR", [n, j])
                        C[vn] = C[vn] + S[vn, vj]
            else:
                C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], "int32x4") + addp(
                    addp(S.vload([0, 0], "int32x4"), S.vload([1, 0], "int32x4")),
                    addp(S.vload([2, 0], "int32x4"), S.vload([3, 0], "int32x4")))
    return lane_totals
