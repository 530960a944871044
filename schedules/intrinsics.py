"""The CPU byte dot-product intrinsics MetaSchedule's rules name, registered cheaply, built with TVM's LLVM, strict.

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


def register() -> None:
    """Register the x86 and Arm intrinsics once, the two byte dot products replaced by strict ones."""
    global _registered
    if _registered:
        return
    from tvm.s_tir import TensorIntrin

    _import_cpu_intrinsics()
    for dot in DOT_PRODUCTS:
        TensorIntrin.register(dot.name, *_strict(dot), override=True)
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
