"""What a measuring machine is: this host's description (uname, CPU model, LLVM cpu, vector features).

Tuning provenance, the database lookup (which CPU is this?) and the bench all describe the host with
this one function; a board describes itself through compiler/device_server.py's `dcac.device_info`.
"""
import platform

VECTOR_FEATURES = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}


def _cpuinfo_field(key: str) -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith(key)), "")
    except OSError:
        return ""


def host_description() -> dict:
    import tvm

    return {"uname": dict(platform.uname()._asdict()), "machine": platform.machine(),
            "cpu_model": _cpuinfo_field("model name") or "unknown",
            "llvm_cpu": str(tvm.target.codegen.llvm_get_system_cpu()),
            "cpu_features": sorted(set(_cpuinfo_field("flags").split()) & VECTOR_FEATURES), "emulated": False}
