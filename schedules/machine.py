"""The machine model of the default schedules: all a heuristic needs from the target (vector lanes, vector
registers, cores, the unroll limit), and the divisor arithmetic the plans choose tiles with."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import tvm


@dataclass(frozen=True)
class Machine:
    lanes: int  # float32 lanes of one vector register
    vector_registers: int
    cores: int
    is_arm: bool

    @property
    def max_unroll(self) -> int:
        """The largest explicit unroll MetaSchedule's rules offer the target (DefaultARM: 256; x86: 512). A
        register tile is fully unrolled only within it: past it, the reduction loop stays innermost and each
        accumulator becomes one long dependency chain."""
        return 256 if self.is_arm else 512

    @property
    def accumulators(self) -> int:
        """Vector accumulators of a register tile: the registers less a few for operands and broadcasts."""
        return max(4, self.vector_registers - 4)


def machine_of(target) -> Machine:
    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    width = int(tvm.target.codegen.llvm_get_vector_width(target))  # bits; 128 on NEON, 512 on AVX-512
    triple = str(target.attrs.get("mtriple", "") or tvm.target.codegen.llvm_get_system_triple())
    is_arm = triple.startswith("aarch64") or triple.startswith("arm")
    if width <= 0:
        width = 128
    lanes = max(1, width // 32)
    if is_arm:
        registers = 32  # AArch64 NEON: v0-v31
    else:
        features = set()
        try:
            features = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(target)}
        except Exception:  # noqa: BLE001
            pass
        registers = 32 if ("avx512f" in features or width >= 512) else 16
    cores = int(target.attrs.get("num-cores", 1) or 1)
    return Machine(lanes=lanes, vector_registers=registers, cores=cores, is_arm=is_arm)


def divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def largest_divisor_at_most(n: int, cap: int) -> int:
    cap = max(1, cap)
    return max(d for d in divisors(n) if d <= cap)


def smallest_divisor_at_least(n: int, floor: int) -> int:
    cands = [d for d in divisors(n) if d >= floor]
    return min(cands) if cands else n
