"""The CPU tensor intrinsics MetaSchedule's rules name, registered cheaply and made to build with TVM's LLVM.

DefaultX86("vnni") and DefaultARM rules tensorize int8 products with intrinsics registered by name
(`dot_16x4_vnni`, the NEON dot products). Importing `tvm.s_tir.tensor_intrin` registers them together with
every CUDA intrinsic (~30 s here); its two CPU files take ~2 s. TVM 0.27's `dot_16x4_vnni` passes
`vpdpbusd` its operands as int32x16, the signature LLVM had before version 20; the LLVM TVM 0.27 links
takes <64 x i8>, and the module fails to build. `register()` replaces that implementation with one that
passes bytes (same description, so the same blocks match).
"""
import importlib
import sys
import types

VNNI_DOT = "dot_16x4_vnni"
_registered = False


def register() -> None:
    """Register the x86 and Arm intrinsics once, with a `dot_16x4_vnni` that builds on LLVM >= 20."""
    global _registered
    if _registered:
        return
    import tvm
    from tvm.s_tir import TensorIntrin

    _import_cpu_intrinsics()
    desc, impl = _vnni_bytes()
    TensorIntrin.register(VNNI_DOT, desc, impl, override=True)
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


def _vnni_bytes():
    """(description, implementation) of `vpdpbusd` on 16 int32 accumulators: 4 uint8 values broadcast to every
    lane, a 16 x 4 tile of int8 weights. The description fixes the tile's strides to (4, 1): TVM's own
    leaves them free, so a block reading a strided weight tile matched it and the implementation's
    64-byte load read the wrong bytes."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1, strides=[4, 1])
        C = T.match_buffer(c, (16,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i, k in T.grid(16, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1, strides=[4, 1])
        C = T.match_buffer(c, (16,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            broadcast = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                                      dtype="uint8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"), broadcast, B.vload([0, 0], dtype="int8x64"), dtype="int32x16")
    return desc, impl
