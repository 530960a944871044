"""The cores the cycle estimate knows: for each, how qemu emulates it, which llvm-mca scheduling model stands in
for it, the simulated caches (geometry) and the published latencies that turn their misses into cycles.

Data, not code. Every figure is published for the core (sources in docs/cycle-estimate.md) and never fitted
to the validation against measured time. Two cache levels are simulated (qemu's cache plugin), so an L2 miss
goes to the next level: DRAM on the Cortex-A72 (the Pi 4 has no L3), the L3 elsewhere.

A miss costs what keeps the core waiting for its line when misses overlap, as they do in the streaming loops of
a network's kernels: the latency beyond the level above divided by the misses the core keeps in flight
(Little's law), and at least the line's transfer time at the level's sustained bandwidth. A figure no source
gives is None and drops out; with neither, the miss costs its whole latency.
"""
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Core:
    name: str            # the preset's mcpu (or the host's LLVM cpu name)
    arch: str            # "aarch64" or "x86_64": which qemu-user runs it
    qemu_cpu: str        # qemu's -cpu
    mca_triple: str
    mca_cpu: str         # llvm-mca -mcpu: the best scheduling model LLVM 19 has for this core
    mca_model: str       # what that model is, in words
    caches: dict         # qemu cache plugin options (bytes, ways, line bytes)
    l1_latency: int      # cycles: an L1D hit, as llvm-mca's model already charges every load
    l2_latency: int      # cycles: an L1 miss that hits L2
    next_latency: int    # cycles: an L2 miss (L3 hit, or DRAM where there is no L3)
    next_level: str      # "L3" or "DRAM"
    l1_in_flight: Optional[int] = None          # L1D misses the core keeps outstanding
    l2_in_flight: Optional[int] = None          # L2 misses outstanding to the next level
    l2_bytes_per_cycle: Optional[float] = None  # sustained L2 -> L1 bandwidth, one core
    next_bytes_per_cycle: Optional[float] = None  # sustained next level -> L2 bandwidth, one core
    line_bytes: int = 64

    def l1_miss_cycles(self) -> float:
        return _miss_cost(self.l2_latency - self.l1_latency, self.l1_in_flight, self.l2_bytes_per_cycle,
                          self.line_bytes)

    def l2_miss_cycles(self) -> float:
        return _miss_cost(self.next_latency - self.l2_latency, self.l2_in_flight, self.next_bytes_per_cycle,
                          self.line_bytes)


def _miss_cost(latency, in_flight, bytes_per_cycle, line_bytes) -> float:
    bounds = [latency / in_flight] if in_flight else []
    bounds += [line_bytes / bytes_per_cycle] if bytes_per_cycle else []
    return max(bounds) if bounds else float(latency)


CORES = {
    "cortex-a72": Core(
        name="cortex-a72", arch="aarch64", qemu_cpu="cortex-a72", mca_triple="aarch64-linux-gnu",
        mca_cpu="cortex-a72", mca_model="LLVM's Cortex-A57 model (LLVM has no A72 model of its own)",
        caches=dict(dcachesize=32768, dassoc=2, dblksize=64, icachesize=49152, iassoc=3, iblksize=64,
                    l2="on", l2cachesize=1048576, l2assoc=16, l2blksize=64),
        l1_latency=4, l2_latency=21, next_latency=166, next_level="DRAM", l1_in_flight=6, l2_in_flight=6,
        l2_bytes_per_cycle=8),
    "cortex-a76": Core(
        name="cortex-a76", arch="aarch64", qemu_cpu="cortex-a76", mca_triple="aarch64-linux-gnu",
        mca_cpu="neoverse-n1", mca_model="LLVM's Neoverse N1 model (the A76's server sibling; LLVM maps "
        "-mcpu=cortex-a76 to its Cortex-A57 model)",
        caches=dict(dcachesize=65536, dassoc=4, dblksize=64, icachesize=65536, iassoc=4, iblksize=64,
                    l2="on", l2cachesize=524288, l2assoc=8, l2blksize=64),
        l1_latency=4, l2_latency=9, next_latency=31, next_level="L3", l2_in_flight=46, next_bytes_per_cycle=64),
    "znver4": Core(
        name="znver4", arch="x86_64", qemu_cpu="max", mca_triple="x86_64-linux-gnu", mca_cpu="znver4",
        mca_model="LLVM's Zen 4 model",
        caches=dict(dcachesize=32768, dassoc=8, dblksize=64, icachesize=32768, iassoc=8, iblksize=64,
                    l2="on", l2cachesize=1048576, l2assoc=8, l2blksize=64),
        l1_latency=4, l2_latency=14, next_latency=50, next_level="L3", l2_bytes_per_cycle=32,
        next_bytes_per_cycle=27),
}


def lookup(name: str) -> Core:
    from compiler.errors import UserError

    if name not in CORES:
        raise UserError(f"the cycle estimate has no model of CPU '{name}': it knows {', '.join(sorted(CORES))}")
    return CORES[name]
